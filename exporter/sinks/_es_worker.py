"""The Elasticsearch sink's worker thread: batches from the queue, the spool replayed, backoff.

The worker takes records oldest first and numbers them as it takes them (one FIFO, so the
``event.sequence`` order is the order the bot logged in). When the queue holds more than its
size (the node is slow), it moves the oldest records to the spool; while it backs off (the node
is away or refusing) it keeps only one batch in memory. It sends from memory while a batch is
waiting there and replays the spool, oldest segment first, a batch at a time, whenever the node
has caught up. A batch that fails is spooled, and while the node is away the worker retries
with backoff (0.2 s doubling to 30 s), each retry starting with a TCP connect.

Each batch taken is named by :class:`._log_files.FileTrack` (its ``_id``s, and the first line of
a log file makes it read back what an earlier run left), and once delivered or spooled it lets
the file's checkpoint pass it. After an unexpected error the checkpoints stay where they are for
the rest of the run: the next start reads back from there.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from ..metrics import Metrics, log_level_label, worker_failed
from ..ports import mark_shipping_thread
from ._es_bulk import BulkEncoder, Taken, classify, exchange, one_line_each
from ._es_client import REQUEST_TIMEOUT, Node
from ._log_files import FileTrack
from .dead_letters import DeadLetters
from .spool import Record, Spool, lines_end, parse

log = logging.getLogger("exporter.sinks.elasticsearch")

MAX_BACKOFF = 30.0
SPILL_CHECK = 0.5  # seconds between overflow checks while backing off
CLOSING_RETRY = 0.05  # seconds between attempts once closing
PROBE_TIMEOUT = 5.0  # seconds a TCP connect to the node may take while backing off


class Tally:
    """The sink's counts, for ``stats()``, and its metrics, kept in step."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.counts: collections.Counter = collections.Counter()
        self.dropped_by_level: collections.Counter = collections.Counter()

    def taken(self, count: int, left: int) -> None:
        self.metrics.ship_queued.inc(count)
        self.metrics.ship_queue_size.set(left)

    def shipped(self, count: int, duplicates: int = 0) -> None:
        if count:
            self.counts["shipped"] += count
            self.metrics.ship_shipped.inc(count)
        if duplicates:
            self.counts["duplicates"] += duplicates
            self.metrics.ship_duplicates.inc(duplicates)

    def from_file(self, name: str, count: int) -> None:
        """Lines ``recovered`` from the log file, or a ``gap:<reason>`` found there."""
        if name == "recovered":
            self.counts["recovered"] += count
            self.metrics.ship_recovered.inc(count)
        else:
            reason = name.partition(":")[2]
            self.counts[name] += count
            self.metrics.ship_file_gaps.labels(reason).inc(count)

    def retried(self) -> None:
        self.counts["retried"] += 1
        self.metrics.ship_retried.inc()

    def spooled(self, count: int, spool: Spool) -> None:
        if count:
            self.counts["spooled"] += count
            self.metrics.ship_spooled.inc(count)
        self.spool_changed(spool)

    def spool_changed(self, spool: Spool) -> None:
        self.metrics.spool_bytes.set(spool.size())
        self.metrics.spool_oldest.set(spool.oldest())

    def dead_lettered(self, count: int) -> None:
        self.counts["dead_lettered"] += count
        self.metrics.ship_dead_lettered.inc(count)

    def dropped(self, levelno: int, count: int) -> None:
        name = log_level_label(levelno)
        self.dropped_by_level[name] += count
        self.metrics.ship_dropped.labels(name).inc(count)


