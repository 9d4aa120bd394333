"""The logger manager: ECS JSON logs for the whole process, custom events, stats and cleanup."""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import tracing
from .._files import make_dirs
from .._manager_base import ManagerBase
from ..config import Settings
from ..errors import LoggingSetupError
from ..metrics import Metrics
from ..ports import LogSink, SinkFactory

if TYPE_CHECKING:  # the handler, its outputs and the trace lookup load on enable() or first use
    from ._handler import ECSHandler, RotatingFile

LOG_FILE = "bot.json"
ERROR_FILE = "errors.json"
DIR_MODE = 0o700
EVENTS_LOGGER = "exporter.events"


class LoggerManager(ManagerBase):
    """ECS JSON logging on the root logger, so every ``logging.getLogger(...)`` is covered.

    While disabled every event method returns at once; ``get_log_stats`` and
    ``cleanup_old_logs`` work on ``LOG_DIR`` either way (``opsstack logs`` uses them).
    ``sink_factories`` are the shipping backends enable() asks for a sink (the module-level
    manager is given every one of :mod:`exporter.sinks`).
    """

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
                 sink_factories: Mapping[str, SinkFactory] | None = None) -> None:
        super().__init__(settings, metrics)
        self._sink_factories = dict(sink_factories or {})
        self._lock = threading.RLock()
        self._handler: ECSHandler | None = None
        self._front: Any = None  # the WriteBehind on the root logger, in front of _handler
        self._fast_records = False  # whether enable() installed the FastRecord factory
        self._added_sinks: list[LogSink] = []
        self._saved_root_level: int | None = None
        self._set_root_level: int | None = None
        self._events: logging.Logger | None = None
        self._redactions = 0
        self._last_counts: dict[str, int] | None = None
        self._last_errors: dict[str, int] | None = None
        self._downloads: dict[str, Any] = {}
        self._uploads: dict[str, Any] = {}
        self._api_calls: dict[str, Any] = {}
        self._transferred: dict[str, Any] = {}
        self._builders: Any = None  # the _events module, once enabled

    # ------------------------------------------------------------------ lifecycle
    def enable(self, settings: Settings | None = None, metrics: Metrics | None = None) -> None:
        """Install the handler on the root logger and open the files (idempotent).

        Raises :class:`LoggingSetupError` naming the path when ``LOG_DIR`` or its files cannot be
        used; nothing stays installed or open then.
        """
        # the formatter, the ECS field table, the event builders and the handler (~1 MiB) load
        # here, not on import
        from . import _events, _fast_record
        from ._formatter import ECSFormatter
        from ._handler import ECSHandler
        from ._redact import Redactor, secret_literals
        from ._trace import trace_ids_function
        from ._write_behind import WriteBehind

        with self._lock:
            if self.enabled:
                return
            settings = self._resolve_settings(settings)
            metrics = self._resolve_metrics(metrics)
            config = settings.logging
            level = logging.getLevelName(config.level)
            files, sinks = self._open_outputs(settings, metrics, _prepare_dir(Path(config.dir)), level)
            redactor = None
            if config.redact:
                redactor = Redactor(secret_literals(settings.secret_values()))
            self._redactions = 0
            redaction_counter = metrics.log_redactions

            def on_redact(count: int) -> None:
                self._redactions += count
                redaction_counter.inc(count)

            self._builders = _events
            trace_ids = trace_ids_function()
            formatter = ECSFormatter(redactor=redactor, on_redact=on_redact, trace_ids=trace_ids,
                                     resource=ecs_resource(settings))
            handler = ECSHandler(formatter, files, console=config.console, sinks=sinks, metrics=metrics,
                                 level=level)
            self._count_children(metrics)
            root = logging.getLogger()
            self._front = WriteBehind(handler, formatter, trace_ids)
            root.addHandler(self._front)
            self._fast_records = _fast_record.install()
            if root.level > level:  # let records down to LOG_LEVEL through; never raise it
                self._saved_root_level = root.level
                self._set_root_level = level
                root.setLevel(level)
            self._events = logging.getLogger(EVENTS_LOGGER)
            self._handler = handler
            self.settings = settings
            self.metrics = metrics
            self._added_sinks = []
            metrics.feature_enabled.labels("logging").set(1)
            # A bot that exits without disable() still gets its sinks flushed (before logging's
            # own exit hook, which was registered earlier and so runs later).
            atexit.register(self.disable)
            self.enabled = True

    def _open_outputs(self, settings: Settings, metrics: Metrics, log_dir: Path,
                      level: int) -> tuple[list[RotatingFile], list[LogSink]]:
        """The log files and the sinks (the added ones and those the settings configure),
        started; on a failure the ones opened here are closed again."""
        from ._handler import RotatingFile

        config = settings.logging
        files: list[RotatingFile] = []
        sinks: list[LogSink] = list(self._added_sinks)
        try:
            for name, file_name, file_level in (("file", LOG_FILE, level), ("errors", ERROR_FILE, logging.ERROR)):
                path = log_dir / file_name
                try:
                    files.append(RotatingFile(name, path, config.max_size, config.backup_count, file_level))
                except OSError as exc:
                    raise LoggingSetupError(f"cannot open log file {path}: {exc.strerror or exc}") from exc
            for factory in self._sink_factories.values():
                sink = factory(settings, metrics)
                if sink is not None:
                    sinks.append(sink)
        except BaseException:
            for output in files:
                output.close()
            for sink in sinks[len(self._added_sinks):]:  # the ones started here
                sink.close(0)
            raise
        return files, sinks

    def disable(self) -> None:
        """Remove exactly what :meth:`enable` added, close the files, flush and close the sinks."""
        with self._lock:
            if not self.enabled:
                return
            self.enabled = False
            atexit.unregister(self.disable)
            handler = self._handler
            settings = self.settings
            root = logging.getLogger()
            root.removeHandler(self._front)
            if self._fast_records:
                from ._fast_record import uninstall

                uninstall()
            if self._set_root_level is not None and root.level == self._set_root_level:
                root.setLevel(self._saved_root_level)
            self._saved_root_level = self._set_root_level = None
            self._front.close()  # writes what is queued, then closes the files
            self._front = None
            for sink in handler.sinks:
                try:
                    sink.close(settings.shipping.shutdown_timeout)
                except Exception as exc:  # plug-in boundary: stopping must go on
                    handler._failed("sink", exc)
            self._last_counts = dict(handler.records_by_level)
            self._last_errors = dict(handler.errors)
            self._handler = None
            handler.metrics.feature_enabled.labels("logging").set(0)

    def flush(self) -> None:
        """Write every line still queued (lines below WARNING are written behind the caller,
        within 0.2 s; see ``_write_behind``). ``disable()`` and ``get_log_stats()`` do it too."""
        front = self._front
        if front is not None:
            front.flush()

    def add_sink(self, sink: LogSink) -> None:
        """Attach a sink now (enabled) or at the next :meth:`enable`; it is closed by :meth:`disable`."""
        with self._lock:
            if self._handler is not None:
                self._handler.sinks = [*self._handler.sinks, sink]
            else:
                self._added_sinks.append(sink)

    # ------------------------------------------------------------------ custom events
    def log_download(self, task_id: Any, filename: Any, size_bytes: Any, duration: Any, speed: Any,
                     status: Any) -> None:
        """A finished download: ``duration`` in seconds, ``speed`` in bytes per second."""
        if not self.enabled:
            return
        self._transfer("download", task_id, filename, size_bytes, duration, speed, status)

    def log_upload(self, task_id: Any, filename: Any, size_bytes: Any, duration: Any, speed: Any,
                   status: Any) -> None:
        """A finished upload, same shape as :meth:`log_download`."""
        if not self.enabled:
            return
        self._transfer("upload", task_id, filename, size_bytes, duration, speed, status)

    def log_api_call(self, method: Any, duration: Any, status: Any, status_code: Any = None, *,
                     url: Any = None, error: Any = None, task_id: Any = None, **fields: Any) -> None:
        """An API call (``method`` such as ``sendMessage``) that took ``duration`` seconds."""
        if not self.enabled:
            return
        try:
            level, message, built = self._builders.api_call(method, duration, status, status_code, url=url,
                                                            error=error, task_id=task_id, fields=fields)
            child = self._api_calls.get(built["event.outcome"])
            if child is not None:
                child.inc()
            self._emit(level, message, built)
        except Exception as exc:  # never raises: an event is telemetry
            self._event_failed(exc)

    def log_event(self, action: Any, outcome: Any, message: Any = None, *, level: int = logging.INFO,
                  **fields: Any) -> None:
        """Any action with an outcome; ``fields`` as described in ``_events.event_fields``."""
        if not self.enabled:
            return
        try:
            text, built = self._builders.event(action, outcome, message, fields)
            self._emit(level, text, built)
        except Exception as exc:  # never raises: an event is telemetry
            self._event_failed(exc)

    def _transfer(self, direction: str, *args: Any) -> None:
        try:
            level, message, built = self._builders.transfer(direction, *args)
            outcome = built["event.outcome"]
            child = (self._downloads if direction == "download" else self._uploads).get(outcome)
            if child is not None:
                child.inc()
            if outcome == "success" and built.get("file.size", 0) > 0:
                self._transferred[direction].inc(built["file.size"])
            self._emit(level, message, built, depth=4)
            duration = built.get("event.duration")
            tracing.record_span(f"bot.{direction}", None if duration is None else duration / 1e9,
                                failed=outcome == "failure", **{
                                    "file.name": built.get("file.name"), "file.size": built.get("file.size"),
                                    "task_id": built.get("labels.task_id")})
        except Exception as exc:  # never raises: an event is telemetry
            self._event_failed(exc)

    def _emit(self, level: int, message: str, fields: dict[str, Any], depth: int = 3) -> None:
        """The event's record, made here rather than by ``Logger.log``: ``depth`` frames up is
        the bot's line that called log_download / log_event (its file, function and line become
        log.origin), taken at once where ``findCaller`` would walk and compare every frame, and
        the fields set on the record in one step where ``makeRecord`` checks them one by one
        (an event costs the caller about a third less). The record is the factory's, the
        logger's filters and handlers run as for ``Logger.log``; fields that would overwrite a
        record attribute take ``Logger.log``'s path, which refuses them."""
        events = self._events
        if events is None or not events.isEnabledFor(level) or events.disabled:
            return
        attributes = None
        if logging._srcfile is not None:  # noqa: SLF001 - None: the bot turned caller lookup off
            try:
                frame = sys._getframe(depth - 1)  # noqa: SLF001 - the frame stacklevel would find
            except ValueError:  # called from fewer frames than usual (a test, a REPL)
                frame = None
            if frame is not None:
                code = frame.f_code
                record = logging.getLogRecordFactory()(events.name, level, code.co_filename, frame.f_lineno,
                                                       "%s", (message,), None, code.co_name, None)
                attributes = record.__dict__
        if attributes is None or not fields.keys().isdisjoint(attributes) or "message" in fields or "asctime" in fields:
            events.log(level, "%s", message, extra=fields, stacklevel=depth)
            return
        attributes.update(fields)
        events.handle(record)

    def _event_failed(self, exc: Exception) -> None:
        handler = self._handler
        if handler is not None:
            handler._failed("events", exc)

    def _count_children(self, metrics: Metrics) -> None:
        self._downloads = {outcome: metrics.downloads.labels(outcome) for outcome in ("success", "failure")}
        self._uploads = {outcome: metrics.uploads.labels(outcome) for outcome in ("success", "failure")}
        self._api_calls = {outcome: metrics.api_calls.labels(outcome) for outcome in ("success", "failure")}
        self._transferred = {direction: metrics.transferred_bytes.labels(direction)
                             for direction in ("download", "upload")}

    # ------------------------------------------------------------------ stats and cleanup
    def get_log_stats(self) -> dict[str, Any]:
        """Files and bytes per handler, records by level since enable, redactions, errors, shipping."""
        from ._handler import LEVEL_NAMES, existing_files

        settings = self.settings or self._resolve_settings()
        log_dir = Path(settings.logging.dir)
        handlers: dict[str, Any] = {}
        for name, file_name in (("file", LOG_FILE), ("errors", ERROR_FILE)):
            paths = existing_files(log_dir / file_name)
            handlers[name] = {"path": str(log_dir / file_name), "files": len(paths),
                              "bytes": sum(_size(path) for path in paths)}
        handler, front = self._handler, self._front
        if front is not None:
            front.flush()  # the queued lines count, and their bytes are in the files
        if handler is not None:
            counts, errors = dict(handler.records_by_level), dict(handler.errors)
            sinks = handler.sinks
        else:
            counts = self._last_counts or {name: 0 for _, name in LEVEL_NAMES}
            errors = self._last_errors or {"file": 0, "errors": 0, "console": 0, "sink": 0}
            sinks = []
        shipping = None
        if len(sinks) == 1:
            shipping = sinks[0].stats()
        elif sinks:
            shipping = {f"{type(sink).__name__}#{number}": sink.stats() for number, sink in enumerate(sinks)}
        return {
            "enabled": self.enabled,
            "log_dir": str(log_dir),
            "log_file_count": sum(entry["files"] for entry in handlers.values()),
            "total_bytes": sum(entry["bytes"] for entry in handlers.values()),
            "handlers": handlers,
            "console": bool(settings.logging.console),
            "records_by_level": counts,
            "redactions": self._redactions,
            "handler_errors": errors,
            "shipping": shipping,
        }

    def cleanup_old_logs(self, days: float) -> int:
        """Delete rotated files (``bot.json.N``, ``errors.json.N``) older than ``days``; the count.

        The files being written are never deleted.
        """
        if days < 0:
            raise ValueError("days must not be negative")
        from ._handler import existing_files

        settings = self.settings or self._resolve_settings()
        log_dir = Path(settings.logging.dir)
        cutoff = time.time() - days * 86400
        deleted = 0
        for file_name in (LOG_FILE, ERROR_FILE):
            active = log_dir / file_name
            for path in existing_files(active):
                if path == active:
                    continue
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        deleted += 1
                except FileNotFoundError:
                    continue
        return deleted


