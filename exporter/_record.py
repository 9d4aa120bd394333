"""A small base for the project's value classes: settings sections, alerts, the runtime handle.

It stands in for ``dataclasses``, whose import loads ``inspect``, ``ast``, ``dis`` and
``tokenize`` (about 1 MiB resident), for a package that must stay within 5 MB with every
feature off. The fields of a :class:`Record` subclass are its own class annotations, in order;
a class attribute is a field's default, :class:`field` gives a default factory or keeps a field
out of ``==`` and ``repr``. Records get ``__init__`` (positional or keyword arguments), an
optional ``__post_init__`` hook, ``__repr__`` and ``__eq__`` over the fields; ``frozen=True``
makes instances immutable and hashable::

    class Point(Record, frozen=True):
        x: int
        y: int = 0
        tags: list[str] = field(factory=list, compare=False)
"""
from __future__ import annotations

from collections.abc import Callable

_MISSING = object()


class field:  # noqa: N801 - named after the dataclasses.field it stands in for
    """A field's default factory, and whether it takes part in ``==`` and ``repr``."""

    __slots__ = ("factory", "compare", "repr")

    def __init__(self, *, factory: Callable[[], object] | None = None, compare: bool = True,
                 repr: bool = True) -> None:  # noqa: A002 - the dataclasses.field name
        self.factory = factory
        self.compare = compare
        self.repr = repr


class Record:
    """Base of value classes; see the module docstring."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}
    _factories: dict[str, Callable[[], object]] = {}
    _compared: tuple[str, ...] = ()
    _shown: tuple[str, ...] = ()

    def __init_subclass__(cls, *, frozen: bool = False, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults: dict[str, object] = {}
        factories: dict[str, Callable[[], object]] = {}
        hidden, uncompared = set(), set()
        for name in names:
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, field):
                delattr(cls, name)
                if value.factory is not None:
                    factories[name] = value.factory
                if not value.repr:
                    hidden.add(name)
                if not value.compare:
                    uncompared.add(name)
            elif value is not _MISSING:
                defaults[name] = value
            elif defaults or factories:
                raise TypeError(f"{cls.__name__}: field {name!r} without a default "
                                "follows one with")
        cls._fields = names
        cls._defaults = defaults
        cls._factories = factories
        cls._compared = tuple(name for name in names if name not in uncompared)
        cls._shown = tuple(name for name in names if name not in hidden)
        if frozen:
            cls.__setattr__ = _refuse_change  # type: ignore[method-assign, assignment]
            cls.__delattr__ = _refuse_change  # type: ignore[method-assign, assignment]
            cls.__hash__ = _hash  # type: ignore[method-assign, assignment]

    def __init__(self, *args: object, **kwargs: object) -> None:
        cls = type(self)
        if len(args) > len(cls._fields):
            raise TypeError(f"{cls.__name__}() takes {len(cls._fields)} arguments, got {len(args)}")
        values = dict(zip(cls._fields, args))
        for name, value in kwargs.items():
            if name in values:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            if name not in cls._fields:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
            values[name] = value
        for name in cls._fields:
            if name in values:
                value = values[name]
            elif name in cls._defaults:
                value = cls._defaults[name]
            elif name in cls._factories:
                value = cls._factories[name]()
            else:
                raise TypeError(f"{cls.__name__}() missing required argument {name!r}")
            object.__setattr__(self, name, value)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _asdict(self) -> dict[str, object]:
        """The fields and their values (not copied), in order."""
        return {name: getattr(self, name) for name in self._fields}

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _compared_values(self) == _compared_values(other)


def _compared_values(record: Record) -> tuple[object, ...]:
    return tuple(getattr(record, name) for name in record._compared)


def _refuse_change(self: Record, name: str, *value: object) -> None:
    raise AttributeError(f"cannot change field {name!r} of a frozen {type(self).__name__}")


def _hash(self: Record) -> int:
    return hash(_compared_values(self))
