"""The profiler manager: which operations are measured, their statistics, slow-operation handling."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .._manager_base import ManagerBase
from ..config import Settings
from ..metrics import Metrics
from ..ports import NO_ALERTS, NO_EVENTS, Alerter, EventLog
from ._blocks import AsyncBlock, Block, NoopBlock, Timer

if TYPE_CHECKING:  # the sample rings (array, math) load with the first measured operation
    from ._stats import OperationState

log = logging.getLogger("exporter.profiler")

SLOW_ALERT_INTERVAL = 60.0  # seconds between two SLOW_OPERATION alerts of one operation
OTHER = "other"  # the operation that names past PROFILER_MAX_OPERATIONS are recorded as
_UNKNOWN = object()  # an operation not looked up yet (None: looked up, not profiled)


class Profiler(ManagerBase):
    """Times operations (``profile_sync``, ``profile_async``, ``mark_operation``) into per-operation
    windows and the ``bot_operation_duration_seconds`` histogram.

    Off until :meth:`enable`; while off every call returns a shared no-op object, and the query
    methods return empty results. Slow operations are written to ``events`` and alerted with ``alerts``.
    """

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
                 events: EventLog = NO_EVENTS, alerts: Alerter = NO_ALERTS) -> None:
        super().__init__(settings, metrics)
        self._events = events
        self._alerts = alerts
        self.metrics: Metrics | None = metrics
        self._threshold = float("inf")
        self._window = 2048
        self._max_operations = 200
        self._max_age = 24 * 3600.0
        self._wanted: frozenset[str] | None = None
        self._states: dict[str, OperationState | None] = {}  # None: not in PROFILED_OPERATIONS
        self._other: OperationState | None = None  # where names past the cap are recorded
        self._measured = 0  # operations with a state of their own (at most PROFILER_MAX_OPERATIONS)
        self._sync_noops: dict[str, NoopBlock] = {}
        self._async_noops: dict[str, NoopBlock] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def enable(self, settings: Settings | None = None, metrics: Metrics | None = None) -> None:
        settings = self._resolve_settings(settings)
        config = settings.profiler
        with self._lock:
            self.settings = settings
            self.metrics = self._resolve_metrics(metrics)
            self._window = config.window
            self._max_operations = config.max_operations
            self._max_age = config.retention_hours * 3600.0
            self._wanted = frozenset(config.operations) if config.operations else None
            self._states = {}
            self._other = None
            self._measured = 0
            self._threshold = config.threshold
            self.enabled = True
        self.metrics.feature_enabled.labels("profiler").set(1)
        log.info("profiler on: threshold %.3fs, window %d samples, retention %.1fh", config.threshold,
                 config.window, config.retention_hours)

    def disable(self) -> None:
        with self._lock:
            if not self.enabled:
                return
            self.enabled = False
            self._threshold = float("inf")
        if self.metrics is not None:
            self.metrics.feature_enabled.labels("profiler").set(0)

    def reset(self) -> None:
        """Forget every sample and statistic (the histogram's counters keep counting)."""
        with self._lock:
            self._states = {}
            self._other = None
            self._measured = 0

    # ------------------------------------------------------------------ measuring
    def _state(self, name: str) -> OperationState | None:
        with self._lock:
            if name in self._states:
                return self._states[name]
            if not self.enabled or (self._wanted is not None and name not in self._wanted):
                if len(self._states) < 2 * self._max_operations:  # remembered while it is cheap
                    self._states[name] = None
                return None
            if self._measured >= self._max_operations:  # not remembered: memory stays flat
                return self._overflow(name)
            self._measured += 1
            state = self._states[name] = self._new_state(name)
            return state

    def _new_state(self, name: str) -> OperationState:
        from ._stats import OperationState

        state = OperationState(name, self.metrics.operation_duration.labels(name), self._window)
        self.metrics.operation_errors.labels(name)
        self.metrics.slow_operations.labels(name)
        return state

    def _overflow(self, name: str) -> OperationState:
        """The state of ``other`` for a name past PROFILER_MAX_OPERATIONS (lock held)."""
        other = self._other
        if other is None:
            other = self._other = self._new_state(OTHER)
            log.warning("more than %d distinct operations (PROFILER_MAX_OPERATIONS): %r and the "
                        "ones after it are recorded as operation=%r", self._max_operations, name, OTHER)
        self.metrics.operations_overflow.inc()
        return other

    def _noop(self, name: str, asynchronous: bool) -> NoopBlock:
        noops = self._async_noops if asynchronous else self._sync_noops
        if len(noops) >= self._max_operations:
            return NoopBlock(self, name, asynchronous)
        return noops.setdefault(name, NoopBlock(self, name, asynchronous))

    def profile_sync(self, name: str) -> Block | NoopBlock:
        """``with profiler.profile_sync("parse"):`` or ``@profiler.profile_sync("parse")``.

        Exceptions inside are counted (``error_count``) and re-raised."""
        if self.enabled:
            state = self._states.get(name, _UNKNOWN)
            if state is _UNKNOWN:
                state = self._state(name)
            if state is not None:
                return Block(self, state)
        return self._sync_noops.get(name) or self._noop(name, False)

    def profile_async(self, name: str) -> AsyncBlock | NoopBlock:
        """``async with profiler.profile_async("upload"):`` or as a decorator of a coroutine function."""
        if self.enabled:
            state = self._states.get(name, _UNKNOWN)
            if state is _UNKNOWN:
                state = self._state(name)
            if state is not None:
                return AsyncBlock(self, state)
        return self._async_noops.get(name) or self._noop(name, True)

    def mark_operation(self, name: str) -> Timer:
        """A started timer; ``timer.stop()`` records it once and returns its seconds."""
        state = None
        if self.enabled:
            state = self._states.get(name, _UNKNOWN)
            if state is _UNKNOWN:
                state = self._state(name)
        return Timer(name, Block(self, state) if state is not None else None)

    # ------------------------------------------------------------------ results
    def get_stats(self, name: str) -> dict[str, Any] | None:
        """Statistics of one operation (see ``_stats.summarize``), None when it was never measured."""
        state = self._other if name == OTHER and name not in self._states else self._states.get(name)
        return state.stats(self._max_age) if state is not None else None

    def get_all_stats(self) -> dict[str, dict[str, Any]]:
        states = [state for state in list(self._states.values()) + [self._other] if state is not None]
        return {state.name: state.stats(self._max_age) for state in states}

    def get_slow_operations(self, threshold: float | None = None) -> list[dict[str, Any]]:
        """Operations whose slowest retained sample exceeds ``threshold`` (default
        ``PROFILE_THRESHOLD``), slowest average first."""
        if threshold is None:
            settings = self.settings or self._settings_arg
            threshold = settings.profiler.threshold if settings is not None else 1.0
        found = [stats for stats in self.get_all_stats().values() if stats["max_duration"] > threshold]
        return sorted(found, key=lambda stats: stats["average_duration"], reverse=True)

    # ------------------------------------------------------------------ side paths
    def _failed(self, state: OperationState) -> None:
        self.metrics.operation_errors.labels(state.name).inc()

    def _slow(self, state: OperationState, duration: float, failed: bool) -> None:
        """Count, log and (rate-limited) alert one slow run. Never raises."""
        try:
            self.metrics.slow_operations.labels(state.name).inc()
            self._events.log_event("slow_operation", "failure" if failed else "success",
                                   f"{state.name} took {duration:.3f} s (threshold "
                                   f"{self._threshold:.3f} s)", level=logging.WARNING,
                                   duration=duration, operation=state.name)
            now = time.monotonic()
            with state.series.lock:
                due = now - state.last_alert >= SLOW_ALERT_INTERVAL
                if due:
                    state.last_alert = now
                    state.alerting = True
            if due:
                self._alerts.trigger_alert_sync(
                    "slow_operation", "medium", "Slow operation",
                    f"{state.name} took {duration:.3f} s, above the {self._threshold:.3f} s threshold",
                    details={"operation": state.name, "duration_seconds": round(duration, 6),
                             "threshold_seconds": self._threshold})
        except Exception:  # telemetry never breaks the profiled code
            log.exception("slow-operation handling failed for %s", state.name)

    def _in_time(self, state: OperationState) -> None:
        """A run within the threshold after a SLOW_OPERATION alert: the alert is resolved."""
        with state.series.lock:
            resolve, state.alerting = state.alerting, False
        if resolve:
            self._alerts.resolve_alerts_sync("slow_operation", operation=state.name)

