"""The JSON document helpers of the ECS formatter: flattening ``extra`` trees, placing dotted
names, dropping empty parts, and making any value serialisable (so a bad ``extra`` never breaks
a line)."""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

CACHE_LIMIT = 4096  # dotted names whose split is kept
MAX_DEPTH = 32  # nesting of an extra value kept; deeper parts are cut


def compact(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def without_none(tree: dict[str, Any]) -> dict[str, Any]:
    """A copy without None values and without the dicts left empty (as ecs_logging omits them)."""
    result = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = without_none(value)
            if value:
                result[key] = value
        elif value is not None:
            result[key] = value
    return result


def flatten(key: str, value: Any, into: dict[str, Any], depth: int, active: frozenset[int] = frozenset()) -> None:
    """``{"http": {"method": "GET"}}`` -> ``{"http.method": "GET"}`` (as ecs_logging), cycles cut."""
    if isinstance(value, Mapping) and value and depth < MAX_DEPTH:
        if id(value) in active:
            into.setdefault(str(key), "[recursive]")
            return
        inner = active | {id(value)}
        for sub, item in list(value.items()):
            flatten(f"{key}.{sub}", item, into, depth + 1, inner)
    else:
        into.setdefault(str(key), value)


def merge(document: dict[str, Any], name: str, value: Any) -> bool:
    """Put ``value`` at dotted ``name``; False when it would clash with a field already there."""
    node = document
    parts = _PARTS.get(name)
    if parts is None:
        if len(_PARTS) > CACHE_LIMIT:
            _PARTS.clear()
        parts = _PARTS[name] = (tuple(name.split(".")[:-1]), name.rpartition(".")[2])
    for part in parts[0]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif child.__class__ is not dict:
            return False
        node = child
    if parts[1] in node:
        return False
    node[parts[1]] = value
    return True


_PARTS: dict[str, tuple[tuple[str, ...], str]] = {}


def safe_for_json(value: Any, fallback: Callable[[Any], str]) -> Any:
    """A copy in which every value json can serialise without error (NaN and odd keys included)."""
    if isinstance(value, dict):
        return {key if isinstance(key, str) else fallback(key): safe_for_json(item, fallback)
                for key, item in value.items()}
    if isinstance(value, list):
        return [safe_for_json(item, fallback) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return fallback(value)
