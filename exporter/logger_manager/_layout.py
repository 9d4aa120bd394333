"""Lines with ``extra`` fields (the custom events) from cached layouts, not a document per record.

The general path of the formatter places every extra field (its ECS type, its allowed values,
a clash with a field already there), builds nested dicts and runs ``json.dumps``: about 45 µs a
line for a download event. Where a field goes and how its value is written depends only on the
field's name, the class of its value and, for a few fields, the value itself (one with allowed
values such as ``event.outcome``, an ``ip`` or a ``date``). So the formatter keeps, per set of
field names and per *shape* (those classes and values), the JSON line with a slot for each value
that varies, and fills the slots: the same bytes as the general path for a fraction of the cost.

A layout is made from the first line of its shape and kept only when filling it gives exactly
that line as the general path wrote it; a shape the layout cannot express (a secret field name,
a nested mapping, a list outside the fixed-value fields, a NaN, a value the redactor changed
while the layout was made) goes the general way, every time or that time.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from ._fields import ALLOWED_VALUES, ECS_FIELDS

LIMIT = 256  # field-name sets kept, and shapes per set; past it the cache starts again
_BY_VALUE_KINDS = frozenset(("date", "ip"))
# The fields of every line, from the record (``document`` path, attribute, class).
BASE = (("log.logger", "name", str), ("log.origin.file.line", "lineno", int),
        ("log.origin.file.name", "filename", str), ("log.origin.function", "funcName", str),
        ("process.name", "processName", str), ("process.pid", "process", int),
        ("process.thread.id", "thread", int), ("process.thread.name", "threadName", str))
_IDS = ("trace.id", "span.id")
# How a slot is written: text (masked, quoted), text as is (quoted), int, float, bool, a number
# or bool as keyword text, the trace id, the span id.
TEXT, NAME, INT, FLOAT, BOOL, LABEL, TRACE, SPAN = range(8)
_MARK = "\ue000slot%d\ue000"
_MARKS = re.compile(r'"\\ue000slot(\d+)\\ue000"')


class _Slot:
    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number


class Plan:
    """The extra fields of one set of names, sorted as the general path takes them."""

    __slots__ = ("fields", "by_value", "ids", "layouts")

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self.by_value = tuple(field in ALLOWED_VALUES or ECS_FIELDS.get(field) in _BY_VALUE_KINDS
                              for field in fields)
        self.ids = tuple(name for name in _IDS if name not in fields)  # an extra trace.id wins
        self.layouts: dict[tuple, Layout | None] = {}


class Layout:
    """A line's format with a ``%s`` per slot, and what goes in each: ``(attribute, how)``."""

    __slots__ = ("format", "slots")

    def __init__(self, format_: str, slots: list[tuple[str, int]]) -> None:
        self.format = format_
        self.slots = slots


def shape(plan: Plan, attributes: dict[str, Any], ids: Any) -> tuple | None:
    """The classes (and for by-value fields the values) of a record's extras; None when a value
    is of a kind layouts do not take."""
    shape_: list = [ids is not None]
    for field, by_value in zip(plan.fields, plan.by_value):
        value = attributes[field]
        kind = value.__class__
        if kind is str or kind is int or kind is bool or value is None:
            shape_.append((kind, value) if by_value else kind)
        elif kind is float:
            if not math.isfinite(value):
                return None
            shape_.append((kind, value) if by_value else kind)
        elif by_value and (kind is list or kind is tuple) and all(item.__class__ is str for item in value):
            shape_.append((kind, tuple(value)))
        else:
            return None
    return tuple(shape_)


def base_fits(a: dict[str, Any]) -> bool:
    """Whether the record's own fields (``BASE``) are of the classes a layout writes."""
    return (a["name"].__class__ is str and a["lineno"].__class__ is int and a["filename"].__class__ is str
            and a["funcName"].__class__ is str and a["processName"].__class__ is str
            and a["process"].__class__ is int and a["thread"].__class__ is int and a["threadName"].__class__ is str)


def fill(layout: Layout, attributes: dict[str, Any], head: tuple[str, str, str], ids: Any,
         redact: Callable[[str], str]) -> str:
    """The line: ``head`` (timestamp, level, message already written) and every slot."""
    values: list[Any] = list(head)
    append = values.append
    for attribute, how in layout.slots:
        if how == TEXT:
            append(_quote(redact(attributes[attribute])))
        elif how == NAME:
            append(_quote(attributes[attribute]))
        elif how == INT or how == FLOAT:
            append(repr(attributes[attribute]))
        elif how == TRACE:
            append(_quote(redact(ids[0])))
        elif how == SPAN:
            append(_quote(redact(ids[1])))
        elif how == BOOL:
            append("true" if attributes[attribute] else "false")
        else:  # LABEL
            value = attributes[attribute]
            append(_quote(("true" if value else "false") if value.__class__ is bool else str(value)))
    return layout.format % tuple(values)


def make(document: dict[str, Any], placed: list[tuple[str | int, str | None, Any, Any, bool]]) -> Layout | None:
    """A layout from the general path's ``document`` of a record, where ``placed`` says for each
    field (its attribute, or TRACE / SPAN for an id; its dotted name there; its value as given,
    as written; whether by value) what went where. None when a field's writing is not one a slot
    can repeat."""
    slots: list[tuple[str, int]] = []
    marks: list[tuple[str, Any]] = []
    for path, attribute, kind in BASE:
        marks.append((path, _Slot(len(slots))))
        slots.append((attribute, NAME if kind is str else INT))
    for source, name, given, written, by_value in placed:
        if name is None:
            return None
        if by_value:  # the value is part of the shape: it stays written in the layout
            continue
        how = _how(source, given, written)
        if how is None:
            return None
        marks.append((name, _Slot(len(slots))))
        slots.append(("", how) if how in (TRACE, SPAN) else (source, how))
    for path, slot in marks:
        if not _replace(document, path, slot):
            return None
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      default=lambda slot: _MARK % slot.number)
    pieces = _MARKS.split(text)
    order = [int(number) for number in pieces[1::2]]
    if sorted(order) != list(range(len(slots))):
        return None
    fixed = [piece.replace("%", "%%") for piece in pieces[0::2]]
    body = "%s".join(fixed)
    return Layout('{"@timestamp":"%s","log.level":%s,"message":%s,' + body[1:], [slots[number] for number in order])


def _how(source: str | int, given: Any, written: Any) -> int | None:
    kind = given.__class__
    if source.__class__ is int:  # an id: text
        return source if kind is str and written == given else None
    if written is given or (kind is str and written == given):
        return {str: TEXT, int: INT, float: FLOAT, bool: BOOL}.get(kind)
    if kind is bool and written == ("true" if given else "false"):
        return LABEL
    if kind in (int, float) and written == str(given):
        return LABEL
    return None


def _replace(document: dict[str, Any], path: str, slot: _Slot) -> bool:
    """Put ``slot`` where the leaf at dotted ``path`` is; False when there is none."""
    *parents, leaf = path.split(".")
    node: Any = document
    for part in parents:
        node = node.get(part) if node.__class__ is dict else None
        if node is None:
            return False
    if node.__class__ is not dict or leaf not in node or node[leaf].__class__ in (dict, list):
        return False
    node[leaf] = slot
    return True
