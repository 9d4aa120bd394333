"""Delivery to channels and subscribers: one lane per receiver, so a slow one delays only itself.

A channel lane keeps its jobs in order, sends the head with a timeout, retries it with
exponential backoff while the channel fails, and waits for its rate limit. Pending jobs of
every channel make up the outbox, which is persisted (a journal, each new job fsynced) so a
restart loses nothing. Lanes are bounded: when one is full its oldest waiting job is dropped and
counted (``bot_alert_notifications_total{outcome="dropped"}``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any

from .._files import write_all
from ..errors import AlertError, DeliveryError
from ..metrics import Metrics, worker_failed
from ..ports import Channel
from .model import FIRING, Alert
from .store import read_jsonl, write_atomic

log = logging.getLogger("exporter.alert_manager")

DROP_LOG_INTERVAL = 10.0  # seconds between "queue full" warnings of one channel
JOURNAL_SLACK = 1000  # outbox lines past one per pending job before the file is rewritten


@dataclass
class Job:
    channel: str
    kind: str
    alert: dict[str, Any]
    created: float
    attempts: int = 0
    next_at: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])


class RateLimiter:
    """Token bucket: ``per_minute`` messages a minute, bursts up to the same number."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def delay(self) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self._refill()
        self.tokens -= 1


class SharedRateLimiter(RateLimiter):
    """A channel's token bucket shared by every worker (``SharedMarks.take_slot``, Redis, asked
    off the loop through ``asker``, an :class:`~.shared.OffLoop`); this process's own while the
    shared one is unreachable or slow. A slot taken by :meth:`delay` is held until :meth:`take`."""

    def __init__(self, per_minute: int, asker: Any, key: str) -> None:
        super().__init__(per_minute)
        self.asker, self.key, self.held = asker, key, False

    async def delay(self) -> float:
        if self.held:
            return 0.0
        wait = await self.asker.ask(None, "take_slot", self.key, int(self.capacity))
        if wait is None:
            return await super().delay()
        self.held = wait <= 0
        return max(0.0, wait)

    def take(self) -> None:
        if self.held:
            self.held = False
        else:
            super().take()