class Worker:
    """Drains ``queue`` into the node through ``spool``; :meth:`run` is the thread's target."""

    request_timeout = REQUEST_TIMEOUT  # seconds a _bulk request may take (before closing)

    def __init__(self, queue: collections.deque, spool: Spool, node: Node, encoder: BulkEncoder,
                 dead_letters: DeadLetters, tally: Tally, *, state_dir: Path, batch_size: int, queue_size: int,
                 interval: float):
        self.queue = queue
        self.spool = spool
        self.node = node
        self.encoder = encoder
        self.dead_letters = dead_letters
        self.tally = tally
        self.files = FileTrack(state_dir, encoder.producer, self._spool, tally.from_file)
        self._batch_size = batch_size
        self._queue_size = queue_size
        self._interval = interval
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self.taken = 0  # records taken from the queue: the next sequence number
        self._backoff = 0.0
        self._in_flight: tuple[int, Taken] | None = None  # the batch being sent
        self._replaying: list | None = None  # [segment path, its bytes or None, next offset, spool generation]

    # -- what the sink asks of it
    def stop(self, deadline: float) -> None:
        """Send what is queued until ``deadline`` (``time.monotonic()``), then end :meth:`run`."""
        self._deadline = deadline
        self._stop.set()
        self.wake.set()

    def time_left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def spool_left_behind(self, stuck: bool) -> None:
        """After :meth:`run` (or with the thread ``stuck`` in a request past the deadline: a node
        that accepts and never answers), spool what is left. Should a stuck request still
        succeed, the replay finds the same _ids (409) and makes no duplicates."""
        in_flight = self._in_flight
        if in_flight is not None and stuck:
            self.spool_taken(*in_flight)
        self.spool_taken(*self.take(len(self.queue)))
        self.files.save(force=True)

    # -- the loop
    def run(self) -> None:
        mark_shipping_thread()
        while True:
            try:
                if self._round():
                    break
            except Exception:  # thread boundary: report, back off, go on (never a silent stop)
                worker_failed(self.tally.metrics, "log_shipper", log, "shipping a batch")
                self.files.frozen = True  # a batch may be lost: the next start reads back from here
                if not self._stop.is_set():
                    self._sleep_backoff()
                elif time.monotonic() < self._deadline:
                    time.sleep(CLOSING_RETRY)
                else:
                    break
        self.spool_taken(*self.take(len(self.queue)))
        self.files.save(force=True)

    def _round(self) -> bool:
        """One round: wait for a batch or the interval, send it; True when closed."""
        self._spill_excess()
        self.files.save()
        stopping = self._stop.is_set()
        if stopping and time.monotonic() >= self._deadline:
            return True
        if not stopping and len(self.queue) < self._batch_size and not self.spool:
            self.wake.wait(self._interval)
            self.wake.clear()
        queued = len(self.queue)
        # Memory first while there is a batch of it (or nothing else); the spool whenever the
        # node has caught up. Order per producer is event.sequence, not arrival.
        if queued >= self._batch_size or (queued and (stopping or not self.spool)):
            delivered = self._ship_from_memory()
        elif self.spool:
            delivered = self._replay_step()
        else:
            return stopping
        if not delivered:
            if stopping:  # closing: try again until the deadline (the first request may be slow)
                time.sleep(min(CLOSING_RETRY, self.time_left()))
            else:
                self._sleep_backoff()
        return False

    def _spill_excess(self, keep: int | None = None) -> None:
        """Behind: the oldest records past ``keep`` (the queue size) wait on disk."""
        excess = len(self.queue) - (self._queue_size if keep is None else keep)
        if excess > 0:
            self.spool_taken(*self.take(excess))

    def _sleep_backoff(self) -> None:
        """Wait before the next attempt (0.2 s doubling to 30 s). The node is away or refusing, so
        all but one batch waits on disk meanwhile: an outage of any length costs the bot one
        batch of memory, not a full queue."""
        self._backoff = min(MAX_BACKOFF, max(0.2, self._backoff * 2))
        until = time.monotonic() + self._backoff
        while not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                break
            self._stop.wait(min(left, SPILL_CHECK))
            self._spill_excess(keep=self._batch_size)

    def _ship_from_memory(self) -> bool:
        """Send the oldest batch in memory; on failure spool what was not taken. True when delivered."""
        if not self._node_answers():
            return False
        first, taken = self.take(self._batch_size)
        encoder = self.encoder
        self._in_flight = (first, taken)
        try:
            failed = self._send(lambda: encoder.fresh(first, taken), len(taken), lambda: encoder.records(first, taken),
                                replay=False)
        finally:
            self._in_flight = None
        if failed is None or failed:
            self.tally.retried()
            if failed is None:  # not sent at all: spool the batch as taken
                self.spool_taken(first, taken)
            else:
                self._spool(failed)
            self.files.resolved()
            return False
        self.files.resolved()
        return True

    def _replay_step(self) -> bool:
        """Send the next batch of the oldest spool segment; True when the node took all of it.
        Records it refused for now (429) go to a new segment, so the batch is never sent twice
        (which would dead-letter a rejected record again and count created ones twice)."""
        if not self._node_answers():
            return False
        replaying = self._replaying
        if replaying is None or replaying[3] != self.spool.generation:  # none yet, or rewritten
            path = self.spool.head()
            if path is None:
                return True
            replaying = self._replaying = [path, None, 0, self.spool.generation]
        path, data, offset, _ = replaying
        if data is None:  # not read yet, or let go after a failed attempt
            try:
                data = replaying[1] = path.read_bytes()
            except FileNotFoundError:  # another process on this STATE_DIR replayed it first
                self.spool.remove(path)
                self._replaying = None
                self.tally.spool_changed(self.spool)
                return True
        end = lines_end(data, offset, self._batch_size)
        failed: list[Record] = []
        if end > offset:
            chunk = data if end - offset == len(data) else data[offset:end]
            failed = self._send(lambda: self.encoder.replayed(chunk), chunk.count(b"\n"), lambda: list(parse(chunk)),
                                replay=True)
            if failed is None:
                self.tally.retried()
                replaying[1] = None  # the node is away: the segment waits on disk, not in memory
                return False
            if failed:  # some refused for now (429): they wait in a new segment; the rest is done
                self.tally.retried()
                self._spool(failed)
        replaying[2] = end
        if end >= len(data):
            self.spool.remove(path)
            self._replaying = None
            self.tally.spool_changed(self.spool)
        return not failed

    def take(self, count: int) -> tuple[int, Taken]:
        """Take up to ``count`` records, oldest first: (sequence of the first, [(levelno, line, _id)])."""
        popleft = self.queue.popleft
        first = self.taken
        taken = one_line_each(self.files.name([popleft() for _ in range(min(count, len(self.queue)))], first))
        self.taken += len(taken)
        self.tally.taken(len(taken), len(self.queue))
        return first, taken

    def _node_answers(self) -> bool:
        """Whether to build and send a batch: always, unless the worker is backing off and the
        node does not take a TCP connection. An outage then costs a connect per attempt, not a
        batch body (a MiB for 2000 records) built and dropped each time, which left the bot
        about 4 MiB more resident (measured by bench_memory). A node that answers 429 or 503 is
        tried with a batch."""
        if self._backoff == 0.0 or self.node.answers(min(PROBE_TIMEOUT, max(0.05, self.time_left()))):
            return True
        self.tally.retried()
        return False

    def _send(self, build: Callable[[], bytes], count: int, records: Callable[[], list[Record]], *,
              replay: bool) -> list[Record] | None:
        """One ``_bulk`` request of ``build()`` (``count`` records); return those to retry later,
        or None when the request failed as a whole (transport error, 429, 5xx: retry them all).

        The body is built once the client is ready (its index template installed), so a node
        that is away costs no body. Any other refusal of a record goes to the dead letters.
        """
        timeout = self.request_timeout
        if self._stop.is_set():  # closing: no request may outlive the deadline
            timeout = max(0.05, self.time_left())
        try:
            client = self.node.bulk_client(timeout)
            response, again = exchange(client, build(), replay)
        except Exception as exc:  # noqa: BLE001 - any failure to reach ES means "spool and retry"
            if self._backoff == 0.0:
                log.warning("Elasticsearch unreachable, spooling log records: %s", type(exc).__name__)
            return None
        self._backoff = 0.0
        outcome = classify(response, count, records, again)
        self.tally.shipped(outcome.shipped, outcome.duplicates)
        if outcome.dead:
            self.dead_letters.append(outcome.dead)
            self.tally.dead_lettered(len(outcome.dead))
            log.warning("Elasticsearch rejected %d log record(s); written to %s",
                        len(outcome.dead), self.dead_letters.path)
        return outcome.retry

    def _spool(self, records: list[Record]) -> None:
        if records:
            self.tally.spooled(self.spool.append(records), self.spool)

    def spool_taken(self, first: int, taken: Taken) -> None:
        """Spool records just taken from the queue."""
        if taken:
            self.tally.spooled(self.spool.append_block(self.encoder.spool_block(first, taken),
                                                       [level for level, _, _ in taken]), self.spool)
        self.files.resolved()
