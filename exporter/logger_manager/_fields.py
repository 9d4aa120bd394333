"""Where a value goes in an ECS document: a real ECS field, ``labels.*`` or the ``bot.*`` namespace.

The ECS 8 field list (``_ecs_fields``, generated from Elastic's ``@elastic/ecs``) decides. A
value is written under its own name only when that name is an ECS leaf field and the value has
the field's type; anything else moves:

* ``labels.<name>``: keyword strings (ECS ``labels`` is an object of keywords);
* ``bot.<name>``: numbers only (mapped as ``double`` by the shipper's index template), so the
  two never disagree on a type and nothing clashes with an ECS field of another type.

Both are one level deep: the dots of a nested name become underscores (``data.runtime`` ->
``bot.data_runtime``). The template maps every path under ``bot.`` as ``double``, an object
``bot.data`` included, so Elasticsearch would reject a line with a nested number.
"""
from __future__ import annotations

import ipaddress
import math
from datetime import datetime
from typing import Any

from ._ecs_fields import ALLOWED_VALUES, ECS_FIELDS, ECS_VERSION

__all__ = ["ALLOWED_VALUES", "ECS_FIELDS", "ECS_VERSION", "CUSTOM_NAMESPACE", "place", "relocate", "field_for_argument"]

CUSTOM_NAMESPACE = "bot"

STRING_TYPES = frozenset(("keyword", "constant_keyword", "wildcard", "match_only_text", "text", "ip", "date"))
KEYWORD_TYPES = STRING_TYPES - {"ip", "date"}
INTEGER_TYPES = frozenset(("long", "integer", "short", "byte", "unsigned_long"))
FLOAT_TYPES = frozenset(("float", "double", "scaled_float", "half_float"))

# ECS fields that hold a list even when there is one value.
ARRAY_FIELDS = frozenset(("event.category", "event.type", "tags", "related.hash", "related.hosts",
                          "related.ip", "related.user", "threat.tactic.name"))

# ``file_name`` -> ``file.name``: the keyword-argument spelling of every ECS field (ambiguous
# spellings are left out).
_spellings: dict[str, list[str]] = {}
for _name in ECS_FIELDS:
    _spellings.setdefault(_name.replace(".", "_").replace("@", ""), []).append(_name)
ALIASES = {spelling: names[0] for spelling, names in _spellings.items() if len(names) == 1}
del _spellings, _name

# Fields the formatter writes itself; an extra with one of these names is moved to ``labels``.
OWNED = frozenset(("@timestamp", "message", "log.level", "ecs.version", "labels", CUSTOM_NAMESPACE))


def is_number(value: Any) -> bool:
    """An int or a finite float (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def label_value(value: Any) -> Any:
    """A keyword (or list of keywords) for ``labels.*``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [label_value(item) for item in value]
    return str(value)


def relocate(key: str, value: Any) -> tuple[str, Any]:
    """A field name that is not ECS: numbers to ``bot.<key>``, anything else to ``labels.<key>``."""
    if is_number(value):
        return f"{CUSTOM_NAMESPACE}.{key.replace('.', '_')}", value
    return "labels." + key.replace(".", "_"), label_value(value)


def _fits(kind: str, value: Any) -> Any:
    """``value`` in the shape of an ECS field of type ``kind``, or None when it does not fit."""
    if isinstance(value, list):
        items = [_fits(kind, item) for item in value]
        return None if any(item is None for item in items) else items
    if kind == "date":
        return value if isinstance(value, str) and _is_date(value) else None
    if kind == "ip":
        return value if isinstance(value, str) and _is_ip(value) else None
    if kind in STRING_TYPES:
        if isinstance(value, str):
            return value
        if kind in ("ip", "date") or not (is_number(value) or isinstance(value, bool)):
            return None
        return label_value(value)  # a number or bool in a keyword field: its text
    if kind in INTEGER_TYPES:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind in FLOAT_TYPES:
        return value if is_number(value) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return None  # object, flattened, nested, geo_point: no plain leaf value goes there


def _is_date(text: str) -> bool:
    """ISO 8601, which Elasticsearch's default date format takes (anything else it rejects)."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def place(key: str, value: Any) -> tuple[str, Any]:
    """The flat field name and value an ``extra`` entry is written under."""
    if key in OWNED:
        return relocate(key, value)
    kind = ECS_FIELDS.get(key)
    if kind is not None:
        allowed = ALLOWED_VALUES.get(key)
        if value.__class__ is str and kind in KEYWORD_TYPES and allowed is None:  # the common case
            return key, [value] if key in ARRAY_FIELDS else value
        fitted = _fits(kind, value)
        if fitted is not None and allowed is not None:
            if not all(item in allowed for item in (fitted if isinstance(fitted, list) else [fitted])):
                fitted = None
        if fitted is not None:
            if key in ARRAY_FIELDS and not isinstance(fitted, list):
                fitted = [fitted]
            return key, fitted
        return relocate(key, value)
    if key.startswith("labels."):
        return "labels." + key[7:].replace(".", "_"), label_value(value)
    if key.startswith(CUSTOM_NAMESPACE + "."):
        return relocate(key[len(CUSTOM_NAMESPACE) + 1:], value)
    return relocate(key, value)


def field_for_argument(name: str) -> str:
    """The field a ``log_event`` keyword argument names: ``file_name`` -> ``file.name``."""
    if "." in name:
        return name
    return ALIASES.get(name, name)
