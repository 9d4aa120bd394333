"""What the alert manager keeps: the alerts (in memory, appended to the history file), the index
of unresolved alerts by fingerprint, the outbox of notifications not yet delivered, and the
loop that writes them at most every 0.2 s while they change, prunes hourly and compacts the history."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AlertError
from ..metrics import worker_failed
from .model import Alert, AlertSeverity

if TYPE_CHECKING:
    import asyncio

    from ..config import Settings
    from ..metrics import Metrics
    from .delivery import Job, Outbox
    from .store import AlertStore, HistoryFile

log = logging.getLogger("exporter.alert_manager")

COMPACT_SLACK_LINES = 10_000  # history lines beyond two per alert before the file is rewritten
PERSIST_INTERVAL = 0.2  # seconds between two writes of what changed
PRUNE_INTERVAL = 3600.0  # seconds between two prunes of alerts past ALERT_RETENTION_HOURS


class AlertState:
    """The alerts, their index and the outbox, read from ``STATE_DIR`` by :meth:`open`.

    Who changes an alert holds ``store.lock`` and calls :meth:`mark` with its id; :meth:`write_history`
    appends those to the history file. A lane that changes the outbox calls ``outbox.mark()``.
    Either wakes :meth:`run` when it sleeps for want of changes."""

    def __init__(self, store: AlertStore, history: HistoryFile, outbox: Outbox, metrics: Metrics,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.history = history
        self.outbox = outbox
        self.metrics = metrics
        self.clock = clock
        self.by_fingerprint = {a.fingerprint: a.id for a in store.alerts.values() if not a.resolved}
        self.dirty: set[str] = set()
        self._asleep = False  # run() waits for a change (set True under store.lock, by run() only)
        self._changed: asyncio.Event | None = None  # what run() waits on, once it runs
        self._wakeup: Callable[[], None] | None = None  # sets it from another thread
        outbox.on_change = self._outbox_changed

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics, clock: Callable[[], float],
             max_alerts: int) -> tuple[AlertState, list[Job]]:
        """Load the history and the outbox: the state, and the jobs the outbox held for the lanes
        (AlertError naming ``STATE_DIR`` when it cannot be used)."""
        from .delivery import Outbox
        from .store import HISTORY_FILE, OUTBOX_FILE, AlertStore, HistoryFile, ensure_state_dir

        state_dir = Path(settings.general.state_dir)
        store = AlertStore(settings.alerts.retention_hours, max_alerts)
        try:
            ensure_state_dir(state_dir)
            store.load(state_dir / HISTORY_FILE, clock())
            history = HistoryFile(state_dir / HISTORY_FILE, store, COMPACT_SLACK_LINES).open()
            outbox = Outbox(state_dir / OUTBOX_FILE)
            saved_jobs = outbox.load()
        except OSError as exc:
            raise AlertError(f"cannot keep alert state in {state_dir} (STATE_DIR): {exc.strerror}") from exc
        state = cls(store, history, outbox, metrics, clock)
        state.refresh_active()
        return state, saved_jobs

    def unindex(self, alert: Alert) -> None:
        """Drop the fingerprint entry of ``alert``, gone from the store (the caller holds its lock)."""
        if self.by_fingerprint.get(alert.fingerprint) == alert.id:
            del self.by_fingerprint[alert.fingerprint]

    def mark(self, alert_id: str) -> None:
        """Have the alert ``alert_id`` appended to the history (the caller holds ``store.lock``)."""
        self.dirty.add(alert_id)
        if self._asleep:
            self._asleep = False
            self._wakeup()

    def _outbox_changed(self) -> None:
        """``outbox.mark()``, on the worker's loop: wake :meth:`run` if it sleeps, directly (no
        lock: only this thread sets ``_asleep``; a :meth:`mark` meanwhile at most wakes it twice)."""
        if self._asleep:
            self._asleep = False
            self._changed.set()

    def _sleep_unless_changed(self) -> bool:
        """True, and :meth:`mark` or ``outbox.mark()`` will wake :meth:`run`, when nothing is to be written."""
        with self.store.lock:
            self._asleep = not self.dirty and not self.outbox.dirty
            return self._asleep

    def write_history(self) -> None:
        """Append the alerts changed since the last call."""
        store = self.store
        with store.lock:
            dirty, self.dirty = self.dirty, set()
            records = [store.alerts[i].to_dict() for i in dirty if i in store.alerts]
        self.history.append(records)

    def refresh_active(self) -> None:
        """Set ``bot_alerts_active`` from the store."""
        counts = {severity: 0 for severity in AlertSeverity}
        for alert in self.store.alerts.values():
            if not alert.resolved:
                counts[alert.severity] += 1
        for severity, count in counts.items():
            self.metrics.alerts_active.labels(severity.value).set(count)

    def update_queue_gauge(self) -> None:
        self.metrics.alert_delivery_queue.set(self.outbox.pending())

    def prune(self) -> None:
        store = self.store
        with store.lock:
            gone = store.prune(self.clock())
            for alert in gone:
                self.unindex(alert)
        if gone:
            self.history.compact()
            self.refresh_active()

    def save(self) -> None:
        """Write what changed and the whole outbox, compacted (on the way out)."""
        self.write_history()
        self.outbox.save(compact=True)

    async def run(self) -> None:
        """While alerts or the outbox change: every 0.2 s, append the changed alerts and save the
        outbox if it changed. While nothing changes it sleeps until something does (a timer five
        times a second was most of the worker's CPU in a bot raising an alert every few seconds),
        waking to prune hourly."""
        import asyncio

        loop = asyncio.get_running_loop()
        changed = self._changed = asyncio.Event()
        self._wakeup = lambda: loop.call_soon_threadsafe(changed.set)
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(PERSIST_INTERVAL)
            try:
                self.write_history()
                if self.outbox.dirty:
                    self.outbox.save()
                self.update_queue_gauge()
                if time.monotonic() - last_prune > PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    self.prune()
                elif self.history.oversized():
                    self.history.compact()  # repeats append snapshots; keep about one line per alert
            except OSError as exc:
                log.warning("alert state could not be written: %s", exc)
            except Exception:  # task boundary: report, keep persisting
                worker_failed(self.metrics, "alert_persistence", log, "saving the alert state")
            if self._sleep_unless_changed():
                changed.clear()
                prune = loop.call_later(max(0.0, last_prune + PRUNE_INTERVAL - time.monotonic()), changed.set)
                try:
                    await changed.wait()
                finally:
                    prune.cancel()

    def close(self) -> None:
        self.history.close()