def ecs_resource(settings: Settings) -> dict[str, dict[str, str]]:
    """``host.name`` and ``service.*`` of every line, from the attributes the spans carry."""
    attributes = tracing.service_resource(settings)
    return {"host": {"name": attributes["host.name"]},
            "service": {"name": attributes["service.name"], "version": attributes["service.version"],
                        "environment": attributes["deployment.environment.name"]}}


def _prepare_dir(path: Path) -> Path:
    """``LOG_DIR`` as a directory of mode 0700: created when its parent exists, else an error."""
    path = path.expanduser()
    if not path.is_dir():
        if path.exists():
            raise LoggingSetupError(f"LOG_DIR {path} exists but is not a directory")
        parent = path.absolute().parent
        if not parent.is_dir():
            raise LoggingSetupError(f"LOG_DIR {path}: parent directory {parent} does not exist")
        try:
            make_dirs(path, DIR_MODE)
        except FileExistsError:  # created meanwhile by another process
            if not path.is_dir():
                raise LoggingSetupError(f"LOG_DIR {path} exists but is not a directory") from None
        except OSError as exc:
            raise LoggingSetupError(f"cannot create LOG_DIR {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise LoggingSetupError(f"LOG_DIR {path} is not writable")
    with contextlib.suppress(OSError):  # not ours or a read-only mount: opening the files tells
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o777 != DIR_MODE:
            os.chmod(path, DIR_MODE)
    return path


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

