"""The in-process scheduler: one asyncio task per job, e.g. a scheduled backup every
``BACKUP_FREQUENCY`` and a restore drill every ``BACKUP_DRILL_INTERVAL``, each counted from its
last run as recorded on disk (so restarts do not re-run it).

It runs on the caller's event loop when ``enable()`` is called inside one, otherwise on a
private loop in one daemon thread. The jobs themselves run in worker threads.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import OpsError
from ..metrics import worker_failed

if TYPE_CHECKING:  # asyncio (~9 MiB) loads when a schedule starts, not on import
    import asyncio

    from ..metrics import Metrics

log = logging.getLogger("exporter.backup_manager")

PERIODS = {"hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}


def backup_interval(settings: Any) -> float:
    """Seconds between scheduled backups: ``BACKUP_FREQUENCY`` when ``CRITICAL_BACKUP_PATHS``
    are set (the in-process scheduler or Celery beat runs them), else 0 (none scheduled)."""
    return PERIODS[settings.backups.frequency] if settings.backups.critical_paths else 0.0


class Job:
    """``run`` every ``period`` seconds after ``last_run()`` (None: never ran, so now)."""

    def __init__(self, name: str, period: float, last_run: Callable[[], float | None],
                 run: Callable[[], object]) -> None:
        self.name, self.period, self._last_run, self._run = name, period, last_run, run
        self.next_run: float | None = None

    def due_in(self) -> float:
        last = self._last_run()
        self.next_run = time.time() if last is None else last + self.period
        return max(0.0, self.next_run - time.time())

    async def loop(self, metrics: Metrics) -> None:
        import asyncio

        while True:
            try:
                await asyncio.sleep(self.due_in())
                await asyncio.to_thread(self._run)
                if self.due_in() > 0:
                    continue
            except OpsError as exc:  # the job has reported its failure (metric, log, alert)
                log.error("scheduled %s failed: %s", self.name, exc)
            except Exception:  # thread boundary: report, keep the schedule
                worker_failed(metrics, "backup_scheduler", log, f"scheduled {self.name}")
            await asyncio.sleep(min(self.period, 300.0))  # failed, or nothing to do yet: look again later


class Scheduler:
    def __init__(self, jobs: list[Job], metrics: Metrics) -> None:
        self.jobs = {job.name: job for job in jobs}
        self._metrics = metrics
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def next_run(self, name: str) -> float | None:
        job = self.jobs.get(name)
        return job.next_run if job is not None else None

    def _create_tasks(self) -> None:
        self._tasks = [self._loop.create_task(job.loop(self._metrics), name=f"opsstack-scheduled-{job.name}")
                       for job in self.jobs.values()]

    def start(self) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            self._create_tasks()
            return
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._create_tasks()
            ready.set()
            try:  # returns once every task has been cancelled
                self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=main, name="opsstack-backup-scheduler", daemon=True)
        self._thread.start()
        ready.wait()

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    def stop(self) -> None:
        if not self._tasks or self._loop is None:
            return
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._cancel_tasks)
            self._thread.join(timeout=10)
            self._thread = None
        elif not self._loop.is_closed():
            self._cancel_tasks()
        self._tasks = []
        self._loop = None
