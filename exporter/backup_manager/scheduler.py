"""The in-process scheduler: one asyncio task that runs a scheduled backup every
``BACKUP_FREQUENCY`` (counted from the newest scheduled backup, so restarts do not re-run it).

It runs on the caller's event loop when ``enable()`` is called inside one, otherwise on a
private loop in one daemon thread. The backup itself runs in a worker thread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import OpsError
from ..metrics import Metrics, worker_failed

if TYPE_CHECKING:  # asyncio (~9 MiB) loads when a schedule starts, not on import
    import asyncio

log = logging.getLogger("exporter.backup_manager")

PERIODS = {"hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}
RETRY_AFTER = 300.0  # seconds before a failed scheduled backup is tried again


class Scheduler:
    def __init__(self, period: float, last_run: Callable[[], float | None],
                 job: Callable[[], object], metrics: Metrics) -> None:
        self.period = period
        self._last_run = last_run
        self._job = job
        self._metrics = metrics
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.next_run: float | None = None

    def due_in(self) -> float:
        last = self._last_run()
        self.next_run = time.time() if last is None else last + self.period
        return max(0.0, self.next_run - time.time())

    async def _run(self) -> None:
        import asyncio

        while True:
            try:
                await asyncio.sleep(self.due_in())
                await asyncio.to_thread(self._job)
            except OpsError as exc:  # the job has reported its failure (metric, log, alert)
                log.error("scheduled backup failed: %s", exc)
            except Exception:  # thread boundary: report, keep the schedule
                worker_failed(self._metrics, "backup_scheduler", log, "scheduled backup")
            else:
                continue
            await asyncio.sleep(min(self.period, RETRY_AFTER))

    def start(self) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            self._task = loop.create_task(self._run(), name="opsstack-backup-scheduler")
            return
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(self._run(), name="opsstack-backup-scheduler")
            ready.set()
            try:
                self._loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=main, name="opsstack-backup-scheduler", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        if self._task is None or self._loop is None:
            return
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(timeout=10)
            self._thread = None
        elif not self._loop.is_closed():
            self._task.cancel()
        self._task = None
        self._loop = None
