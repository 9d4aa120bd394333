"""The fault schedule: each fault is played on the live stack and recorded with its window.

A cycle of ``CYCLE`` seconds plays every fault once; a longer rehearsal repeats the cycle. The
5-minute version is one cycle.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .stack import Stack

CYCLE = 300.0


def wait_for(predicate: Callable[[], object], timeout: float, step: float = 0.25) -> object:
    """Poll ``predicate`` until it returns something true or ``timeout`` passes (then its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def bot_stats(stack: Stack) -> dict:
    """The running boot's stats file (empty before its first one)."""
    path = stack.work / "bot" / f"stats-{stack.bot.boots}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def backups_of_boot(stack: Stack) -> list[dict]:
    return bot_stats(stack).get("backups", [])


def es_429_whole(stack: Stack, note: dict) -> None:
    stack.proxy.set_mode("reject")
    time.sleep(15)
    stack.proxy.set_mode("pass")
    note["rejected_requests"] = stack.proxy.counts["rejected_requests"]


def es_429_partial(stack: Stack, note: dict) -> None:
    stack.proxy.set_mode("partial")
    time.sleep(15)
    stack.proxy.set_mode("pass")
    note["rejected_items"] = stack.proxy.counts["rejected_items"]


def es_sigkill(stack: Stack, note: dict) -> None:
    stack.es.process.kill()
    time.sleep(5)
    started = time.monotonic()
    stack.es.start()
    note["restart_seconds"] = round(time.monotonic() - started, 1)


def collector_and_alertmanager_down(stack: Stack, note: dict) -> None:
    stack.collector.stop()
    stack.am.stop()
    time.sleep(20)
    stack.collector.restart()
    stack.am.start()


def bot_sigkill(stack: Stack, note: dict) -> None:
    note["lines_before"] = bot_stats(stack).get("lines")
    stack.bot.kill()
    note["killed_at"] = time.time()
    stack.bot.start()


def bot_sigterm(stack: Stack, note: dict) -> None:
    note["exit_code"] = stack.bot.terminate()
    stack.bot.start()


def tasks_done(stack: Stack) -> list[dict]:
    """What the worker recorded of the downloads it finished (a line per run)."""
    path = stack.celery.records / "done.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith(b"}")]


def sent_ids(stack: Stack) -> list[str]:
    """The downloads the bot sent (Redis took them), in order, every boot's."""
    path = stack.work / "bot" / "sent.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line)["id"] for line in lines if line.endswith(b"}")]


def _done_since(stack: Stack, moment: float) -> bool:
    return any(task["t"] > moment for task in tasks_done(stack)[-20:])


def worker_sigkill(stack: Stack, note: dict) -> None:
    """SIGKILL the Celery worker (its pool child with it) under the trickle of downloads; the
    message it held comes back from Redis after the visibility timeout."""
    note["done_before"] = len(tasks_done(stack))
    stack.celery.worker.kill()
    note["killed_at"] = time.time()
    time.sleep(5)
    stack.celery.start_worker()
    note["done_again"] = bool(wait_for(lambda: _done_since(stack, note["killed_at"]), 60))


def redis_restart(stack: Stack, note: dict) -> None:
    """Stop Redis (SIGTERM: it writes its append-only file) for 10 s and start it on the same
    port: the bot's sends fail meanwhile and are retried, beat's sends of that time are skipped."""
    stack.celery.redis.stop()
    note["stopped_at"] = time.time()
    time.sleep(10)
    stack.celery.redis.start()
    note["started_at"] = time.time()
    note["done_again"] = bool(wait_for(lambda: _done_since(stack, note["started_at"]), 60))


def clock_jump(stack: Stack, note: dict) -> None:
    """Suspend the bot for longer than its backup interval, then resume it: its clock jumps."""
    before = len(backups_of_boot(stack))
    note["suspended_at"] = time.time()
    stack.bot.suspend()
    time.sleep(stack.bot.backup_every + 5)
    stack.bot.resume()
    note["resumed_at"] = time.time()
    time.sleep(stack.bot.backup_every)
    note["backups_in_one_interval_after_resume"] = len(backups_of_boot(stack)) - before


