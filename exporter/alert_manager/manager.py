"""The alert manager: its lifecycle, subscriptions and queries. Recording and folding repeats is
:mod:`.intake`, routing to subscribers and channels :mod:`.routing`, keeping the history and the
outbox :mod:`.persistence`."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._manager_base import ManagerBase
from .._masking import SecretMasker
from ..config import Settings
from ..errors import AlertError, NotEnabledError
from ..metrics import Metrics, worker_failed
from ..ports import Channel, ChannelFactory, SharedMarks
from .model import Alert, AlertSeverity, AlertType, parse_severity, parse_type

if TYPE_CHECKING:  # asyncio, the delivery machinery (~9 MiB) and the history store (json) load
    import asyncio  # on enable(), not on import
    from datetime import datetime

    from .callbacks import Subscription
    from .delivery import Job
    from .intake import Intake
    from .persistence import AlertState
    from .routing import Router
    from .store import AlertStore
    from .worker import LoopThread

log = logging.getLogger("exporter.alert_manager")


def _timestamp(since: Any) -> float | None:
    if since is None or isinstance(since, (int, float)):
        return since
    from datetime import datetime  # a C extension: loaded when a datetime may be given

    if isinstance(since, datetime):
        return since.timestamp()
    raise AlertError(f"since must be a timestamp or a datetime, not {since!r}")


class AlertManager(ManagerBase):
    """Alerts of the bot. Nothing is opened until :meth:`enable`; disabled, calls do nothing.

    ``channel_factories`` are the channels ``ALERT_CHANNELS`` may name (the module-level manager
    is given every channel of :mod:`exporter.channels`)."""

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
                 channel_factories: Mapping[str, ChannelFactory] | None = None,
                 clock: Callable[[], float] = time.time, send_timeout: float = 10.0,
                 callback_timeout: float = 5.0, retry_base: float = 1.0, retry_max: float = 60.0,
                 lane_size: int = 1000, intake_size: int = 10_000, max_alerts: int = 10_000,
                 monitor_resources: bool = True, resource_probe: Any = None,
                 shared_marks: Callable[[Settings], SharedMarks] | None = None) -> None:
        super().__init__(settings, metrics)
        self._factories = dict(channel_factories or {})
        self._shared_marks = shared_marks  # settings -> marks shared across workers (Redis)
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
        self._state: AlertState | None = None
        self._intake: Intake | None = None
        self._router: Router | None = None
        self._worker: LoopThread | None = None
        self._tasks: list[asyncio.Task] = []
        self._monitor = None

    # ------------------------------------------------------------------ lifecycle
    def enable(self, settings: Settings | None = None, metrics: Metrics | None = None) -> None:
        """Build the channels (ChannelConfigError names a missing key), load history, start."""
        if self.enabled:
            return
        settings = self._resolve_settings(settings)
        metrics = self._resolve_metrics(metrics)
        routes = {parse_severity(sev): tuple(names) for sev, names in settings.alerts.channels.items()}
        names = sorted({name for chans in routes.values() for name in chans})
        channels: dict[str, Channel] = {}
        for name in names:
            if name not in self._factories:
                raise AlertError(f"unknown alert channel {name!r}; channels are {', '.join(sorted(self._factories))}")
            channels[name] = self._factories[name](settings)
        from .intake import Intake
        from .persistence import AlertState
        from .routing import Router
        from .worker import LoopThread

        state, saved_jobs = AlertState.open(settings, metrics, self._clock, self._max_alerts)
        self.settings, self.metrics, self._state = settings, metrics, state
        self._intake = Intake(state, metrics, SecretMasker(settings.secret_values()), self._clock,
                              window=settings.alerts.dedup_window, size=self._intake_size, wake=self._wake)
        self._router = Router(channels, routes, state.outbox, metrics, lane_size=self._lane_size,
                              callback_timeout=self._callback_timeout, lane_options=dict(
                                  rate_per_minute=settings.alerts.rate_limit_per_minute,
                                  send_timeout=self._send_timeout, retry_base=self._retry_base,
                                  retry_max=self._retry_max, max_age=settings.alerts.retention_hours * 3600.0,
                                  clock=time.time),  # real time: backoff must pass even under a test clock
                              marks=self._shared_marks(settings) if self._shared_marks else None,
                              window=settings.alerts.dedup_window, gather=settings.alerts.shared_gather)
        self._worker = LoopThread("opsstack-alerts").start()
        self._worker.run(self._start(saved_jobs), timeout=10)
        self.enabled = True  # before the monitor starts: its first check may raise an alert
        if self._monitor_resources:
            from .monitors import ResourceMonitor

            self._monitor = ResourceMonitor(self, settings, metrics, self._resource_probe)
            self._worker.call(self._spawn, self._monitor.run())
        metrics.feature_enabled.labels("alerts").set(1)
        log.info("alert manager enabled: channels %s", ", ".join(names) or "none")

    async def _start(self, saved_jobs: list[Job]) -> None:
        from . import control

        self._tasks += self._router.start(saved_jobs)
        self._router.adopt_firing(self._state.store.query(None, None, None, None, False))
        self._state.update_queue_gauge()
        self._spawn(self._state.run())
        self._spawn(control.serve(Path(self.settings.general.state_dir), self._apply_request, self.metrics))

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
        self._state.close()
        self.metrics.feature_enabled.labels("alerts").set(0)
        self._reset_state()

    async def _shutdown(self, timeout: float) -> None:
        import asyncio

        self._drain()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._idle(due_only=True):
            await asyncio.sleep(0.02)
        tasks = self._tasks + self._router.stop()
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        if stuck:
            log.warning("alert manager: %d task(s) did not stop in time", len(stuck))
        self._state.save()
        await self._router.close_channels()

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

    def _record(self, kind: AlertType, severity: AlertSeverity, title: str, message: str,
                task_id: str | None, details: dict[str, Any] | None) -> Alert | None:
        intake = self._intake
        if intake is None:  # disabled by another thread meanwhile
            return None
        return intake.record(kind, severity, title, message, task_id, details)

    def resolve_alert(self, alert: Alert | str) -> Alert | None:
        """Mark an alert (by object, id or fingerprint) resolved and tell the channels it went to."""
        intake = self._intake
        if not self.enabled or intake is None:
            return None
        return intake.resolve(alert.id if isinstance(alert, Alert) else str(alert))

    def resolve_alerts_sync(self, alert_type: AlertType | str, **details: Any) -> int:
        """Resolve every firing alert of ``alert_type`` whose details hold ``details``: what a
        producer calls when the condition behind its alerts has cleared (a backup that succeeds
        resolves the failures of the same action). How many were resolved; never raises."""
        intake = self._intake
        if not self.enabled or intake is None:
            return 0
        try:
            return len(intake.resolve_matching(parse_type(alert_type), details))
        except Exception:  # never raises: producers call this on their success path
            log.exception("resolving %s alerts failed", alert_type)
            return 0

    async def resolve_alerts(self, alert_type: AlertType | str, **details: Any) -> int:
        """Async twin of :meth:`resolve_alerts_sync` (it does not block either)."""
        return self.resolve_alerts_sync(alert_type, **details)

    def _apply_request(self, request: dict[str, Any]) -> int:
        """Apply a request of another process (``opsstack alerts resolve``, see :mod:`.control`):
        how many alerts it resolved."""
        keys = request.get("keys")
        if request.get("action") != "resolve" or not isinstance(keys, list):
            log.warning("ignored an alert request that is not a resolve of a list of alerts")
            return 0
        return sum(self._intake.resolve(str(key)) is not None for key in keys)

    # ------------------------------------------------------------------ worker side
    def _wake(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.call(self._drain_reported)

    def _drain_reported(self) -> None:
        """:meth:`_drain` on the loop; an unexpected error is reported, the next alert drains again."""
        try:
            self._drain()
        except Exception:  # loop boundary: report, go on
            worker_failed(self.metrics, "alert_intake", log, "routing new alerts")
            self._intake.wake_pending = False  # the next alert drains again, this one's too

    def _drain(self) -> None:
        with self._lock:
            wanted: dict[AlertType, list[Subscription]] = {k: list(v) for k, v in self._subscribers.items()}
            handlers = list(self._handlers)
        self._router.route(self._intake.take(), wanted, handlers)
        self._state.write_history()
        self._state.update_queue_gauge()

    def _idle(self, due_only: bool = False) -> bool:
        return self._intake.idle() and self._router.idle(self._clock(), due_only)

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
            self._worker.call(self._router.retry_now)

    def channel_stats(self) -> dict[str, dict[str, int]]:
        """Per channel: notifications delivered and waiting (``last_error`` is in :meth:`channel_errors`)."""
        return self._router.stats() if self._router is not None else {}

    def channel_errors(self) -> dict[str, str | None]:
        """Per channel: the reason of the last failed delivery (never holds a secret), or None."""
        return self._router.errors() if self._router is not None else {}

    # ------------------------------------------------------------------ queries
    def get_alerts(self, limit: int | None = 100, severity: AlertSeverity | str | None = None,
                   type: AlertType | str | None = None, since: float | datetime | None = None,  # noqa: A002
                   include_resolved: bool = True) -> list[Alert]:
        """Newest first. Raises NotEnabledError while disabled, AlertError for a bad filter."""
        if not self.enabled:
            raise NotEnabledError("the alert manager is not enabled (ENABLE_ALERT_SYSTEM)")
        return self._state.store.query(limit, severity, type, _timestamp(since), include_resolved)

    def get_alert_summary(self) -> dict[str, Any]:
        """Counts by type and severity (repeats included), last hour and retention, top repeats."""
        if not self.enabled:
            raise NotEnabledError("the alert manager is not enabled (ENABLE_ALERT_SYSTEM)")
        summary = self._state.store.summary(self._clock())
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
