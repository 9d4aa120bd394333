"""The traceback text of failed spans: the stdlib's, without the position markers."""
from __future__ import annotations

import re
import traceback

import pytest

from exporter._stacktrace import stacktrace

_MARKERS = re.compile(r"^ *[~^]+ *\n", re.MULTILINE)  # the lines under the failing expression


def _stdlib(exception: BaseException) -> str:
    return _MARKERS.sub("", "".join(traceback.format_exception(exception)))


def _raised(make):
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 - the exception under test, whatever it is
        return exc
    raise AssertionError("nothing raised")


def _plain():
    values = {"a": 1}
    return values["b"] + values["a"]  # a line with markers in 3.11


def _caused():
    try:
        _plain()
    except KeyError as exc:
        raise ConnectionError("lost") from exc


def _during():
    try:
        _plain()
    except KeyError:
        raise ValueError("while handling")


def _suppressed():
    try:
        _plain()
    except KeyError:
        raise ValueError("context suppressed") from None


def _noted():
    error = OSError("disk")
    error.add_note("while writing the spool")
    raise error


def _recursive(depth=0):
    return _recursive(depth + 1) if depth < 50 else 1 / 0


def _group():
    raise ExceptionGroup("two", [ValueError("a"), KeyError("b")])


@pytest.mark.parametrize("make", [_plain, _caused, _during, _suppressed, _noted, _recursive, _group])
def test_it_is_the_stdlibs_text_without_the_markers(make):
    exception = _raised(make)
    assert stacktrace(exception) == _stdlib(exception)


def test_the_markers_are_gone_and_the_source_lines_kept():
    text = stacktrace(_raised(_plain))
    assert "^" not in text and 'return values["b"] + values["a"]' in text
    assert text.startswith("Traceback (most recent call last):\n") and text.endswith("KeyError: 'b'\n")


def test_an_exception_never_raised_is_its_line_only():
    assert stacktrace(ValueError("bad")) == "ValueError: bad\n"


def test_a_cycle_in_the_chain_ends():
    first, second = ValueError("first"), KeyError("second")
    first.__context__, second.__context__ = second, first
    assert stacktrace(first) == _stdlib(first)
