"""One rehearsal: start the stack, play the faults under load, stop, check, report."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

from . import checks, checks_celery, faults
from .stack import Stack

SCRAPE_EVERY = 2.0


def checkpoint_after(duration: float) -> float:
    """When, after the bot's start, its resources are first read for the leak check: the fifth
    minute, or in a short rehearsal the 90th second (its RSS climbs for about a minute while
    pools, arenas and the first backup's buffers fill, then stays flat)."""
    return 300.0 if duration >= 15 * 60 else 90.0


class Scraper(threading.Thread):
    """Scrapes the bot's /metrics as Prometheus would, timing each answer; only while the bot
    is up and running (not while it is killed, restarting or suspended on purpose)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="rehearsal-scraper", daemon=True)
        self.stack = stack
        self.seconds: list[float] = []
        self.failures: list[dict] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SCRAPE_EVERY):
            bot = self.stack.bot
            boot, state = bot.boots, bot.state
            if state != "running":
                continue
            started = time.monotonic()
            try:
                with urllib.request.urlopen(bot.metrics_url, timeout=5) as response:
                    response.read()
            except OSError as exc:
                if bot.state == "running" and bot.boots == boot:  # not a fault played meanwhile
                    self.failures.append({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"})
                continue
            if bot.state == "running" and bot.boots == boot:
                self.seconds.append(time.monotonic() - started)


def read_boots(stack: Stack) -> list[dict]:
    """Each bot start's stats, with its resource samples."""
    paths = sorted((stack.work / "bot").glob("stats-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    boots = [json.loads(path.read_text()) for path in paths]
    for boot in boots:
        samples = (stack.work / "bot" / f"resources-{boot['boot']}.jsonl").read_text().splitlines()
        boot["resources"] = [json.loads(line) for line in samples if line.endswith("}")]
    return boots


# Seconds the worker gets after the bot's stop to finish what it was sent: more than a message
# held at the last worker kill needs to come back (the visibility timeout, 20 s, then kombu's next
# sweep of unacked messages, 10 s, then its turn in the backlog).
DRAIN_TIMEOUT = 120.0


def drain(stack: Stack) -> float:
    """Wait until the worker ran every download the bot sent (or the timeout); the seconds waited."""
    sent = set(faults.sent_ids(stack))
    started = time.monotonic()
    faults.wait_for(lambda: sent <= {task["id"] for task in faults.tasks_done(stack)}, DRAIN_TIMEOUT, 1.0)
    return round(time.monotonic() - started, 1)


def rehearse(work: Path, duration: float, rate: float = 50.0, backup_every: float = 20.0,
             tasks_per_second: float = 3.0) -> dict:
    warmup = checkpoint_after(duration)
    stack = Stack(work)
    try:
        stack.start(rate, backup_every, tasks_per_second)
        started = time.time()
        scraper = Scraper(stack)
        scraper.start()
        played = faults.play(stack, duration, started)
        time.sleep(max(0.0, started + duration - time.time()))
        stack.proxy.set_mode("pass")
        exit_code = stack.bot.terminate()
        scraper.done.set()
        scraper.join()
        drained = drain(stack)
        stack.celery.stop()  # beat and the worker flush their logs at a warm shutdown
        boots = read_boots(stack)
        final = boots[-1]
        raised = [entry for boot in boots for entry in boot["raised"]]
        results = {
            "logs": checks.check_logs(stack, played),
            "alerts": checks.check_alerts(stack, final.get("alerts") or [], raised),
            "backups": checks.check_backups(stack, played, boots, final.get("alerts") or []),
            "recovery": checks.check_recovery(stack, played),
            "resources": checks.check_resources(boots, warmup, scraper.seconds, len(scraper.failures), played),
            "celery_tasks": checks_celery.check_tasks(stack, played),
            "celery_beat": checks_celery.check_beat(stack, played),
            "trace": checks_celery.check_trace(stack),
        }
        verdicts = [checks.verdict("the bot ran the installed wheel",
                                   all("/site/exporter/" in boot["exporter_file"] for boot in boots),
                                   boots[-1]["exporter_file"], "under the wheel's install directory"),
                    checks.verdict("the bot stopped cleanly on the last SIGTERM", exit_code == 0 and final["final"],
                                   exit_code, "exit 0, final stats written")]
        for _, found in results.values():
            verdicts += found
        return {
            "started": started, "duration_s": round(time.time() - started), "planned_duration_s": duration,
            "warmup_s": warmup, "load": {"lines_per_second": rate, "backup_every_s": backup_every,
                                          "lines_logged": sum(boot["lines"] for boot in boots), "boots": len(boots),
                                          "tasks_per_second": tasks_per_second,
                                          "task_send_failures": sum(boot.get("send_failure_count", 0) for boot in boots),
                                          "worker_drain_s": drained},
            "faults": [{**fault, "offset_s": round(fault["start"] - started), "took_s": round(fault["end"] - fault["start"], 1)}
                       for fault in played],
            "figures": {name: figures for name, (figures, _) in results.items()},
            "scrape_failures": scraper.failures[:20], "proxy": dict(stack.proxy.counts),
            "verdicts": verdicts, "ok": all(v["ok"] for v in verdicts),
        }
    finally:
        stack.stop()
