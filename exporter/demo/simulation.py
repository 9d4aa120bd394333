"""A simulated bot: downloads, uploads, API calls, slow jobs, backups and integrity checks.

Everything it does goes through the public API a real bot would use, so the logs, metrics,
alerts, backups and spans it produces are the real thing. Time is compressed: a "2 GB
download" takes a second of sleep.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..alert_manager import AlertSeverity, AlertType, alert_manager
from ..backup_manager import backup_manager
from ..config import Settings
from ..errors import OpsError
from ..logger_manager import logger_manager
from ..profiler import profiler
from ..recovery_manager import recovery_manager
from .workspace import create_workspace, record_transfer

log = logging.getLogger("bot.demo")

FILE_KINDS = ("video.mp4", "archive.zip", "photo.jpg", "document.pdf", "music.flac")
API_METHODS = ("getUpdates", "sendMessage", "sendDocument", "getFile", "editMessageText")


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None = 60.0  # seconds; None runs until Ctrl-C
    rate: float = 4.0              # transfers started per second
    seed: int = 7
    workers: int = 4
    backup_interval: float = 20.0
    integrity_interval: float = 15.0
    status_interval: float = 10.0
    failures_for: float | None = None  # seconds failures are injected; None: the whole run


@dataclass
class Tally:
    downloads_ok: int = 0
    downloads_failed: int = 0
    uploads_ok: int = 0
    uploads_failed: int = 0
    api_calls: int = 0
    api_errors: int = 0
    slow_jobs: int = 0
    backups: int = 0
    backup_failures: int = 0
    integrity_checks: int = 0
    repairs: int = 0


class DemoBot:
    def __init__(self, settings: Settings, options: DemoOptions, data_dir: Path) -> None:
        self.settings = settings
        self.options = options
        self.rng = random.Random(options.seed)
        self.paths = create_workspace(data_dir, self.rng)
        self.tally = Tally()
        self.task_ids = itertools.count(1)
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=100)
        self.started = time.monotonic()
        self.firing: set[tuple[AlertType, str]] = set()  # alerts this bot raised: (type, direction/method)

    def failing(self) -> bool:
        """Whether failures are still injected (``--failures-for``)."""
        limit = self.options.failures_for
        return limit is None or time.monotonic() - self.started < limit

    def cleared(self, kind: AlertType, where: str) -> None:
        """A success: the alerts of ``kind`` raised for ``where`` (a direction, an API method) clear."""
        if (kind, where) in self.firing:
            self.firing.discard((kind, where))
            alert_manager.resolve_alerts_sync(kind, where=where)

    # ------------------------------------------------------------------ transfers
    async def transfer(self, direction: str) -> None:
        task_id = f"{direction}_{next(self.task_ids)}"
        filename = f"{task_id}_{self.rng.choice(FILE_KINDS)}"
        size = int(self.rng.lognormvariate(17, 1.5))  # ~24 MB median, long tail into GBs
        seconds = min(3.0, 0.05 + size / 1.5e9)
        fails = self.rng.random() < 0.08 and self.failing()
        kind = AlertType.DOWNLOAD_FAILED if direction == "download" else AlertType.UPLOAD_FAILED
        started = time.monotonic()
        status = "completed"
        try:
            async with profiler.profile_async(direction):
                await asyncio.sleep(seconds)
                if fails:
                    raise ConnectionError(f"peer reset the connection during {direction}")
        except ConnectionError as exc:
            status = "failed"
            log.warning("%s %s failed: %s", direction, task_id, exc)
            await alert_manager.trigger_alert(kind, AlertSeverity.HIGH, f"{direction.capitalize()} failed", str(exc),
                                              task_id=task_id, details={"filename": filename, "where": direction})
            self.firing.add((kind, direction))
        else:  # the peer answers again: a transfer that completes clears the failed ones
            self.cleared(kind, direction)
        duration = time.monotonic() - started
        event = logger_manager.log_download if direction == "download" else logger_manager.log_upload
        event(task_id=task_id, filename=filename, size_bytes=size, duration=duration,
              speed=size / duration if duration else 0.0, status=status)
        record_transfer(self.paths["database"], task_id, direction, filename, size, status, time.time())
        ok = status == "completed"
        if direction == "download":
            self.tally.downloads_ok += ok
            self.tally.downloads_failed += not ok
        else:
            self.tally.uploads_ok += ok
            self.tally.uploads_failed += not ok

    async def api_call(self) -> None:
        method = self.rng.choice(API_METHODS)
        roll = self.rng.random()
        started = time.monotonic()
        status, code = "success", 200
        async with profiler.profile_async("api_call"):
            await asyncio.sleep(self.rng.uniform(0.005, 0.08))
        with profiler.profile_sync("parse_update"):
            json.loads(json.dumps({"update_id": self.tally.api_calls, "method": method}))
        if not self.failing():
            roll = 1.0
        if roll < 0.03:
            status, code = "failure", 429
            await self.api_alert(AlertType.RATE_LIMITED, "Rate limited by the Bot API", method,
                                 f"{method} answered 429: retry after 3 s")
        elif roll < 0.07:
            status, code = "failure", 502
            await self.api_alert(AlertType.API_ERROR, "Bot API error", method, f"{method} answered 502 Bad Gateway")
        else:  # the method answers again: its rate limit and errors clear
            self.cleared(AlertType.RATE_LIMITED, method)
            self.cleared(AlertType.API_ERROR, method)
        logger_manager.log_api_call(method=method, duration=time.monotonic() - started, status=status,
                                    status_code=code)
        self.tally.api_calls += 1
        self.tally.api_errors += status != "success"

    async def api_alert(self, kind: AlertType, title: str, method: str, message: str) -> None:
        await alert_manager.trigger_alert(kind, AlertSeverity.MEDIUM, title, message, details={"where": method})
        self.firing.add((kind, method))

    async def slow_job(self) -> None:
        threshold = self.settings.profiler.threshold
        factor = self.rng.uniform(1.1, 1.6)  # slow while failures are injected, then in time
        async with profiler.profile_async("generate_thumbnails"):
            await asyncio.sleep(threshold * (factor if self.failing() else factor / 4))
        self.tally.slow_jobs += 1

    async def worker(self) -> None:
        while True:
            kind = await self.queue.get()
            try:
                if kind == "api":
                    await self.api_call()
                elif kind == "slow":
                    await self.slow_job()
                else:
                    await self.transfer(kind)
            finally:
                self.queue.task_done()

    async def producer(self) -> None:
        kinds = ["download"] * 5 + ["upload"] * 3 + ["api"] * 6 + ["slow"]
        while True:
            await self.queue.put(self.rng.choice(kinds))
            await asyncio.sleep(self.rng.expovariate(self.options.rate))

    # ------------------------------------------------------------------ operations
    async def backups(self) -> None:
        sources = [str(self.paths["data"])]
        for round_number in itertools.count(1):
            try:
                result = await backup_manager.create_backup(
                    source_paths=sources, backup_name=None,
                    description=f"demo scheduled backup #{round_number}")
                backup_manager.verify_backup(result["backup_name"])
                self.tally.backups += 1
                if self.tally.backups % 5 == 1:  # a restore drill of the first good backup, every fifth after
                    await backup_manager.drill_backup(result["backup_name"])
                backup_manager.apply_retention()  # the demo keeps BACKUP_RETENTION's manual count
            except OpsError as exc:  # the demo shows failures, it does not die of them
                log.error("scheduled backup failed: %s", exc)
                self.tally.backup_failures += 1
            await asyncio.sleep(self.options.backup_interval)

    async def integrity(self) -> None:
        critical = [str(self.paths["config"]), str(self.paths["media"])]
        await asyncio.sleep(min(5.0, self.options.integrity_interval))
        while True:
            if self.tally.backups and self.rng.random() < 0.5 and self.failing():
                self.damage_a_file()
            report = await recovery_manager.auto_recover(critical_paths=critical,
                                                         backup_dir=str(self.settings.backups.dir))
            self.tally.integrity_checks += 1
            self.tally.repairs += len(report.get("repaired_paths", []))
            await asyncio.sleep(self.options.integrity_interval)

    def damage_a_file(self) -> None:
        victim = self.rng.choice(sorted(self.paths["media"].glob("*.bin")))
        data = bytearray(victim.read_bytes())
        data[self.rng.randrange(len(data))] ^= 0xFF
        victim.write_bytes(bytes(data))
        log.warning("demo: flipped a byte in %s to show auto-recovery", victim.name)

    async def status(self) -> None:
        while True:
            await asyncio.sleep(self.options.status_interval)
            print(self.status_line(), flush=True)

    def status_line(self) -> str:
        t = self.tally
        return (f"[demo] downloads {t.downloads_ok} ok / {t.downloads_failed} failed, uploads "
                f"{t.uploads_ok} ok / {t.uploads_failed} failed, API calls {t.api_calls} "
                f"({t.api_errors} errors), slow jobs {t.slow_jobs}, backups {t.backups} "
                f"({t.backup_failures} failed), integrity checks {t.integrity_checks}, "
                f"repairs {t.repairs}")

    async def run(self) -> Tally:
        tasks = [asyncio.create_task(self.producer(), name="producer")]
        tasks += [asyncio.create_task(self.worker(), name=f"worker-{n}") for n in range(self.options.workers)]
        tasks += [asyncio.create_task(coroutine, name=coroutine.__name__)
                  for coroutine in (self.backups(), self.integrity(), self.status())]
        try:
            if self.options.duration is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(self.options.duration)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.tally


async def run_demo(bot: DemoBot) -> Tally:
    tally = await bot.run()
    print(bot.status_line(), flush=True)
    return tally
