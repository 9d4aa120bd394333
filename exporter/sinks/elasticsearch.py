"""Ship ECS log lines to Elasticsearch: bounded queue, background ``_bulk`` worker, disk spool.

``ElasticsearchSink(settings, metrics)`` starts nothing; ``start()`` (or the first ``submit``)
starts the worker thread. The caller's thread only appends ``(levelno, _id, line)`` to a bounded
deque; when it is full the record goes to a bounded overflow list the worker spools to disk.

Each record gets a deterministic ``_id`` ``<producer>-<sequence>`` (producer: random per sink,
sequence: per record) and the fields ``agent.ephemeral_id`` / ``event.sequence``, and is written
with ``op_type=create`` into the data stream ``logs-bot-<namespace>``; a 409 on a replay counts as
shipped, so at-least-once delivery makes no duplicates. While the spool holds anything, new
batches are appended to it and the worker replays it oldest first. Order per producer is the
``event.sequence`` order (sort on it): a record that overflowed while the queue was full goes
through the spool and can reach Elasticsearch before older records still in memory. The caller
never touches the disk: overflow waits in a second bounded list that the worker spools; only
when that is full too is a record dropped (and counted by level). Transport
errors, 429 and 5xx send the batch to the spool (retried with backoff); any other per-document
error (a 400 mapping error) goes to ``state_dir/dead-letter.ndjson`` with the reason. Transport
retries of the client are off: the spool is the retry, and ``close()`` must keep its deadline.
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

from ..config import Settings
from ..metrics import LOG_LEVELS, Metrics
from .spool import Record, Spool

log = logging.getLogger("exporter.sinks.elasticsearch")

TEMPLATE_NAME = "logs-bot"
TEMPLATE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "elasticsearch" / "logs-bot-template.json"
RETRYABLE = frozenset((429, 500, 502, 503, 504))
MAX_BACKOFF = 30.0
JOIN_SLACK = 0.25  # seconds close() gives the worker past the deadline to spool its last batch


def load_template() -> dict:
    return json.loads(TEMPLATE_FILE.read_text())


def _level_name(levelno: int) -> str:
    """The ``level`` label (one of ``metrics.LOG_LEVELS``); custom levels round down."""
    return LOG_LEVELS[min(4, max(0, levelno // 10 - 1))]


class ElasticsearchSink:
    def __init__(self, settings: Settings, metrics: Metrics, *, client=None):
        shipping = settings.shipping
        self.index = f"logs-bot-{shipping.namespace}"
        self._settings = settings
        self._metrics = metrics
        self._client = client
        self._batch_size = shipping.batch_size
        self._interval = shipping.interval
        self._queue_size = shipping.queue_size
        self._wake_at = min(shipping.batch_size, shipping.queue_size)
        self._queue: collections.deque = collections.deque()
        self._sequence = itertools.count()
        self.producer = uuid.uuid4().hex[:16]
        self._prefix = b'{"agent.ephemeral_id":"%s","event.sequence":' % self.producer.encode()
        self._state_dir = Path(settings.general.state_dir)
        self.dead_letter_path = self._state_dir / "dead-letter.ndjson"
        self.spool = Spool(self._state_dir / "spool", shipping.spool_max_bytes, self._dropped)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._template_installed = False
        self._backoff = 0.0
        self._counts = collections.Counter()
        self._queued = 0
        self._overflow: list[Record] = []
        # Room for a few spool segments while the worker writes them out.
        self._overflow_size = max(shipping.queue_size, 4 * shipping.batch_size)
        self._overflow_lock = threading.Lock()
        self._dropped_by_level: collections.Counter = collections.Counter()

    # -- the protocol
    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            self._state_dir.mkdir(parents=True, exist_ok=True)
            self.spool.open()
            self._update_spool_gauges()
            self._thread = threading.Thread(target=self._run, name="es-log-shipper", daemon=True)
            self._thread.start()

    def submit(self, line: bytes, levelno: int) -> None:
        if self._thread is None:
            self.start()
        record = (levelno, next(self._sequence), line)
        self._queued += 1
        self._metrics.ship_queued.inc()
        queue = self._queue
        if len(queue) < self._queue_size and not self._stop.is_set():
            queue.append(record)
            if len(queue) == self._wake_at:
                self._wake.set()
        else:  # full (or closing): hand over to the worker, which spools it; never block, no disk
            with self._overflow_lock:
                if len(self._overflow) < self._overflow_size:
                    self._overflow.append(self._prepare(record))
                    overflowing = True
                else:
                    overflowing = False
            if not overflowing:  # the worker cannot even spool as fast: count the loss
                self._dropped(levelno, 1)
            self._wake.set()

    def stats(self) -> dict:
        return {
            "queued": self._queued,
            "shipped": self._counts["shipped"],
            "retried": self._counts["retried"],
            "spooled": self._counts["spooled"],
            "dropped": dict(self._dropped_by_level),
            "dead_lettered": self._counts["dead_lettered"],
            "queue_size": len(self._queue),
            "spool_bytes": self.spool.size(),
            "spool_oldest": self.spool.oldest(),
        }

    def close(self, timeout: float) -> None:
        """Send what is queued until ``timeout`` seconds from now, spool the rest, stop the worker."""
        self._deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, self._deadline - time.monotonic()) + JOIN_SLACK)
        self._spool(self._drain(len(self._queue)))  # whatever is left, if the worker is stuck
        self._flush_overflow()
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken client must not fail disable()
                pass

    # -- worker
    def _flush_overflow(self) -> None:
        with self._overflow_lock:
            spill, self._overflow = self._overflow, []
        self._spool(spill)

    def _run(self) -> None:
        while True:
            if self._overflow:
                self._flush_overflow()
            stopping = self._stop.is_set()
            if stopping and time.monotonic() >= self._deadline:
                break
            if not stopping and len(self._queue) < self._batch_size and not self.spool:
                self._wake.wait(self._interval)
                self._wake.clear()
            batch = self._drain(self._batch_size)
            if self.spool:
                self._spool(batch)
                batch = []
                if not self._replay_head():
                    if stopping:
                        break
                    self._sleep_backoff()
                continue
            if batch:
                failed = self._send(batch)
                if failed:
                    self._counts["retried"] += 1
                    self._metrics.ship_retried.inc()
                    self._spool(failed)
                    self._sleep_backoff()
            elif stopping:
                break
        self._spool(self._drain(len(self._queue)))

    def _sleep_backoff(self) -> None:
        """Wait before the next attempt (0.2 s doubling to 30 s); not at all once closing."""
        self._backoff = min(MAX_BACKOFF, max(0.2, self._backoff * 2))
        self._stop.wait(self._backoff)

    def _prepare(self, record) -> Record:
        level, sequence, line = record
        return level, f"{self.producer}-{sequence}", self._prefix + b"%d," % sequence + line[1:]

    def _drain(self, count: int) -> list[Record]:
        out = []
        queue = self._queue
        prepare = self._prepare
        try:
            for _ in range(count):
                out.append(prepare(queue.popleft()))
        except IndexError:
            pass
        self._metrics.ship_queue_size.set(len(queue))
        return out

    def _replay_head(self) -> bool:
        """Send the oldest spool segment; True when it is gone."""
        head = self.spool.head()
        if head is None:
            return True
        path, records = head
        for start in range(0, len(records), self._batch_size):
            if self._stop.is_set() and time.monotonic() >= self._deadline:
                return False
            if self._send(records[start:start + self._batch_size]):
                self._counts["retried"] += 1
                self._metrics.ship_retried.inc()
                return False
        self.spool.remove(path)
        self._update_spool_gauges()
        return True

    def _send(self, records: list[Record]) -> list[Record]:
        """One ``_bulk`` request; return the records to retry later (all of them when ES is away)."""
        try:
            timeout = 30.0
            if self._stop.is_set():  # closing: no request may outlive the deadline
                timeout = max(0.05, self._deadline - time.monotonic())
            client = self._connect(timeout)
            action = b'{"create":{"_index":"%s","_id":"%s"}}\n'
            index = self.index.encode()
            body = b"".join(action % (index, rid.encode()) + line + b"\n" for _, rid, line in records)
            # Only the figures the loop below reads: a clean batch answers in a few bytes.
            response = client.options(request_timeout=timeout).bulk(
                body=body, filter_path="errors,items.*.status,items.*.error")
        except Exception as exc:  # noqa: BLE001 - any failure to reach ES means "spool and retry"
            if self._backoff == 0.0:
                log.warning("Elasticsearch unreachable, spooling log records: %s", type(exc).__name__)
            return records
        self._backoff = 0.0
        if not response.get("errors"):
            self._counts["shipped"] += len(records)
            self._metrics.ship_shipped.inc(len(records))
            return []
        retry, dead = [], []
        shipped = 0
        for record, item in zip(records, response["items"]):
            result = item.get("create") or next(iter(item.values()))
            status = result.get("status", 500)
            if status < 300 or status == 409:
                shipped += 1
            elif status in RETRYABLE:
                retry.append(record)
            else:
                dead.append((record, result.get("error")))
        if shipped:
            self._counts["shipped"] += shipped
            self._metrics.ship_shipped.inc(shipped)
        if dead:
            self._dead_letter(dead)
        return retry

    def _connect(self, timeout: float):
        if self._client is None:
            from elasticsearch import Elasticsearch

            shipping = self._settings.shipping
            options = {"max_retries": 0, "retry_on_timeout": False, "request_timeout": 30}
            if shipping.api_key is not None:
                options["api_key"] = shipping.api_key.get()
            self._client = Elasticsearch(shipping.url.get(), **options)
        if not self._template_installed:
            self._client.options(request_timeout=min(10.0, timeout)).indices.put_index_template(
                name=TEMPLATE_NAME, **load_template())
            self._template_installed = True
        return self._client

    def _dead_letter(self, dead) -> None:
        lines = []
        for (level, rid, line), error in dead:
            try:
                document = json.loads(line)
            except ValueError:
                document = line.decode("utf-8", "replace")
            lines.append(json.dumps({"_id": rid, "index": self.index, "reason": error, "level": _level_name(level),
                                     "document": document}, default=str) + "\n")
        fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, "".join(lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._counts["dead_lettered"] += len(dead)
        self._metrics.ship_dead_lettered.inc(len(dead))
        log.warning("Elasticsearch rejected %d log record(s); written to %s", len(dead), self.dead_letter_path)

    def _spool(self, records: list[Record]) -> None:
        if not records:
            return
        kept = self.spool.append(records)
        if kept:
            self._counts["spooled"] += kept
            self._metrics.ship_spooled.inc(kept)
        self._update_spool_gauges()

    def _dropped(self, levelno: int, count: int) -> None:
        name = _level_name(levelno)
        self._dropped_by_level[name] += count
        self._metrics.ship_dropped.labels(name).inc(count)

    def _update_spool_gauges(self) -> None:
        self._metrics.spool_bytes.set(self.spool.size())
        self._metrics.spool_oldest.set(self.spool.oldest())
