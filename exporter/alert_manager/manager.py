"""The alert manager: record, fold repeats, notify subscribers and channels, keep history."""
from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._manager_base import ManagerBase
from ..config import Secret, Settings
from ..errors import AlertError, NotEnabledError
from ..metrics import Metrics, worker_failed
from .model import FIRING, RESOLVED, Alert, AlertSeverity, AlertType, fingerprint, parse_severity, parse_type

if TYPE_CHECKING:  # asyncio, the delivery machinery (~9 MiB) and the history store (json) load
    import asyncio  # on enable(), not on import
    from datetime import datetime

    from .callbacks import CallbackLane, Subscription
    from .delivery import Channel, ChannelLane, Job, Outbox
    from .store import AlertStore, HistoryFile
    from .worker import LoopThread

log = logging.getLogger("exporter.alert_manager")

# Channel name -> "module:callable(settings) -> Channel", imported only when a channel is used.
CHANNEL_FACTORIES: dict[str, str] = {
    "log": "exporter.channels.log:from_settings",
    "webhook": "exporter.channels.webhook:from_settings",
    "telegram": "exporter.channels.telegram:from_settings",
    "email": "exporter.channels.email:from_settings",
    "slack": "exporter.channels.slack:from_settings",
    "alertmanager": "exporter.channels.alertmanager:from_settings",
}

ChannelFactory = Callable[[Settings], "Channel"]

COMPACT_SLACK_LINES = 10_000  # history lines beyond two per alert before the file is rewritten


def _load_factory(name: str, spec: str | ChannelFactory) -> ChannelFactory:
    if callable(spec):
        return spec
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _secret_values(settings: Settings) -> list[str]:
    values = []
    for section in vars(settings).values():
        for value in getattr(section, "__dict__", {}).values():
            if isinstance(value, Secret) and len(value.get()) >= 4:
                values.append(value.get())
    return sorted(values, key=len, reverse=True)


def _timestamp(since: Any) -> float | None:
    if since is None or isinstance(since, (int, float)):
        return since
    from datetime import datetime  # a C extension: loaded when a datetime may be given

    if isinstance(since, datetime):
        return since.timestamp()
    raise AlertError(f"since must be a timestamp or a datetime, not {since!r}")


