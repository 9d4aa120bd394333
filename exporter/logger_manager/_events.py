"""The custom events (download, upload, API call, any action) as ECS fields.

Each builder returns ``(level, message, fields)`` where ``fields`` are flat ECS names, passed to
logging as ``extra`` and written by the formatter. Mapping:

=========================  =================================================================
what                       field
=========================  =================================================================
kind of event              ``event.kind: event``, ``event.category``, ``event.type``
what happened              ``event.action`` (``download``, ``upload``, ``api-call``, any)
result                     ``event.outcome``: ``success`` / ``failure`` / ``unknown``
how long                   ``event.duration`` in nanoseconds (a long)
file                       ``file.name``, ``file.extension``, ``file.size``
API call                   ``labels.api_method``, ``http.response.status_code``, ``url.*``
the bot's own words        ``labels.task_id``, ``labels.status`` (keywords)
numbers ECS lacks          ``bot.speed_bytes_per_second`` (``bot.*`` holds numbers only)
=========================  =================================================================
"""
from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from ._fields import ECS_FIELDS, field_for_argument, is_number, place

SUCCESS_WORDS = frozenset(("success", "succeeded", "successful", "completed", "complete", "ok", "done",
                           "finished", "true"))
# The ECS arrays of the events, as tuples: a record whose extra values cannot change is
# formatted behind the caller, on the writer thread (``_write_behind``); a list could change.
_FILE, _API, _CREATION, _ACCESS = ("file",), ("api",), ("creation",), ("access",)
FAILURE_WORDS = frozenset(("failure", "failed", "fail", "error", "errored", "timeout", "timed_out",
                           "aborted", "cancelled", "canceled", "rejected", "false"))


def outcome_of(status: Any, status_code: Any = None) -> str:
    """``success``, ``failure`` or ``unknown`` from a status word (or bool), else the HTTP code."""
    word = str(status).strip().lower() if status is not None else ""
    if word in SUCCESS_WORDS:
        return "success"
    if word in FAILURE_WORDS:
        return "failure"
    if is_number(status_code):
        return "success" if status_code < 400 else "failure"
    return "unknown"


def nanoseconds(seconds: Any) -> int | None:
    if not is_number(seconds) or not math.isfinite(seconds):
        return None
    return int(round(seconds * 1_000_000_000))


def _number(value: Any) -> float | None:
    if is_number(value) and math.isfinite(value):
        return value
    return None


def transfer(direction: str, task_id: Any, filename: Any, size_bytes: Any, duration: Any, speed: Any,
             status: Any) -> tuple[int, str, dict[str, Any]]:
    """A download's or an upload's fields. Each field is set only when it has a value, in one
    function: the bot calls this once an operation, with its caches cold, where every further
    call made costs."""
    outcome = outcome_of(status)
    fields: dict[str, Any] = {
        "event.kind": "event",
        "event.category": _FILE,
        "event.type": _CREATION if direction == "download" else _ACCESS,
        "event.action": direction,
        "event.outcome": outcome,
    }
    seconds = duration if _plainly_finite(duration) else _number(duration)
    if seconds is not None:
        fields["event.duration"] = int(round(seconds * 1_000_000_000))
    name = None if filename is None else str(filename)
    if name is not None:
        fields["file.name"] = name
    size = size_bytes if _plainly_finite(size_bytes) else _number(size_bytes)
    if size is not None:
        fields["file.size"] = int(size)
    if task_id is not None:
        fields["labels.task_id"] = str(task_id)
    if status is not None:
        fields["labels.status"] = str(status)
    rate = speed if _plainly_finite(speed) else _number(speed)
    if rate is not None:
        fields["bot.speed_bytes_per_second"] = float(rate)
    if name and "." in name.rstrip(".") and not name.startswith("."):
        fields["file.extension"] = name.rsplit(".", 1)[1].lower()
    when = f"{duration:.3f} s" if seconds is not None else "unknown time"
    message = f"{direction} {status}: {filename} ({size_bytes} bytes in {when})"
    level = logging.WARNING if outcome == "failure" else logging.INFO
    return level, message, fields


def _plainly_finite(value: Any) -> bool:
    """The common case of :func:`_number`, decided without a call: an exact int, or a float
    that is neither NaN nor infinite."""
    kind = value.__class__
    return kind is int or (kind is float and value - value == 0.0)


def api_call(method: Any, duration: Any, status: Any, status_code: Any = None, *, url: Any = None,
             error: Any = None, task_id: Any = None, fields: dict[str, Any] | None = None,
             ) -> tuple[int, str, dict[str, Any]]:
    outcome = outcome_of(status, status_code)
    built: dict[str, Any] = {
        "event.kind": "event",
        "event.category": _API,
        "event.type": _ACCESS,
        "event.action": "api-call",
        "event.outcome": outcome,
        "event.duration": nanoseconds(duration),
        "labels.api_method": None if method is None else str(method),
        "labels.status": None if status is None else str(status),
        "labels.task_id": None if task_id is None else str(task_id),
        "http.response.status_code": int(status_code) if _number(status_code) is not None else None,
    }
    built.update(_url_fields(url))
    built.update(_error_fields(error))
    code = f" (HTTP {status_code})" if status_code is not None else ""
    seconds = f"{duration:.3f} s" if _number(duration) is not None else "unknown time"
    message = f"API call {method} {status}{code} in {seconds}"
    level = logging.WARNING if outcome == "failure" else logging.INFO
    built = _present(built)
    for key, value in event_fields(fields or {}).items():
        built.setdefault(key, value)
    return level, message, built


def event(action: Any, outcome: Any, message: Any, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    normalised = outcome_of(outcome)
    built = {"event.kind": "event", "event.action": str(action), "event.outcome": normalised}
    # A field given by name is more specific than the positional arguments
    # (``log_event("backup", "success", event_action="backup-create")``).
    built.update(event_fields(fields))
    built["event.outcome"] = outcome_of(built["event.outcome"])
    text = str(message) if message is not None else f"{action} {normalised}"
    return text, built


def event_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``log_event`` keyword arguments as flat fields.

    ``file_name=`` names ``file.name`` (any ECS field, dots spelt as underscores); ``duration=`` is in
    seconds (written as ``event.duration`` nanoseconds); ``error=`` takes an exception or a text;
    ``task_id=`` is ``labels.task_id``; other names go to ``labels.*`` (text) or ``bot.*``
    (numbers).
    """
    built: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name == "duration":
            built["event.duration"] = nanoseconds(value)
            continue
        if name == "error":
            built.update(_error_fields(value))
            continue
        if name == "task_id":
            built["labels.task_id"] = str(value)
            continue
        key = field_for_argument(name)
        if isinstance(value, datetime) and ECS_FIELDS.get(key) == "date":
            value = value.isoformat()
        key, value = place(key, value)
        built[key] = value
    return _present(built)


def _url_fields(url: Any) -> dict[str, Any]:
    """``url.full`` and its parts (the formatter masks a token in them like in any text)."""
    if url is None:
        return {}
    text = str(url)
    fields: dict[str, Any] = {"url.full": text}
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return fields
    fields.update({"url.scheme": parts.scheme or None, "url.domain": parts.hostname or None,
                   "url.path": parts.path or None, "url.port": port})
    return fields


def _error_fields(error: Any) -> dict[str, Any]:
    if error is None:
        return {}
    if isinstance(error, BaseException):
        return {"error.type": type(error).__name__, "error.message": str(error)}
    return {"error.message": str(error)}


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}
