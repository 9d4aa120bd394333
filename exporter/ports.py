"""The ports: the small protocols managers are built against, and the no-op objects that stand in
when the feature behind one is off. Standard library only; nothing of the project is imported,
so every package may depend on this module and it on none.

- :class:`LogSink` (built by a :data:`SinkFactory`): a log shipping backend, see ``exporter.sinks``;
  one that is also a :class:`FileShippingSink` is told the :class:`LogFile` and offset of each line;
- :class:`Channel` (built by a :data:`ChannelFactory`): a notification backend, see
  ``exporter.channels``;
- :class:`EventLog`: where managers write their ECS events (the logger manager, else :data:`NO_EVENTS`);
- :class:`Alerter`: where managers raise alerts (the alert manager, else :data:`NO_ALERTS`);
- :class:`BackupArchives`: what the recovery manager reads of the backups
  (``exporter.backup_manager.archives``);
- :class:`SharedLocks` and :class:`SharedMarks`: locks, counted once-per-window marks and rate
  limits shared across processes and hosts (``exporter.shared_state``, Redis), else :data:`LOCAL_ONLY` (every lock
  and mark then local to the caller);
- :class:`CatalogMirror`: the backup catalog of a set mirrored for every process and host
  (``exporter.shared_state``, Redis), else :data:`NO_MIRROR` (each process reads the files).

A sink's own worker thread calls :func:`mark_shipping_thread` first: what is logged on it (its
HTTP client's request lines, its warnings) would otherwise be shipped again and keep the worker
busy forever. Such records are never handed to a sink, and only WARNING and above are written.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

# Per thread: empty on the bot's threads (one dict check on the hot path); "shipping" on a
# sink's worker, "submitting" while a sink's submit() runs (a sink that logs does not loop).
thread_state = threading.local()


def mark_shipping_thread() -> None:
    """Declare the calling thread a sink's worker (see the module docstring)."""
    thread_state.shipping = True


@runtime_checkable
class LogSink(Protocol):
    """Receives every record at or above ``LOG_LEVEL`` as its final ECS JSON line (masked, ending
    in ``\\n``, ready for NDJSON)."""

    def submit(self, line: bytes, levelno: int) -> None:
        """Take one ECS JSON line of a record of level ``levelno``. Called on the logging thread:
        never blocks (append to a bounded queue and return)."""

    def stats(self) -> dict:
        """Figures for ``get_log_stats()["shipping"]`` (queued, shipped, spooled, dropped, ...)."""

    def close(self, timeout: float) -> None:
        """Flush what is queued within ``timeout`` seconds, then stop."""


class LogFile(NamedTuple):
    """The log file a line was written to: its ``path`` and the ``inode`` it had then (which
    survives the rotation's rename)."""

    path: str
    inode: int


@runtime_checkable
class FileShippingSink(Protocol):
    """A :class:`LogSink` that is also told where each line sits in the log file, so that it can
    name a line for good and read back after a restart what it had not delivered."""

    def follow(self, file: LogFile, offset: int) -> None:
        """Lines will be written to ``file`` from ``offset`` on (called before the first line)."""

    def submit_at(self, line: bytes, levelno: int, file: LogFile, offset: int) -> None:
        """:meth:`LogSink.submit` of a ``line`` just written at byte ``offset`` of ``file``.

        A sink may also have ``after_fork_in_child()``: called in a child forked while logging
        is on, right after the fork, to drop what is the parent's (its thread, connections,
        queue, locks) and start afresh. It must not block, open files or start threads (the
        child may exec next, as ``subprocess`` does after a ``preexec_fn``); :meth:`follow`
        comes with the child's first line."""


# (settings, metrics) -> a started sink, or None when the settings do not configure this backend.
SinkFactory = Callable[[Any, Any], "LogSink | None"]


@runtime_checkable
class Channel(Protocol):
    """A notification backend. ``alert`` is an ``exporter.alert_manager.Alert``."""

    name: str

    async def send(self, alert: Any) -> None:
        """Deliver ``alert``; raise ``DeliveryError`` (retried) on failure."""

    async def send_resolved(self, alert: Any) -> None:
        """Tell the receiver ``alert`` is resolved (may do nothing)."""

    async def close(self) -> None:
        """Release connections."""


# settings -> a channel; raises ChannelConfigError naming the setting it misses.
ChannelFactory = Callable[[Any], Channel]


class EventLog(Protocol):
    def log_event(self, action: Any, outcome: Any, message: Any = None, *, level: int = logging.INFO,
                  **fields: Any) -> None:
        """Write one ECS event; never raises."""


class Alerter(Protocol):
    def trigger_alert_sync(self, alert_type: Any, severity: Any, title: str, message: str,
                           task_id: str | None = None, details: dict[str, Any] | None = None) -> Any:
        """Raise an alert (type and severity by value, e.g. ``"backup_failed"``, ``"high"``);
        thread-safe, never blocks, never raises."""

    def resolve_alerts_sync(self, alert_type: Any, **details: Any) -> int:
        """Resolve every firing alert of ``alert_type`` whose details hold ``details`` (the
        condition that raised them has cleared); how many. Thread-safe, never raises."""


