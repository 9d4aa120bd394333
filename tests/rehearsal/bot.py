"""The rehearsal's bot: run with the installed wheel first on the path, configured by the
environment as a user's bot is (``runtime.start()``), under a steady simulated load.

    python bot.py WORKDIR [--rate LINES_PER_SECOND] [--alert-every S] [--backup-every S]
                          [--tasks-per-second N]

Every second or so it writes ``WORKDIR/stats-<boot>.json`` (atomically): what it logged,
raised, resolved and backed up, and its heartbeat (how late a 10 ms sleep woke up); and it
appends its RSS, open file descriptors and threads to ``WORKDIR/resources-<boot>.jsonl``.
SIGTERM stops it cleanly (the last stats are written after ``runtime.stop()``). Each start
is a new *boot*, numbered in ``WORKDIR/boots``.

It also starts downloads that a Celery worker finishes (``rehearsal_celery``, next to this
script): each sent inside a span, after a log line in it, and appended to ``WORKDIR/sent.jsonl``
once the broker took it. A send the broker refused is retried with the same task id.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import exporter
from exporter import runtime, tracing
from exporter.alert_manager import AlertSeverity, AlertType, alert_manager
from exporter.backup_manager import backup_manager
from exporter.errors import OpsError
from exporter.profiler import profiler
from rehearsal_celery import DOWNLOAD_TASK, app

log = logging.getLogger("bot.rehearsal")
HEARTBEAT = 0.01  # seconds the heartbeat sleeps
STALL = 0.1  # a wake-up later than this is a stall
LATENESS_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 1000)


def write_json(path: Path, data: object) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


def queued_for_cpu() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (the kernel's run_delay):
    on a machine with more runnable processes than cores a wake-up is late by this much without
    any fault of the bot's. Waiting for the GIL or a lock is sleeping, not queued, and still shows."""
    with open("/proc/thread-self/schedstat", "rb") as stat:
        return int(stat.read().split()[1]) / 1e9


def next_boot(workdir: Path) -> int:
    counter = workdir / "boots"
    boot = int(counter.read_text()) + 1 if counter.exists() else 1
    write_json(counter, boot)
    return boot


def resources() -> dict:
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/status") as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return {"t": time.time(), "rss": rss, "fds": len(os.listdir("/proc/self/fd")), "threads": threads}