class Outbox:
    """Every channel's pending jobs, persisted when changed (coalesced by the worker).

    The file is a journal: a save appends the line of each job that is new or changed since
    the last save (its ``attempts`` or ``next_at``, the fields delivery updates) and a
    ``{"done": id}`` line for each job gone; :meth:`load` replays it (a job keeps the place of
    its first line). A save that adds a job fsyncs: a notification, once saved, survives a crash
    of the machine. One that only marks jobs done or changes their retry state does not (an
    fsync costs the worker about as much as the rest of an alert): its lines are in the file for
    a restart after the process is killed, and on the disk with the next fsync or the kernel's
    write-back; a machine crash before that sends a delivered notification again or retries a
    job sooner, a duplicate rather than a loss. Rewriting the whole outbox at every save (temp
    file, two fsyncs, rename) was most of the CPU an alert cost: a rate-limited channel holds up to its
    lane's size of jobs, written whole every ``PERSIST_INTERVAL`` while alerts arrive. The file
    is rewritten (atomically) when it holds more than :data:`JOURNAL_SLACK` lines past one per
    pending job, at the first save after :meth:`load`, and with ``compact`` (on the way out).

    Each job's line is kept from one save to the next and encoded again only when the job
    changed; the lines kept are those of the jobs in the last save, bounded by the lanes' sizes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lanes: dict[str, ChannelLane] = {}
        self.dirty = False
        self.on_change: Callable[[], None] = lambda: None  # told by mark() (the persisting loop's wake-up)
        self._lines: dict[str, tuple[Job, int, float, str]] = {}  # job id: (job, attempts, next_at, line)
        self._in_file: dict[str, str] | None = None  # job id: its last line in the file (None: not known)
        self._file_lines = 0

    def mark(self) -> None:
        """A lane's jobs changed: to be saved."""
        self.dirty = True
        self.on_change()

    def pending(self) -> int:
        return sum(len(lane.jobs) for lane in self.lanes.values())

    def load(self) -> list[Job]:
        records, bad = read_jsonl(self.path)
        if bad:
            log.warning("alert outbox: skipped %d unreadable line(s)", bad)
        jobs: dict[str, Job] = {}
        for record in records:
            if isinstance(record, dict) and set(record) == {"done"}:
                jobs.pop(str(record["done"]), None)
                continue
            try:
                job = Job(**record)
            except TypeError:
                log.warning("alert outbox: skipped a malformed job")
                continue
            jobs[job.id] = job  # a later line of the same job replaces it in its place
        return list(jobs.values())

    def save(self, compact: bool = False) -> None:
        kept, now = self._lines, {}
        for lane in self.lanes.values():
            for job in lane.jobs:
                line = kept.get(job.id)
                if line is None or line[0] is not job or line[1] != job.attempts or line[2] != job.next_at:
                    # vars(), not asdict(): json.dumps walks the nested alert itself; asdict
                    # deep-copied it first (12 % of the bot's CPU while 22 alerts/s fired)
                    line = (job, job.attempts, job.next_at, json.dumps(vars(job), separators=(",", ":")) + "\n")
                now[job.id] = line
        in_file = self._in_file
        if in_file is None or compact:
            self._rewrite(now)
        else:
            added, new_jobs = [], False
            for job_id, line in now.items():
                before = in_file.get(job_id)
                if before is not line[3]:
                    added.append(line[3])
                    new_jobs = new_jobs or before is None
            added += ['{"done":%s}\n' % _quote(job_id) for job_id in in_file.keys() - now.keys()]
            if self._file_lines + len(added) > len(now) + JOURNAL_SLACK:
                self._rewrite(now)
            elif added:
                self._in_file = None  # unknown until the append is on disk
                _append(self.path, "".join(added).encode("utf-8"), sync=new_jobs)
                self._in_file = {job_id: line[3] for job_id, line in now.items()}
                self._file_lines += len(added)
        self._lines = now
        self.dirty = False

    def _rewrite(self, now: dict[str, tuple[Job, int, float, str]]) -> None:
        self._in_file = None
        write_atomic(self.path, [line[3] for line in now.values()])
        self._in_file = {job_id: line[3] for job_id, line in now.items()}
        self._file_lines = len(now)


