"""The value-class base that stands in for dataclasses."""
from __future__ import annotations

import pytest

from exporter._record import Record, field


class Point(Record, frozen=True):
    x: int
    y: int = 0
    note: str = field(factory=str, compare=False, repr=False)


class Counter(Record):
    name: str
    seen: list[int] = field(factory=list)
    total: int = 0

    def __post_init__(self) -> None:
        self.total = sum(self.seen)


def test_positional_keyword_defaults_and_factories():
    assert (Point(1).x, Point(1).y, Point(1).note) == (1, 0, "")
    assert Point(1, 2) == Point(x=1, y=2) == Point(y=2, x=1)
    first, second = Counter("a"), Counter("b")
    first.seen.append(1)
    assert second.seen == []  # one list per instance
    assert Counter("c", [2, 3]).total == 5  # __post_init__ ran


def test_equality_repr_and_hash_follow_the_field_options():
    assert Point(1, 2, "left") == Point(1, 2, "right")  # note is not compared
    assert Point(1, 2) != Point(2, 1)
    assert Point(1) != (1, 0)
    assert repr(Point(1, 2, "hidden")) == "Point(x=1, y=2)"
    assert repr(Counter("a", [1])) == "Counter(name='a', seen=[1], total=1)"
    assert hash(Point(1, 2, "a")) == hash(Point(1, 2, "b"))
    with pytest.raises(TypeError):
        hash(Counter("a"))  # mutable records are unhashable, like dataclasses


def test_frozen_records_refuse_changes_mutable_ones_take_them():
    point = Point(1)
    with pytest.raises(AttributeError, match="'x'"):
        point.x = 2
    with pytest.raises(AttributeError):
        del point.y
    counter = Counter("a")
    counter.total = 7
    assert counter.total == 7
    assert counter._asdict() == {"name": "a", "seen": [], "total": 7}


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {}, "missing required argument 'x'"),
    ((1, 2, "n", 4), {}, "takes 3 arguments"),
    ((1,), {"x": 2}, "multiple values for argument 'x'"),
    ((1,), {"z": 2}, "unexpected keyword argument 'z'"),
])
def test_wrong_arguments_are_type_errors(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="'b' without a default"):
        class Bad(Record):
            a: int = 0
            b: int
