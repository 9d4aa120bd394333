"""Intake of the alert manager: record an alert or its resolution, on the caller's thread.

Secrets are masked first. A repeat of an unresolved alert (same fingerprint) is folded into it:
counted, and notified again only once the dedup window has passed or its severity rose. What is
to be notified goes into one bounded queue (full: dropped and counted) that the worker drains.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .model import FIRING, RESOLVED, Alert, AlertSeverity, AlertType, fingerprint

if TYPE_CHECKING:
    from .._masking import SecretMasker
    from ..metrics import Metrics
    from .persistence import AlertState


class Intake:
    """Records into ``state``; ``wake()`` asks the worker to drain the queue (once per batch)."""

    def __init__(self, state: AlertState, metrics: Metrics, masker: SecretMasker, clock: Callable[[], float], *,
                 window: float, size: int, wake: Callable[[], None]) -> None:
        self.state = state
        self.metrics = metrics
        self.masker = masker
        self.clock = clock
        self.window = window
        self.size = size
        self.wake = wake
        self.queue: deque[tuple[str, Alert]] = deque()
        self.wake_pending = False

    def record(self, kind: AlertType, severity: AlertSeverity, title: str, message: str,
               task_id: str | None, details: dict[str, Any] | None) -> Alert:
        """The alert as recorded (a copy): new, or the earlier one this repeats."""
        title, message = self.masker.mask(str(title)), self.masker.mask(str(message))
        now = self.clock()
        fp = fingerprint(kind, message, task_id)
        self.metrics.alerts.labels(kind.value, severity.value).inc()
        store = self.state.store
        with store.lock:
            store.count(now, kind.value, severity.value)
            existing = store.alerts.get(self.state.by_fingerprint.get(fp, ""))
            if existing is not None and not existing.resolved:
                if not self._repeat(existing, severity, now):
                    return existing.copy()
                alert = existing
            else:
                alert = Alert(type=kind, severity=severity, title=title, message=message, first_seen=now,
                              task_id=task_id, details=self.masker.mask_value(details or {}), fingerprint=fp,
                              notified_at=now)
                self._add(alert)
            snapshot = alert.copy()
        self._enqueue(FIRING, snapshot)
        return snapshot.copy()

    def _repeat(self, existing: Alert, severity: AlertSeverity, now: float) -> bool:
        """Fold a repeat into ``existing`` (store lock held); True when it is to be notified again."""
        metrics = self.metrics
        existing.repeat_count += 1
        existing.last_seen = now
        notified = existing.notified_at or existing.first_seen
        escalated = severity.rank > existing.severity.rank
        if escalated:
            metrics.alerts_active.labels(existing.severity.value).dec()
            metrics.alerts_active.labels(severity.value).inc()
            existing.severity = severity
        self.state.mark(existing.id)
        if not escalated and now - notified < self.window:
            metrics.alerts_deduplicated.labels(existing.type.value).inc()
            return False
        existing.notified_at = now  # window over or severity raised: notify again
        return True

    def _add(self, alert: Alert) -> None:
        """Store a new alert (store lock held); past max_alerts the oldest go and are forgotten."""
        state, metrics = self.state, self.metrics
        for evicted in state.store.add(alert):
            state.unindex(evicted)
            if not evicted.resolved:
                metrics.alerts_active.labels(evicted.severity.value).dec()
        state.by_fingerprint[alert.fingerprint] = alert.id
        state.mark(alert.id)
        metrics.alerts_active.labels(alert.severity.value).inc()

    def resolve(self, key: str) -> Alert | None:
        """Resolve the alert with id or fingerprint ``key``; None when there is no such unresolved one."""
        state = self.state
        with state.store.lock:
            found = state.store.alerts.get(key) or state.store.alerts.get(state.by_fingerprint.get(key, ""))
            if found is None or found.resolved:
                return None
            snapshot = self._mark_resolved(found)
        self._enqueue(RESOLVED, snapshot)
        return snapshot.copy()

    def resolve_matching(self, kind: AlertType, details: dict[str, Any]) -> list[Alert]:
        """Resolve every unresolved alert of ``kind`` whose details hold ``details``."""
        with self.state.store.lock:
            snapshots = [self._mark_resolved(alert) for alert in list(self.state.store.alerts.values())
                         if alert.type is kind and not alert.resolved
                         and all(alert.details.get(k) == v for k, v in details.items())]
        for snapshot in snapshots:
            self._enqueue(RESOLVED, snapshot)
        return [snapshot.copy() for snapshot in snapshots]

    def _mark_resolved(self, alert: Alert) -> Alert:
        """Resolve ``alert`` now (store lock held); its snapshot to notify."""
        alert.resolved_at = self.clock()
        self.state.by_fingerprint.pop(alert.fingerprint, None)
        self.metrics.alerts_active.labels(alert.severity.value).dec()
        self.state.mark(alert.id)
        return alert.copy()

    def _enqueue(self, kind: str, alert: Alert) -> None:
        if len(self.queue) >= self.size:
            self.metrics.alert_notifications.labels("intake", "dropped").inc()
            return
        self.queue.append((kind, alert))
        if not self.wake_pending:
            self.wake_pending = True
            self.wake()

    def take(self) -> Iterator[tuple[str, Alert]]:
        """What is queued, oldest first, until the queue is empty (on the worker)."""
        self.wake_pending = False
        while self.queue:
            yield self.queue.popleft()

    def idle(self) -> bool:
        return not self.queue and not self.wake_pending