def _fill(directory: Path) -> Path:
    filler = directory / "rehearsal-filler.bin"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def disk_full(stack: Stack, note: dict) -> None:
    """Fill the backup file system before the next scheduled backup; free it after that one failed."""
    done = len(backups_of_boot(stack))
    filler = _fill(stack.backup_dir)
    timeout = 2 * stack.bot.backup_every + 30
    failed = wait_for(lambda: len(backups_of_boot(stack)) > done and backups_of_boot(stack)[done:], timeout)
    if failed and not failed[0]["ok"]:  # the failed one's name is in its error: it must not be listed
        note["failed_listed"] = [name for name in stack.listed_backups() if name in failed[0]["error"]]
    filler.unlink()
    note["during_full"] = failed or "no scheduled backup ran"
    after = len(backups_of_boot(stack))
    ran = wait_for(lambda: backups_of_boot(stack)[after:], timeout)
    note["next"] = ran or "no scheduled backup ran"


def corrupt_and_delete(stack: Stack, note: dict) -> None:
    """Right after a scheduled backup (so no backup holds the damage), flip a byte of a media
    file and delete a config file; wait until auto-recovery has put both back."""
    done = len(backups_of_boot(stack))
    wait_for(lambda: len(backups_of_boot(stack)) > done, 2 * stack.bot.backup_every + 30)
    corrupted, deleted = "media/sample_1.bin", "config/bot_settings.json"
    damaged = bytearray(stack.files[corrupted])
    damaged[1000] ^= 0xFF
    (stack.data / corrupted).write_bytes(bytes(damaged))
    os.unlink(stack.data / deleted)
    started = time.monotonic()

    def repaired() -> bool:
        try:
            return all((stack.data / rel).read_bytes() == stack.files[rel] for rel in (corrupted, deleted))
        except FileNotFoundError:
            return False

    note.update(corrupted=corrupted, deleted=deleted, damaged_sha256=hashlib.sha256(damaged).hexdigest(),
                repaired=bool(wait_for(repaired, 60)), repair_seconds=round(time.monotonic() - started, 1))


# (offset in the cycle, name, fault). The bot's own restarts play in the first and the last
# cycle only, and the SIGKILL early, so that one bot process lives from 20 s to the SIGTERM
# near the end (its RSS, descriptors and threads are compared from a checkpoint to its end).
SCHEDULE: list[tuple[float, str, Callable[[Stack, dict], None]]] = [
    (20, "bot_sigkill_restart", bot_sigkill),
    (35, "es_429_whole_requests", es_429_whole),
    (55, "es_429_part_of_batch", es_429_partial),
    (75, "es_sigkill_restart", es_sigkill),
    (115, "collector_alertmanager_down", collector_and_alertmanager_down),
    (140, "celery_worker_sigkill_restart", worker_sigkill),
    (150, "redis_restart", redis_restart),
    (160, "backup_disk_full", disk_full),
    (205, "critical_file_corrupt_delete", corrupt_and_delete),
    (230, "clock_jump_sigstop", clock_jump),
    (280, "bot_sigterm_restart", bot_sigterm),
]
RESTARTS_BOT = {"bot_sigkill_restart", "bot_sigterm_restart"}


def play(stack: Stack, duration: float, started: float) -> list[dict]:
    """Play the schedule's cycles that fit in ``duration``; return each fault with its window."""
    played: list[dict] = []
    cycles = max(1, int(duration // CYCLE))
    for cycle in range(cycles):
        for offset, name, fault in SCHEDULE:
            if name in RESTARTS_BOT and 0 < cycle < cycles - 1:
                continue
            wait = started + cycle * CYCLE + offset - time.time()
            if wait > 0:
                time.sleep(wait)
            note: dict = {"fault": name, "cycle": cycle, "start": time.time()}
            fault(stack, note)
            note["end"] = time.time()
            played.append(note)
    return played