class Bot:
    def __init__(self, workdir: Path, options: argparse.Namespace) -> None:
        self.workdir, self.options = workdir, options
        self.boot = next_boot(workdir)
        self.started = time.time()
        self.lines = 0
        self.raised: list[dict] = []
        self.backups: list[dict] = []
        self.lateness = dict.fromkeys([*map(str, LATENESS_BUCKETS_MS), "inf"], 0)
        self.stalls: list[list[float]] = []  # [wall time, seconds late]
        self.tasks_sent = 0
        self.send_failures: list[list] = []  # [wall time, error type], the first 100
        self.send_failure_count = 0
        # One line per second, kept on disk: the bot's own bookkeeping must not grow the RSS it measures.
        self.samples = open(workdir / f"resources-{self.boot}.jsonl", "a")
        # The stats are written by a thread of their own: in the loop's default pool, a write
        # that overlapped a backup made the pool start another thread at that random moment,
        # counted by the resource check as if the product had started it.
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rehearsal-stats")
        self.stop = asyncio.Event()

    async def load(self) -> None:
        """Simulated work: a log line per operation (an ERROR now and then), profiled."""
        interval = 1.0 / self.options.rate
        while True:
            async with profiler.profile_async("rehearsal_op"):
                self.lines += 1
                if self.lines % 500 == 0:
                    log.error("op b%d-%d failed: peer reset the connection", self.boot, self.lines)
                else:
                    log.info("op b%d-%d done", self.boot, self.lines)
            await asyncio.sleep(interval)

    async def alerts(self) -> None:
        """A HIGH alert now and then (routed to every channel); every second one is resolved later."""
        number = 0
        while True:
            await asyncio.sleep(self.options.alert_every)
            number += 1
            task = f"rh-{self.boot}-{number}"
            alert = await alert_manager.trigger_alert(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH,
                                                      "Rehearsal download failed",
                                                      "peer reset the connection", task_id=task)
            self.raised.append({"task_id": task, "fingerprint": alert.fingerprint, "resolved": False})
            if number % 2 == 0:
                earlier = self.raised[-2]
                if alert_manager.resolve_alert(earlier["fingerprint"]) is not None:
                    earlier["resolved"] = True

    async def backups_loop(self) -> None:
        """The bot's own schedule (``BACKUP_SCHEDULER=celery`` leaves it to the bot): what beat runs."""
        while True:
            await asyncio.sleep(self.options.backup_every)
            entry = {"t": time.time()}
            try:
                result = await asyncio.to_thread(backup_manager.run_scheduled_backup)
                entry.update(ok=True, name=result["backup_name"], verified=result["verified"],
                             deleted=result["deleted"])
            except OpsError as exc:
                log.error("scheduled backup failed: %s", exc)
                entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            entry["finished"] = time.time()
            self.backups.append(entry)

    def send_download(self, name: str, sent) -> None:
        """On a worker thread: the send, then its record (no disk write on the loop)."""
        with tracing.span("rehearsal.download", download=name):
            log.info("download %s queued", name)
            app.send_task(DOWNLOAD_TASK, args=(name, 4096), task_id=name)
        sent.write(json.dumps({"id": name, "t": time.time()}) + "\n")
        sent.flush()

    async def downloads(self) -> None:
        """A steady trickle of downloads for the worker; one that the broker did not take is sent
        again (same id) until it does, so a task is counted as sent once Redis has it."""
        interval, number = 1.0 / self.options.tasks_per_second, 0
        with open(self.workdir / "sent.jsonl", "a") as sent:
            while True:
                number += 1
                name = f"dl-{self.boot}-{number}"
                while True:
                    try:
                        await asyncio.to_thread(self.send_download, name, sent)
                        break
                    except Exception as exc:  # kombu and redis raise many kinds while the broker is down
                        self.send_failure_count += 1
                        log.warning("download %s not taken by the broker: %s", name, type(exc).__name__)
                        if len(self.send_failures) < 100:
                            self.send_failures.append([time.time(), type(exc).__name__])
                        await asyncio.sleep(1.0)
                self.tasks_sent += 1
                await asyncio.sleep(interval)

    async def heartbeat(self) -> None:
        queued = queued_for_cpu()
        while True:
            before, queued_before = time.monotonic(), queued
            await asyncio.sleep(HEARTBEAT)
            late = time.monotonic() - before - HEARTBEAT
            queued = queued_for_cpu()
            bucket = next((str(b) for b in LATENESS_BUCKETS_MS if late * 1000 <= b), "inf")
            self.lateness[bucket] += 1
            if late > STALL:
                self.stalls.append([time.time(), late, queued - queued_before])

    async def allocations(self) -> None:
        """With REHEARSAL_TRACEMALLOC set: every minute, the 25 places whose allocations grew most
        since the first minute, to ``WORKDIR/tracemalloc-<boot>.txt`` (to find what grows)."""
        import tracemalloc

        tracemalloc.start(int(os.environ["REHEARSAL_TRACEMALLOC"]))
        await asyncio.sleep(60)
        first = tracemalloc.take_snapshot()
        traced = tracemalloc.get_traced_memory()[0]
        while True:
            await asyncio.sleep(60)
            grown = tracemalloc.take_snapshot().compare_to(first, "traceback")[:25]
            now = tracemalloc.get_traced_memory()[0]
            # traced (Python) growth against RSS growth: what is left is native memory
            lines = [f"traced by tracemalloc: {traced / 1e6:.2f} MB -> {now / 1e6:.2f} MB, "
                     f"RSS {resources()['rss'] / 1e6:.1f} MB\n"]
            lines += [f"{stat.size_diff / 1e6:+.2f} MB {stat.count_diff:+d} blocks\n  "
                      + "\n  ".join(stat.traceback.format()) for stat in grown]
            (self.workdir / f"tracemalloc-{self.boot}.txt").write_text("\n".join(lines) + "\n")

    async def report(self) -> None:
        while True:
            self.samples.write(json.dumps(resources()) + "\n")
            self.samples.flush()
            await asyncio.get_running_loop().run_in_executor(self.writer, self.write_stats, False)
            await asyncio.sleep(1.0)

    def write_stats(self, final: bool, alerts: list[dict] | None = None) -> None:
        write_json(self.workdir / f"stats-{self.boot}.json", {
            "boot": self.boot, "pid": os.getpid(), "exporter_file": exporter.__file__,
            "started": self.started, "written": time.time(), "final": final, "lines": self.lines,
            "raised": self.raised, "backups": self.backups, "lateness_ms": self.lateness,
            "stalls": self.stalls, "alerts": alerts, "tasks_sent": self.tasks_sent,
            "send_failures": self.send_failures, "send_failure_count": self.send_failure_count,
            "threads": sorted(thread.name for thread in threading.enumerate()),
        })

    async def run(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.stop.set)
        work = [self.load(), self.alerts(), self.backups_loop(), self.downloads(), self.heartbeat(), self.report()]
        if os.environ.get("REHEARSAL_TRACEMALLOC"):
            work.append(self.allocations())
        tasks = [asyncio.create_task(coroutine) for coroutine in work]
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.writer.shutdown()
        self.samples.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--rate", type=float, default=50.0, help="operations (log lines) per second")
    parser.add_argument("--alert-every", type=float, default=6.0)
    parser.add_argument("--backup-every", type=float, default=20.0)
    parser.add_argument("--tasks-per-second", type=float, default=3.0, help="downloads sent to the worker")
    options = parser.parse_args()
    bot = Bot(options.workdir, options)
    handle = runtime.start()
    try:
        asyncio.run(bot.run())
        alerts = [alert.to_dict() for alert in alert_manager.get_alerts(limit=None)]
    finally:
        handle.stop()
    bot.write_stats(True, alerts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