class AlertManager(ManagerBase):
    """Alerts of the bot. Nothing is opened until :meth:`enable`; disabled, calls do nothing."""

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
                 channel_factories: Mapping[str, str | ChannelFactory] | None = None,
                 clock: Callable[[], float] = time.time, send_timeout: float = 10.0,
                 callback_timeout: float = 5.0, retry_base: float = 1.0, retry_max: float = 60.0,
                 lane_size: int = 1000, intake_size: int = 10_000, max_alerts: int = 10_000,
                 monitor_resources: bool = True, resource_probe: Any = None) -> None:
        super().__init__(settings, metrics)
        self._factories = {**CHANNEL_FACTORIES, **(channel_factories or {})}
        self._clock = clock
        self._send_timeout = send_timeout
        self._callback_timeout = callback_timeout
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._lane_size = lane_size
        self._intake_size = intake_size
        self._max_alerts = max_alerts
        self._monitor_resources = monitor_resources
        self._resource_probe = resource_probe
        self._lock = threading.Lock()
        self._subscribers: dict[AlertType, list[Subscription]] = {}
        self._handlers: list[Subscription] = []
        self._reset_state()

    def _reset_state(self) -> None:
        self.settings: Settings | None = None
        self.metrics: Metrics | None = self._metrics_arg  # default_metrics() at enable, not import
        self._store: AlertStore | None = None
        self._by_fingerprint: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._intake: deque[tuple[str, Alert]] = deque()
        self._wake_pending = False
        self._worker: LoopThread | None = None
        self._channels: dict[str, Channel] = {}
        self._routes: dict[AlertSeverity, tuple[str, ...]] = {}
        self._lanes: dict[str, ChannelLane] = {}
        self._callback_lanes: dict[int, CallbackLane] = {}
        self._outbox: Outbox | None = None
        self._history: HistoryFile | None = None
        self._tasks: list[asyncio.Task] = []
        self._secrets: list[str] = []
        self._window = 300.0
        self._monitor = None

    # ------------------------------------------------------------------ lifecycle
    def enable(self, settings: Settings | None = None) -> None:
        """Build the channels (ChannelConfigError names a missing key), load history, start."""
        if self.enabled:
            return
        settings = self._resolve_settings(settings)
        metrics = self._resolve_metrics()
        routes = {parse_severity(sev): tuple(names) for sev, names in settings.alerts.channels.items()}
        names = sorted({name for chans in routes.values() for name in chans})
        channels: dict[str, Channel] = {}
        for name in names:
            if name not in self._factories:
                raise AlertError(f"unknown alert channel {name!r}; channels are {', '.join(sorted(self._factories))}")
            channels[name] = _load_factory(name, self._factories[name])(settings)

        from .store import HISTORY_FILE, OUTBOX_FILE, AlertStore, HistoryFile, ensure_state_dir

        state_dir = Path(settings.general.state_dir)
        now = self._clock()
        store = AlertStore(settings.alerts.retention_hours, self._max_alerts)
        try:
            ensure_state_dir(state_dir)
            store.load(state_dir / HISTORY_FILE, now)
            history = HistoryFile(state_dir / HISTORY_FILE, store, COMPACT_SLACK_LINES).open()
            from .delivery import Outbox

            outbox = Outbox(state_dir / OUTBOX_FILE)
            saved_jobs = outbox.load()
        except OSError as exc:
            raise AlertError(f"cannot keep alert state in {state_dir} (STATE_DIR): {exc.strerror}") from exc
        self._history = history

        self.settings = settings
        self.metrics = metrics
        self._store = store
        self._by_fingerprint = {a.fingerprint: a.id for a in store.alerts.values() if not a.resolved}
        self._channels = channels
        self._routes = routes
        self._outbox = outbox
        self._secrets = _secret_values(settings)
        self._window = settings.alerts.dedup_window
        self._refresh_active()

        from .worker import LoopThread

        self._worker = LoopThread("opsstack-alerts").start()
        self._worker.run(self._start_lanes(saved_jobs, settings), timeout=10)
        self.enabled = True  # before the monitor starts: its first check may raise an alert
        if self._monitor_resources:
            from .monitors import ResourceMonitor

            self._monitor = ResourceMonitor(self, settings, metrics, self._resource_probe)
            self._worker.call(self._spawn, self._monitor.run())
        metrics.feature_enabled.labels("alerts").set(1)
        log.info("alert manager enabled: channels %s", ", ".join(names) or "none")

    async def _start_lanes(self, saved_jobs: list[Job], settings: Settings) -> None:
        from .delivery import ChannelLane

        for name, channel in self._channels.items():
            lane = ChannelLane(channel, self._outbox, self.metrics, max_jobs=self._lane_size,
                               rate_per_minute=settings.alerts.rate_limit_per_minute,
                               send_timeout=self._send_timeout, retry_base=self._retry_base,
                               retry_max=self._retry_max, max_age=settings.alerts.retention_hours * 3600.0,
                               clock=time.time)  # real time: backoff must pass even under a test clock
            self._lanes[name] = lane
            self._outbox.lanes[name] = lane
            self._spawn(lane.run())
        restored = 0
        for job in saved_jobs:
            lane = self._lanes.get(job.channel)
            if lane is None:
                log.warning("alert outbox: channel %s is no longer configured; dropped a notification",
                            job.channel)
                continue
            job.next_at = 0.0
            lane.put(job)
            restored += 1
        if restored:
            log.info("alert outbox: %d notification(s) restored for delivery", restored)
        self._update_queue_gauge()
        self._spawn(self._persist_loop())

    def _spawn(self, coro) -> None:
        import asyncio

        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def disable(self, timeout: float = 2.0) -> None:
        """Stop: deliver what is due within ``timeout``, persist the rest, close channels."""
        if not self.enabled:
            return
        self.enabled = False
        worker = self._worker
        try:
            worker.run(self._shutdown(timeout), timeout=timeout + 5)
        except Exception as exc:  # stopping must not raise into the bot; report and go on
            log.warning("alert manager stopped uncleanly: %s", type(exc).__name__)
        worker.stop(timeout=5)
        if self._history is not None:
            self._history.close()
        self.metrics.feature_enabled.labels("alerts").set(0)
        self._reset_state()

    async def _shutdown(self, timeout: float) -> None:
        import asyncio

        self._drain()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._idle(due_only=True):
            await asyncio.sleep(0.02)
        for lane in self._lanes.values():
            lane.stopping = True
        for callback_lane in self._callback_lanes.values():
            callback_lane.close()
        tasks = self._tasks + [lane.task for lane in self._callback_lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        if stuck:
            log.warning("alert manager: %d task(s) did not stop in time", len(stuck))
        self._write_history()
        self._outbox.save()
        for channel in self._channels.values():
            try:
                await asyncio.wait_for(channel.close(), 1.0)
            except Exception as exc:  # plug-in boundary
                log.warning("alert channel %s did not close cleanly: %s", channel.name, type(exc).__name__)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, alert_type: AlertType | str, callback: Callable[[Alert], Any]) -> None:
        """Call ``callback(alert)`` (sync or async) for each new alert of ``alert_type``."""
        kind = parse_type(alert_type)
        from .callbacks import Subscription

        subscription = Subscription(callback)
        with self._lock:
            self._subscribers.setdefault(kind, []).append(subscription)

    def unsubscribe(self, alert_type: AlertType | str, callback: Callable[[Alert], Any]) -> bool:
        kind = parse_type(alert_type)
        with self._lock:
            subs = self._subscribers.get(kind, [])
            for sub in subs:
                if sub.callback == callback:
                    subs.remove(sub)
                    return True
        return False

    def register_handler(self, callback: Callable[[Alert], Any]) -> None:
        """Call ``callback(alert)`` for each new alert of every type."""
        from .callbacks import Subscription

        subscription = Subscription(callback)
        with self._lock:
            self._handlers.append(subscription)

    def unregister_handler(self, callback: Callable[[Alert], Any]) -> bool:
        with self._lock:
            for sub in self._handlers:
                if sub.callback == callback:
                    self._handlers.remove(sub)
                    return True
        return False

    # ------------------------------------------------------------------ triggering
    async def trigger_alert(self, alert_type: AlertType | str, severity: AlertSeverity | str, title: str,
                            message: str, task_id: str | None = None,
                            details: dict[str, Any] | None = None) -> Alert | None:
        """Record an alert and queue its notifications; returns it (None while disabled).

        Raises :class:`AlertError` for an unknown type or severity. Never waits for delivery.
        """
        if not self.enabled:
            return None
        return self._record(parse_type(alert_type), parse_severity(severity), title, message, task_id, details)

    def trigger_alert_sync(self, alert_type: AlertType | str, severity: AlertSeverity | str, title: str,
                           message: str, task_id: str | None = None,
                           details: dict[str, Any] | None = None) -> Alert | None:
        """Thread-safe, never blocks, never raises (a bad call is logged); None while disabled."""
        if not self.enabled:
            return None
        try:
            return self._record(parse_type(alert_type), parse_severity(severity), title, message,
                                task_id, details)
        except Exception as exc:  # the contract: callers outside the loop never see an exception
            log.warning("trigger_alert_sync ignored a bad call: %s", exc)
            return None

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, "****")
            return value
        if isinstance(value, Mapping):
            return {str(k): self._redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact(v) for v in value]
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return self._redact(str(value))

    def _record(self, kind: AlertType, severity: AlertSeverity, title: str, message: str,
                task_id: str | None, details: dict[str, Any] | None) -> Alert | None:
        store = self._store
        if store is None:  # disabled by another thread meanwhile
            return None
        title, message = self._redact(str(title)), self._redact(str(message))
        now = self._clock()
        fp = fingerprint(kind, message, task_id)
        metrics = self.metrics
        metrics.alerts.labels(kind.value, severity.value).inc()
        with store.lock:
            existing = store.alerts.get(self._by_fingerprint.get(fp, ""))
            if existing is not None and not existing.resolved:
                existing.repeat_count += 1
                existing.last_seen = now
                notified = existing.notified_at or existing.first_seen
                escalated = severity.rank > existing.severity.rank
                if escalated:
                    metrics.alerts_active.labels(existing.severity.value).dec()
                    metrics.alerts_active.labels(severity.value).inc()
                    existing.severity = severity
                self._dirty.add(existing.id)
                if not escalated and now - notified < self._window:
                    metrics.alerts_deduplicated.labels(kind.value).inc()
                    return existing.copy()
                existing.notified_at = now  # window over or severity raised: notify again
                alert = existing
            else:
                alert = Alert(type=kind, severity=severity, title=title, message=message, first_seen=now,
                              task_id=task_id, details=self._redact(details or {}), fingerprint=fp,
                              notified_at=now)
                for evicted in store.add(alert):  # past max_alerts the oldest go: forget them here too
                    self._unindex(evicted)
                    if not evicted.resolved:
                        metrics.alerts_active.labels(evicted.severity.value).dec()
                self._by_fingerprint[fp] = alert.id
                self._dirty.add(alert.id)
                metrics.alerts_active.labels(severity.value).inc()
            snapshot = alert.copy()
        self._enqueue(FIRING, snapshot)
        return snapshot.copy()

    def _enqueue(self, kind: str, alert: Alert) -> None:
        if len(self._intake) >= self._intake_size:
            self.metrics.alert_notifications.labels("intake", "dropped").inc()
            return
        self._intake.append((kind, alert))
        if not self._wake_pending:
            self._wake_pending = True
            worker = self._worker
            if worker is not None:
                worker.call(self._drain_reported)

    def _drain_reported(self) -> None:
        """:meth:`_drain` on the loop; an unexpected error is reported, the next alert drains again."""
        try:
            self._drain()
        except Exception:  # loop boundary: report, go on
            worker_failed(self.metrics, "alert_intake", log, "routing new alerts")

    def resolve_alert(self, alert: Alert | str) -> Alert | None:
        """Mark an alert (by object, id or fingerprint) resolved and tell the channels it went to."""
        if not self.enabled:
            return None
        key = alert.id if isinstance(alert, Alert) else str(alert)
        store = self._store
        if store is None:
            return None
        with store.lock:
            found = store.alerts.get(key) or store.alerts.get(self._by_fingerprint.get(key, ""))
            if found is None or found.resolved:
                return None
            found.resolved_at = self._clock()
            self._by_fingerprint.pop(found.fingerprint, None)
            self.metrics.alerts_active.labels(found.severity.value).dec()
            self._dirty.add(found.id)
            snapshot = found.copy()
        self._enqueue(RESOLVED, snapshot)
        return snapshot.copy()

    # ------------------------------------------------------------------ worker side
    def _drain(self) -> None:
        from .delivery import Job

        self._wake_pending = False
        with self._lock:
            wanted: dict[AlertType, list[Subscription]] = {k: list(v) for k, v in self._subscribers.items()}
            handlers = list(self._handlers)
        live = {id(sub) for subs in wanted.values() for sub in subs} | {id(sub) for sub in handlers}
        for key in [key for key in self._callback_lanes if key not in live]:
            self._callback_lanes.pop(key).close()
        while self._intake:
            kind, alert = self._intake.popleft()
            if kind == FIRING:
                for sub in wanted.get(alert.type, []) + handlers:
                    self._callback_lane(sub).put(alert.copy())
            for name in self._routes.get(alert.severity, ()):
                lane = self._lanes.get(name)
                if lane is not None:
                    lane.put(Job(channel=name, kind=kind, alert=alert.to_dict(), created=time.time()))
        self._write_history()
        self._update_queue_gauge()

    def _callback_lane(self, sub: Subscription) -> CallbackLane:
        import asyncio

        from .callbacks import CallbackLane

        lane = self._callback_lanes.get(id(sub))
        if lane is None:
            lane = CallbackLane(sub, self.metrics, max_items=self._lane_size,
                                timeout=self._callback_timeout)
            lane.task = asyncio.get_running_loop().create_task(lane.run())
            self._callback_lanes[id(sub)] = lane
        return lane

    def _write_history(self) -> None:
        store = self._store
        with store.lock:
            dirty, self._dirty = self._dirty, set()
            records = [store.alerts[i].to_dict() for i in dirty if i in store.alerts]
        if self._history is not None:
            self._history.append(records)

    def _update_queue_gauge(self) -> None:
        if self._outbox is not None:
            self.metrics.alert_delivery_queue.set(self._outbox.pending())

    def _refresh_active(self) -> None:
        counts = {severity: 0 for severity in AlertSeverity}
        for alert in self._store.alerts.values():
            if not alert.resolved:
                counts[alert.severity] += 1
        for severity, count in counts.items():
            self.metrics.alerts_active.labels(severity.value).set(count)

    async def _persist_loop(self) -> None:
        """Every 0.2 s: append changed alerts, save the outbox if it changed, prune hourly."""
        import asyncio

        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            try:
                self._write_history()
                if self._outbox.dirty:
                    self._outbox.save()
                self._update_queue_gauge()
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    self._prune()
                elif self._history.oversized():
                    self._history.compact()  # repeats append snapshots; keep about one line per alert
            except OSError as exc:
                log.warning("alert state could not be written: %s", exc)
            except Exception:  # task boundary: report, keep persisting
                worker_failed(self.metrics, "alert_persistence", log, "saving the alert state")

    def _unindex(self, alert: Alert) -> None:
        """Drop the fingerprint entry of ``alert``, gone from the store (the caller holds its lock)."""
        if self._by_fingerprint.get(alert.fingerprint) == alert.id:
            del self._by_fingerprint[alert.fingerprint]

    def _prune(self) -> None:
        store = self._store
        with store.lock:
            gone = store.prune(self._clock())
            for alert in gone:
                self._unindex(alert)
        if gone:
            self._history.compact()
            self._refresh_active()

    def _idle(self, due_only: bool = False) -> bool:
        if self._intake or self._wake_pending:
            return False
        if any(not lane.idle() for lane in self._callback_lanes.values()):
            return False
        now = self._clock()
        for lane in self._lanes.values():
            if lane.in_flight:
                return False
            if lane.jobs and (not due_only or lane.jobs[0].next_at <= now):
                return False
        return True

    async def _idle_check(self) -> bool:
        return self._idle()

    # ------------------------------------------------------------------ waiting (tests, CLI)
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (from a thread other than the worker's) until every notification is delivered."""
        if not self.enabled:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._worker.run(self._idle_check(), timeout=5):
                return True
            time.sleep(0.02)
        return False

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """:meth:`flush` for async callers."""
        import asyncio

        if not self.enabled:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await asyncio.wrap_future(self._worker.submit(self._idle_check())):
                return True
            await asyncio.sleep(0.02)
        return False

    def retry_now(self) -> None:
        """Retry every waiting notification now instead of after its backoff."""
        if self.enabled:
            self._worker.call(lambda: [lane.retry_now() for lane in self._lanes.values()])

    def channel_stats(self) -> dict[str, dict[str, int]]:
        """Per channel: notifications delivered and waiting (``last_error`` is in :meth:`channel_errors`)."""
        return {name: {"delivered": lane.delivered, "pending": len(lane.jobs)} for name, lane in self._lanes.items()}

    def channel_errors(self) -> dict[str, str | None]:
        """Per channel: the reason of the last failed delivery (never holds a secret), or None."""
        return {name: lane.last_error for name, lane in self._lanes.items()}

    # ------------------------------------------------------------------ queries
    def get_alerts(self, limit: int | None = 100, severity: AlertSeverity | str | None = None,
                   type: AlertType | str | None = None, since: float | datetime | None = None,  # noqa: A002
                   include_resolved: bool = True) -> list[Alert]:
        """Newest first. Raises NotEnabledError while disabled, AlertError for a bad filter."""
        if not self.enabled:
            raise NotEnabledError("the alert manager is not enabled (ENABLE_ALERT_SYSTEM)")
        return self._store.query(limit, severity, type, _timestamp(since), include_resolved)

    def get_alert_summary(self) -> dict[str, Any]:
        """Counts by type and severity (repeats included), last hour and retention, top repeats."""
        if not self.enabled:
            raise NotEnabledError("the alert manager is not enabled (ENABLE_ALERT_SYSTEM)")
        summary = self._store.summary(self._clock())
        summary["channels"] = self.channel_stats()
        return summary


def read_history(settings: Settings, clock: Callable[[], float] = time.time) -> AlertStore:
    """The stored history, read-only (for ``opsstack alerts`` without enabling anything)."""
    from .store import HISTORY_FILE, AlertStore

    store = AlertStore(settings.alerts.retention_hours)
    state_dir = Path(settings.general.state_dir)
    try:
        store.load(state_dir / HISTORY_FILE, clock())
    except OSError as exc:  # STATE_DIR is a file, or cannot be read
        raise AlertError(f"cannot read the alert history in {state_dir} (STATE_DIR): {exc.strerror}") from exc
    return store