def _append(path: Path, data: bytes, sync: bool) -> None:
    """Append ``data`` to ``path``; with ``sync``, on the disk before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


class ChannelLane:
    """The ordered, bounded, retried queue of one channel, drained by one task."""

    def __init__(self, channel: Channel, outbox: Outbox, metrics: Metrics, *, max_jobs: int,
                 rate_per_minute: int, send_timeout: float, retry_base: float, retry_max: float,
                 max_age: float, clock: Callable[[], float], limiter: RateLimiter | None = None) -> None:
        self.channel = channel
        self.name = channel.name
        self.outbox = outbox
        self.metrics = metrics
        self.jobs: deque[Job] = deque()
        self.max_jobs = max_jobs
        self.limiter = limiter or RateLimiter(rate_per_minute)
        self.send_timeout = send_timeout
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_age = max_age
        self.clock = clock
        self.in_flight = False
        self.wakeup = asyncio.Event()
        self.delivered = 0
        self.last_error: str | None = None
        self.dropped = 0
        self.last_drop_log = float("-inf")
        self.stopping = False  # checked as well as cancellation: wait_for may swallow a cancel (3.11)

    def put(self, job: Job) -> None:
        """Queue ``job``; wake the lane's task only when its head changed (it was empty, or its
        head was dropped): a job queued behind a head waiting for its time changes nothing for
        it (waking it restarted its wait at every alert while a rate limit held the lane)."""
        head = self.jobs[0] if self.jobs else None
        if len(self.jobs) >= self.max_jobs:
            victim = 1 if self.in_flight and len(self.jobs) > 1 else 0
            if not (self.in_flight and len(self.jobs) == 1):
                del self.jobs[victim]
                self.metrics.alert_notifications.labels(self.name, "dropped").inc()
                self.dropped += 1
                now = time.monotonic()
                if now - self.last_drop_log >= DROP_LOG_INTERVAL:  # one line per interval, not per drop
                    log.warning("alert channel %s: queue full, dropped %d notification(s) so far",
                                self.name, self.dropped)
                    self.last_drop_log = now
        self.jobs.append(job)
        self.outbox.mark()
        self.metrics.alert_delivery_queue.set(self.outbox.pending())
        if self.jobs[0] is not head:
            self.wakeup.set()

    def backoff(self, attempts: int) -> float:
        """The wait before the next try: exponential, capped, with jitter (between half of it
        and all of it) so lanes failing together do not retry together."""
        step = min(self.retry_max, self.retry_base * (2 ** max(0, attempts - 1)))
        return step * (0.5 + random.random() / 2)

    async def _attempt(self, job: Job) -> bool | None:
        """True: delivered. False: failed, retry later. None: refused for good, drop it."""
        try:
            alert = Alert.from_dict(job.alert)
        except (AlertError, KeyError, TypeError, ValueError) as exc:  # written by another version, or damaged
            return self._drop(f"the queued notification cannot be read ({type(exc).__name__}: {exc})")
        send = self.channel.send if job.kind == FIRING else self.channel.send_resolved
        asked = None  # seconds the receiver asked to wait (429 retry_after, Retry-After)
        try:
            await asyncio.wait_for(send(alert), self.send_timeout)
        except asyncio.TimeoutError:
            reason = f"no answer within {self.send_timeout:g}s"
        except DeliveryError as exc:
            reason = str(exc)
            if getattr(exc, "permanent", False):
                return self._drop(reason)
            asked = getattr(exc, "retry_after", None)
        except (ValueError, TypeError) as exc:
            # The channel cannot make a message of this alert (a header, a JSON body): the same
            # alert fails the same way every time, and retrying it would hold up the queue.
            return self._drop(f"{type(exc).__name__} making the message in the channel")
        except Exception as exc:  # plug-in boundary: a channel bug must not stop the lane
            reason = f"{type(exc).__name__} in the channel"
        else:
            return True
        job.attempts += 1
        self.last_error = reason
        delay = max(self.backoff(job.attempts), asked or 0.0)  # the receiver's own wait first
        job.next_at = self.clock() + delay
        self.metrics.alert_notifications.labels(self.name, "failure").inc()
        log.warning("alert channel %s: delivery failed (attempt %d, retry in %.1fs): %s",
                    self.name, job.attempts, delay, reason)
        return False

    def _drop(self, reason: str) -> None:
        """Count and log a notification dropped for good (``_attempt`` returns this None)."""
        self.last_error = reason
        self.metrics.alert_notifications.labels(self.name, "failure").inc()
        self.metrics.alert_notifications.labels(self.name, "dropped").inc()
        log.error("alert channel %s refused a notification for good, dropped it: %s", self.name, reason)

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self._step()
            except Exception:  # task boundary: report, wait a retry step, go on (never a silent stop)
                worker_failed(self.metrics, "alert_delivery", log, f"alert channel {self.name}")
                await asyncio.sleep(self.retry_base)

    async def _step(self) -> None:
        """Wait for the head job to be due, then send it once."""
        if not self.jobs:
            self.wakeup.clear()
            await self.wakeup.wait()
            return
        job = self.jobs[0]
        now = self.clock()
        if self.max_age and now - job.created > self.max_age:
            self.jobs.popleft()
            self.outbox.mark()
            self.metrics.alert_notifications.labels(self.name, "dropped").inc()
            return
        delay = max(job.next_at - now, await self.limiter.delay())
        if not self.jobs or self.jobs[0] is not job:  # dropped meanwhile (a full lane): start again
            return
        if delay > 0:
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), delay)
            except asyncio.TimeoutError:
                pass
            return
        self.limiter.take()
        self.in_flight = True
        try:
            ok = await self._attempt(job)
        finally:
            self.in_flight = False
        if ok is not False:
            if self.jobs and self.jobs[0] is job:
                self.jobs.popleft()
            self.outbox.mark()
            if ok:
                self.delivered += 1
                self.metrics.alert_notifications.labels(self.name, "success").inc()
            self.metrics.alert_delivery_queue.set(self.outbox.pending())

    def idle(self) -> bool:
        return not self.jobs and not self.in_flight

    def retry_now(self) -> None:
        """Forget the backoff of waiting jobs (used when the caller knows the receiver is back)."""
        for job in self.jobs:
            job.next_at = 0.0
        self.wakeup.set()
