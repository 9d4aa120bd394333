"""A fast ECS formatter that writes what ``ecs_logging.StdlibFormatter`` writes, for ECS 8.

``ecs_logging`` builds nested dicts and runs ``json.dumps`` on every record (about 8x the cost of
a plain ``%(message)s`` formatter). Here the common record (no ``extra``, no exception) is
assembled from cached JSON fragments: the timestamp prefix per second, the logger/origin part per
(logger, file, function), the process part per (process, thread). Records with extras or an
exception take the general path, which builds the same document as ``ecs_logging``.

Differences from ``ecs_logging`` (on purpose): ``ecs.version`` is the ECS 8 version, there is no
``log.original`` (ECS 8 dropped it), an ``extra`` field that is not ECS moves under ``labels.*``
or ``bot.*`` (see ``_fields``), secrets are masked, and a value that cannot be serialised still
gives a valid JSON line.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _quote
from traceback import format_tb
from typing import Any

from . import _layout
from ._document import MAX_DEPTH, compact, flatten, merge, safe_for_json, without_none
from ._fields import ECS_VERSION, place, relocate
from ._redact import MASK, Redactor

_PLAIN_RECORD = logging.LogRecord("", logging.INFO, "", 0, "", (), None)
_BASE_ATTRIBUTES = len(_PLAIN_RECORD.__dict__)
# Attributes of a LogRecord that are not ``extra`` (as ecs_logging decides it).
STANDARD_ATTRIBUTES = frozenset(_PLAIN_RECORD.__dict__) | frozenset(dir(_PLAIN_RECORD)) | {
    "message", "asctime", "taskName"}

_CACHE_LIMIT = 4096
_MISSING = object()
_SCALARS = (int, float, bool)

TraceIds = Callable[[], "tuple[str, str] | None"]


class ECSFormatter(logging.Formatter):
    """ECS 8 JSON lines, one per record.

    ``redactor`` masks secrets (``on_redact(count)`` is told how many); ``trace_ids`` returns
    the hex ``(trace.id, span.id)`` of the active span or None; ``resource`` holds the fields of
    every line naming where it comes from, ``{"host": {"name": ...}, "service": {...}}`` (other
    top-level objects are refused: the fast path places these two).
    """

    def __init__(self, *, redactor: Redactor | None = None, on_redact: Callable[[int], None] | None = None,
                 trace_ids: TraceIds | None = None,
                 resource: Mapping[str, Mapping[str, str]] | None = None) -> None:
        super().__init__()
        resource = {name: dict(fields) for name, fields in (resource or {}).items() if fields}
        if not set(resource) <= {"host", "service"}:
            raise ValueError(f"resource fields must be host.* and service.*, not {sorted(resource)}")
        self._redactor = redactor
        self._on_redact = on_redact
        self._trace_ids = trace_ids
        self._resource = resource
        # the fast path's fragments, in the sorted order of the general path's keys
        host = resource.get("host")
        service = resource.get("service")
        host_part = '"host":' + compact(host) + "," if host else ""
        self._service_part = ',"service":' + compact(service) if service else ""
        self._second: tuple[int, str] = (-1, "")
        self._levels: dict[str, str] = {}
        self._origins: dict[tuple, tuple[str, str]] = {}
        self._processes: dict[tuple, str] = {}
        self._trace_part: tuple[object, str] = (None, "")
        self._secret_names: dict[str, bool] = {}
        self._plans: dict[tuple, _layout.Plan | None] = {}  # extras' layouts by the record's attribute names
        self._head_tail = ',"ecs.version":' + _quote(ECS_VERSION) + "," + host_part + '"log":{"logger":'

    # ------------------------------------------------------------------ public
    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record, None, self._trace_ids() if self._trace_ids is not None else None)
        except Exception as exc:  # plug-in boundary: a record must never break logging
            return self._emergency(record, exc)

    def format_captured(self, record: logging.LogRecord, message: str | None, ids: tuple[str, str] | None) -> str:
        """The line of a record formatted away from where it was logged: ``message`` (None: the
        record's own) and the trace ``ids`` were taken there. A function of its arguments only."""
        try:
            return self._format(record, message, ids)
        except Exception as exc:  # plug-in boundary
            return self._emergency(record, exc)

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        """The document as a dict (the general path), for callers that want to add fields."""
        ids = self._trace_ids() if self._trace_ids is not None else None
        return json.loads(self._format(record, None, ids, general=True))

    # ------------------------------------------------------------------ the two paths
    def _format(self, record: logging.LogRecord, message: str | None, ids, general: bool = False) -> str:
        if message is None:
            message = record.getMessage()
        if self._redactor is not None:
            message = self._redact(message)
        attributes = record.__dict__
        extras = attributes.keys() - STANDARD_ATTRIBUTES if len(attributes) != _BASE_ATTRIBUTES else None
        if general or extras or record.exc_info or record.stack_info:
            if extras and not (general or record.exc_info or record.stack_info):
                line = self._from_layout(record, message, extras, ids)
                if line is not None:
                    return line
            return self._general(record, message, extras, ids)
        # cached fragments; a miss builds them (None when a value is missing: general path)
        origin = self._origins.get((record.name, record.filename, record.funcName)) or self._origin(record)
        process = (self._processes.get((record.process, record.processName, record.thread, record.threadName))
                   or self._process(record))
        if origin is None or process is None or record.lineno is None:
            return self._general(record, message, extras, ids)
        second = self._second
        if second[0] != int(record.created):
            second = self._new_second(record)
        if ids is None:
            tail = "}"
        else:
            tail = self._trace_part
            if tail[0] is not ids:  # ids is the same tuple for every line of one span
                tail = (ids, ',"span":{"id":' + _quote(ids[1]) + '},"trace":{"id":' + _quote(ids[0]) + "}}")
                self._trace_part = tail
            tail = tail[1]
        return '{"@timestamp":"%s%03dZ","log.level":%s,"message":%s%s%s%d%s%s%s%s' % (
            second[1], record.msecs, self._levels.get(record.levelname) or self._level(record), _quote(message),
            self._head_tail, origin[0], record.lineno, origin[1], process, self._service_part, tail)

    def _general(self, record: logging.LogRecord, message: str, extras, ids) -> str:
        document = self._document(record)
        for key, value in self._flat_fields(record, extras, ids).items():
            if value is not None:
                self._place(document, key, value)
        head = ('{"@timestamp":"' + self._timestamp(record) + '","log.level":' + self._level(record)
                + ',"message":' + _quote(message) + ",")
        return head + self._dumps(document)[1:]

    def _from_layout(self, record: logging.LogRecord, message: str, extras, ids) -> str | None:
        """The line of a record with extras from its cached layout (see ``_layout``); None: the
        general path writes it."""
        attributes = record.__dict__
        names = tuple(attributes)
        plan = self._plans.get(names, _MISSING)
        if plan is _MISSING:
            plan = self._new_plan(names, extras)
        if plan is None or not _layout.base_fits(attributes):
            return None
        shape = _layout.shape(plan, attributes, ids)
        if shape is None:
            return None
        layout = plan.layouts.get(shape, _MISSING)
        if layout is None:
            return None
        head = (self._timestamp(record), self._level(record), _quote(message))
        if layout is _MISSING:
            return self._new_layout(record, head, plan, shape, ids)
        return _layout.fill(layout, attributes, head, ids, self._redact)

    def _new_plan(self, names: tuple, extras) -> _layout.Plan | None:
        try:
            plan = _layout.Plan(tuple(sorted(extras))) if all(name.__class__ is str for name in extras) else None
        except TypeError:
            plan = None
        if len(self._plans) >= _layout.LIMIT:
            self._plans.clear()
        self._plans[names] = plan
        return plan

    def _new_layout(self, record: logging.LogRecord, head: tuple[str, str, str], plan: _layout.Plan,
                    shape: tuple, ids) -> str:
        """The general path's line of the first record of a shape, and its layout kept when the
        layout writes the same line (not when a value was masked: that may not repeat)."""
        attributes, document = record.__dict__, self._document(record)
        fields = [(name, name, attributes[name], by_value) for name, by_value in zip(plan.fields, plan.by_value)]
        if ids is not None:
            fields += [(name, _layout.TRACE if name == "trace.id" else _layout.SPAN,
                        ids[0] if name == "trace.id" else ids[1], False) for name in plan.ids]
        placed, keep = [], True
        for key, source, value, by_value in fields:
            if value is None:
                continue
            secret = self._secret_names.get(key)
            if secret is None:
                secret = self._is_secret_field(key)
            name, written = self._place(document, key, value)
            if value.__class__ is str and written != value and not secret:
                keep = False  # masked this time
            placed.append((source, None if secret else name, value, written, by_value))
        line = '{"@timestamp":"%s","log.level":%s,"message":%s,' % head + self._dumps(document)[1:]
        if keep:
            layout = _layout.make(document, placed)
            if layout is not None and _layout.fill(layout, attributes, head, ids, self._redact) != line:
                layout = None
            if len(plan.layouts) >= _layout.LIMIT:
                plan.layouts.clear()
            plan.layouts[shape] = layout
        return line

    def _document(self, record: logging.LogRecord) -> dict[str, Any]:
        """The fields every line has: ECS version, resource, logger and origin, process, error."""
        document: dict[str, Any] = {"ecs.version": ECS_VERSION}
        for name, fields in self._resource.items():  # copies: extras may add to them (service.node.name)
            document[name] = dict(fields)
        name, line, file_name, function = record.name, record.lineno, record.filename, record.funcName
        if name is not None and line is not None and file_name is not None and function is not None:
            document["log"] = {"logger": name, "origin": {"file": {"line": line, "name": file_name},
                                                          "function": function}}
        else:
            document.update(without_none({"log": {"logger": name, "origin": {
                "file": {"line": line, "name": file_name}, "function": function}}}))
        process = {"name": record.processName, "pid": record.process,
                   "thread": {"id": record.thread, "name": record.threadName}}
        if None in (record.processName, record.process, record.thread, record.threadName):
            process = without_none(process)
        if process:
            document["process"] = process
        error = self._error(record)
        if error:
            document["error"] = error
        return document

    @staticmethod
    def _flat_fields(record: logging.LogRecord, extras, ids) -> dict[str, Any]:
        """The ``extra`` fields by dotted name (nested mappings flattened), then the trace ids."""
        flat: dict[str, Any] = {}
        if extras:
            attributes = record.__dict__
            try:
                ordered = sorted(extras)  # sorted: clashes resolve the same way every time
            except TypeError:  # a non-string key put into the record's __dict__ by hand
                ordered = sorted(extras, key=str)
            for key in ordered:
                value = attributes[key]
                if isinstance(value, Mapping):
                    flatten(key, value, flat, 0)
                elif isinstance(key, str):
                    flat.setdefault(key, value)
                else:
                    flat.setdefault(str(key), value)
        if ids is not None:
            flat.setdefault("trace.id", ids[0])
            flat.setdefault("span.id", ids[1])
        return flat

    def _place(self, document: dict[str, Any], key: str, value: Any) -> tuple[str | None, Any]:
        """One extra field into the document: masked if secret, cleaned, at its ECS place, else
        under ``labels``/``bot``; the dotted name and the value written (None: nowhere)."""
        secret = self._secret_names.get(key)
        if secret is None:
            secret = self._is_secret_field(key)
        if secret:
            value = MASK  # {"password": ...}, {"headers": {"Authorization": ...}}
            if self._on_redact is not None:
                self._on_redact(1)
        elif value.__class__ is str:
            if self._redactor is not None:
                value = self._redact(value)
        elif value.__class__ not in _SCALARS:
            value = self._clean(value, 0, set())
        name, value = place(key, value)
        if merge(document, name, value):
            return name, value
        name, value = relocate(key, value)
        if merge(document, name, value):
            return name, value
        name, value = "labels." + name.replace(".", "_"), str(value)
        return (name, value) if merge(document, name, value) else (None, value)

    # ------------------------------------------------------------------ pieces
    def _new_second(self, record: logging.LogRecord) -> tuple[int, str]:
        second = (int(record.created), time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(record.created)))
        self._second = second
        return second

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = self._second
        if second[0] != int(record.created):
            second = self._new_second(record)
        return "%s%03dZ" % (second[1], record.msecs)

    def _level(self, record: logging.LogRecord) -> str:
        level = self._levels.get(record.levelname)
        if level is None:
            level = _quote(str(record.levelname).lower())
            self._levels[str(record.levelname)] = level
        return level

    def _origin(self, record: logging.LogRecord) -> tuple[str, str] | None:
        if record.name is None or record.filename is None or record.funcName is None:
            return None
        origin = (_quote(str(record.name)) + ',"origin":{"file":{"line":',
                  ',"name":' + _quote(str(record.filename)) + '},"function":' + _quote(str(record.funcName))
                  + "}},")
        if len(self._origins) > _CACHE_LIMIT:
            self._origins.clear()
        self._origins[(record.name, record.filename, record.funcName)] = origin
        return origin

    def _process(self, record: logging.LogRecord) -> str | None:
        if None in (record.process, record.processName, record.thread, record.threadName):
            return None
        process = ('"process":{"name":' + _quote(str(record.processName)) + ',"pid":' + str(int(record.process))
                   + ',"thread":{"id":' + str(int(record.thread)) + ',"name":' + _quote(str(record.threadName))
                   + "}}")
        if len(self._processes) > _CACHE_LIMIT:
            self._processes.clear()
        self._processes[(record.process, record.processName, record.thread, record.threadName)] = process
        return process

    def _error(self, record: logging.LogRecord) -> dict[str, Any]:
        error: dict[str, Any] = {}
        exc_info = record.exc_info
        if exc_info:
            if isinstance(exc_info, bool):
                exc_info = sys.exc_info()
            if isinstance(exc_info, (list, tuple)):
                if exc_info[0] is not None:
                    error["type"] = exc_info[0].__name__
                if exc_info[1]:
                    error["message"] = self._redact(str(exc_info[1]))
                if len(exc_info) > 2 and exc_info[2] is not None:
                    trace = "".join(format_tb(exc_info[2]))
                    if trace:
                        error["stack_trace"] = self._redact(trace)
                        return error
        if record.stack_info:
            error["stack_trace"] = self._redact(str(record.stack_info))
        return error

    def _is_secret_field(self, key: str) -> bool:
        secret = self._redactor is not None and self._redactor.is_secret_name(key.rpartition(".")[2])
        if len(self._secret_names) > _CACHE_LIMIT:
            self._secret_names.clear()
        self._secret_names[key] = secret
        return secret

    def _redact(self, text: str) -> str:
        if self._redactor is None:
            return text
        text, count = self._redactor.redact(text)
        if count and self._on_redact is not None:
            self._on_redact(count)
        return text

    def _clean(self, value: Any, depth: int, active: set[int]) -> Any:
        """Masks strings inside a value; breaks cycles and very deep nesting."""
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        if isinstance(value, (list, tuple, Mapping)):
            if id(value) in active or depth >= MAX_DEPTH:
                return "[recursive]" if id(value) in active else "[too deep]"
            active.add(id(value))
            try:
                if isinstance(value, Mapping):  # keys checked too: [{"password": ...}] in a list
                    return {str(key): self._masked_item(str(key), item, depth, active)
                            for key, item in value.items()}
                if len(value) == 2 and isinstance(value[0], str) and self._redactor is not None \
                        and self._redactor.is_secret_name(value[0]):  # ("Authorization", "Bearer ...")
                    return [value[0], self._masked_item(value[0], value[1], depth, active)]
                return [self._clean(item, depth + 1, active) for item in value]
            finally:
                active.discard(id(value))
        return self._fallback(value)  # bytes, sets, objects: their repr, as ecs_logging writes them

    def _masked_item(self, key: str, item: Any, depth: int, active: set[int]) -> Any:
        if self._redactor is not None and self._redactor.is_secret_name(key):
            if self._on_redact is not None:
                self._on_redact(1)
            return MASK
        return self._clean(item, depth + 1, active)

    def _fallback(self, value: Any) -> str:
        try:
            text = repr(value)
        except Exception as exc:  # a broken __repr__ must not lose the record
            text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
        return self._redact(text)

    def _dumps(self, document: dict[str, Any]) -> str:
        try:
            return json.dumps(document, sort_keys=True, separators=(",", ":"), default=self._fallback,
                              allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return json.dumps(safe_for_json(document, self._fallback), sort_keys=True, separators=(",", ":"),
                              allow_nan=False)

    def _emergency(self, record: logging.LogRecord, exc: Exception) -> str:
        try:
            message = self._redact(f"{record.msg!r} {record.args!r}"[:2000])
        except Exception:
            message = "<unprintable log record>"
        document = {
            "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "log.level": str(getattr(record, "levelname", "error")).lower(),
            "message": message,
            "ecs.version": ECS_VERSION,
            **self._resource,
            "log": {"logger": str(getattr(record, "name", ""))},
            "error": {"type": type(exc).__name__,
                      "message": self._redact(f"log record could not be formatted: {exc}")},
        }
        return json.dumps(document, separators=(",", ":"), default=repr)