class NoEvents:
    """The event log when logging is off."""

    def log_event(self, action: Any, outcome: Any, message: Any = None, *, level: int = logging.INFO,
                  **fields: Any) -> None:
        return None


class NoAlerts:
    """The alerter when alerting is off."""

    def trigger_alert_sync(self, alert_type: Any, severity: Any, title: str, message: str,
                           task_id: str | None = None, details: dict[str, Any] | None = None) -> None:
        return None

    def resolve_alerts_sync(self, alert_type: Any, **details: Any) -> int:
        return 0


NO_EVENTS = NoEvents()
NO_ALERTS = NoAlerts()


class BackupArchives(Protocol):
    """The backups as the recovery manager reads them."""

    def parse_key(self, text: str) -> bytes:
        """The ``BACKUP_ENCRYPTION_KEY`` as bytes; ``ConfigError`` when malformed."""

    def read_manifest(self, backup_dir: Path, name: str, key: bytes | None) -> dict[str, Any] | None:
        """The manifest of backup ``name`` in ``backup_dir`` (unsealed with ``key``); None when
        there is none. Raises IntegrityError when a sealed one cannot be opened."""

    def check_archive(self, backup_dir: Path, manifest: dict[str, Any], key: bytes | None) -> dict[str, Any]:
        """Read every byte back and check every hash: a report with ``ok`` and ``errors``."""

    def lock(self, path: Path, what: str) -> AbstractContextManager:
        """An exclusive lock on ``path`` (``BackupLockedError`` naming ``what`` when held)."""


class SharedHold(Protocol):
    """A held shared lock: its fencing ``token`` (grows with each holder), and :meth:`check`."""

    token: int

    def check(self) -> None:
        """Raise ``LockLostError`` when the lock expired or went to another holder meanwhile
        (call it before making the work visible)."""


class SharedLocks(Protocol):
    def hold(self, name: str) -> AbstractContextManager[SharedHold]:
        """Hold the lock ``name`` while the block runs (kept alive meanwhile, expiring on its own
        when the holder dies); raise ``LockHeldError`` naming the holder when it is taken."""


class SharedMarks(Protocol):
    def mark(self, key: str, seconds: float) -> int:
        """Mark ``key``: how many callers, across every process and host, marked it within the
        window of ``seconds`` that the first of them opened, this one included (1: the first,
        who notifies; more: a notification another worker sends). Unreachable: 1."""

    def count(self, key: str) -> int:
        """How many marked ``key`` in its window so far (0: the window is over or unreachable)."""

    def take_slot(self, key: str, per_minute: int) -> float | None:
        """Take one of the ``per_minute`` slots of ``key`` shared by every process and host (a
        token bucket holding a minute's worth): 0.0 when taken, else the seconds until one frees
        up; None when unreachable (the caller then limits itself alone)."""


class _NoHold:
    token = 0

    def check(self) -> None:
        return None


class LocalOnly:
    """The shared locks when no shared state is configured: every hold succeeds at once."""

    _hold = _NoHold()

    def hold(self, name: str) -> AbstractContextManager[SharedHold]:
        from contextlib import nullcontext

        return nullcontext(self._hold)

    def mark(self, key: str, seconds: float) -> int:
        return 1

    def count(self, key: str) -> int:
        return 0

    def take_slot(self, key: str, per_minute: int) -> float | None:
        return None


LOCAL_ONLY = LocalOnly()


class CatalogMirror(Protocol):
    """A copy of a backup set's catalog that every process and host reads instead of parsing the
    manifests. The files stay the source of truth: a copy is served only when it was made at the
    set's current generation and from the directory as it is now (its ``stamp``)."""

    def load(self, set_name: str, stamp: str) -> tuple[list[dict[str, Any]] | None, int | None]:
        """``(entries, generation)``: the entries mirrored for ``set_name`` when whole and current
        (else None), and the set's generation now (None: the mirror is unreachable; read the
        files and store nothing)."""

    def store(self, set_name: str, generation: int, stamp: str, entries: list[dict[str, Any]]) -> None:
        """Mirror ``entries``, read from the files after ``load`` gave ``generation``; nothing is
        stored when the set changed since. Never raises."""

    def changed(self, set_name: str) -> None:
        """A backup of the set was made, deleted, verified or drilled: the mirror is stale from
        here on (the next reader rebuilds it). Never raises."""


class NoMirror:
    """The catalog mirror when no shared state is configured: every read goes to the files."""

    def load(self, set_name: str, stamp: str) -> tuple[None, None]:
        return None, None

    def store(self, set_name: str, generation: int, stamp: str, entries: list[dict[str, Any]]) -> None:
        return None

    def changed(self, set_name: str) -> None:
        return None


NO_MIRROR = NoMirror()
