"""Ship ECS log lines to Elasticsearch: bounded queue, background ``_bulk`` worker, disk spool.

``ElasticsearchSink(settings, metrics)`` starts nothing; ``start()`` (or the first ``submit``)
makes the client and starts the worker thread. The caller's thread only appends
``(levelno, line)`` to one bounded deque (``LOG_SHIP_QUEUE_SIZE`` records, plus as much again of
overflow room); everything else happens on the worker, so a record costs the bot one ``append``.

The worker takes records oldest first and gives each a deterministic ``_id``
``<producer>-<sequence>`` (producer: random per sink) and the fields ``agent.ephemeral_id`` /
``event.sequence``, and writes it with ``op_type=create`` into the data stream
``logs-bot-<namespace>``; a 409 on a replay counts as shipped, so at-least-once delivery makes
no duplicates. Order per producer is the ``event.sequence`` order, which is the order the bot
logged in (one FIFO, numbered as it is taken); records may arrive out of that order. When the
queue holds more than its size (the node is slow), the worker moves the oldest records to the
spool; while it backs off (the node is away or refusing) it keeps only one batch in memory. It
sends from memory while a batch is waiting there and replays the spool, oldest segment first, a
batch at a time, whenever the node has caught up: a burst the node is slow to take costs disk
only for what overflows. A batch that fails is spooled, and while the node is away the worker
retries with backoff (0.2 s doubling to 30 s), each retry starting with a TCP connect. Only when
the overflow room is full too is a record dropped (and counted by level). The caller never
touches the disk.

A clean batch is answered with ``{"errors":false}`` alone (``filter_path``); when a batch has
errors it is sent once more asking for each item's status (a replay is harmless: created ids
answer 409). Transport errors, 429 and 5xx send the batch to the spool (retried with backoff);
any other per-document error (a 400 mapping error) goes to ``state_dir/dead-letter.ndjson``
with the reason. Transport retries of the client are off: the spool is the retry, and
``close()`` must keep its deadline.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable

from .._files import make_dirs
from ..config import Settings
from ..errors import LoggingSetupError
from ..metrics import LOG_LEVELS, Metrics, worker_failed
from ..ports import mark_shipping_thread
from .spool import Record, Spool, lines_end, parse

log = logging.getLogger("exporter.sinks.elasticsearch")

TEMPLATE_NAME = "logs-bot"
TEMPLATE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "elasticsearch" / "logs-bot-template.json"
RETRYABLE = frozenset((429, 500, 502, 503, 504))
MAX_BACKOFF = 30.0
JOIN_SLACK = 0.25  # seconds close() gives the worker past the deadline to spool its last batch
REQUEST_TIMEOUT = 30.0
SPILL_CHECK = 0.5  # seconds between overflow checks while backing off
CLOSING_RETRY = 0.05  # seconds between attempts once closing
PROBE_TIMEOUT = 5.0  # seconds a TCP connect to the node may take while backing off


def load_template() -> dict:
    return json.loads(TEMPLATE_FILE.read_text())


def _new_client(settings: Settings):
    """The shipper's client: no transport retries (the spool retries), bodies sent as built, untraced."""
    from elastic_transport import NdjsonSerializer
    from elasticsearch import Elasticsearch

    class PrebuiltNdjson(NdjsonSerializer):
        """A ``_bulk`` body built here is final: send it, do not copy it line by line again."""

        def dumps(self, data) -> bytes:
            return data if isinstance(data, bytes) else super().dumps(data)

    shipping = settings.shipping
    options = {"max_retries": 0, "retry_on_timeout": False, "request_timeout": REQUEST_TIMEOUT,
               "serializers": {PrebuiltNdjson.mimetype: PrebuiltNdjson()}}
    if shipping.api_key is not None:
        options["api_key"] = shipping.api_key.get()
    return _untraced(Elasticsearch(shipping.url.get(), **options))


def _untraced(client):
    """Switch off the client's own OpenTelemetry spans for this client (``options()`` makes a new one).

    With tracing on, every ``_bulk`` of the shipper would be a span sent to the Collector and
    from there to Elasticsearch again: telemetry about telemetry, one per batch. The client has
    no public switch per instance, only a process-wide environment variable the bot's own
    Elasticsearch calls share, so its ``OpenTelemetry`` helper is replaced by a disabled one.
    """
    from elasticsearch._otel import OpenTelemetry

    client._otel = OpenTelemetry(enabled=False)
    return client


# A spool line ``<levelno>\t<_id>\t<json>`` made the action line of a ``_bulk`` body and its
# document in one pass over a whole chunk, with no object per record.
_SPOOL_LINE_HEAD = re.compile(rb"^\d+\t([^\t\n]*)\t", re.MULTILINE)


def _bulk_body(index: str, lines: bytes) -> bytes:
    """The ``_bulk`` body for spool ``lines``: create each in ``index`` with its ``_id``."""
    return _SPOOL_LINE_HEAD.sub(b'{"create":{"_index":"%s","_id":"\\1"}}\n' % index.encode(), lines)


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
        # Room past queue_size for what the worker has not spooled yet.
        self._capacity = shipping.queue_size + max(shipping.queue_size, 4 * shipping.batch_size)
        self._queue: collections.deque = collections.deque()
        self._taken = 0  # records the worker has taken from the queue: the next sequence number
        self.producer = uuid.uuid4().hex[:16]
        producer = self.producer.encode()
        self._prefix = b'{"agent.ephemeral_id":"%s","event.sequence":' % producer
        # action line and document of a fresh record in one step: % (sequence, sequence, line[1:])
        self._fresh = b'{"create":{"_index":"%s","_id":"%s-%%d"}}\n%s%%d,%%s' % (
            self.index.encode(), producer, self._prefix)
        # a fresh record as a spool line in one step: % (levelno, sequence, sequence, line[1:])
        self._spool_line = b"%%d\t%s-%%d\t%s%%d,%%s" % (producer, self._prefix)
        self._state_dir = Path(settings.general.state_dir)
        self.dead_letter_path = self._state_dir / "dead-letter.ndjson"
        self.spool = Spool(self._state_dir / "spool", shipping.spool_max_bytes, self._dropped)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._template_installed = False
        url = urllib.parse.urlsplit(shipping.url.get())
        self._address = (url.hostname, url.port or 443)  # the settings require a port for http
        self._backoff = 0.0
        self._in_flight: tuple[int, list[tuple[int, bytes]]] | None = None  # the batch being sent
        self._replaying: list | None = None  # [segment path, its bytes or None, next offset, spool generation]
        self._counts = collections.Counter()
        self._dropped_by_level: collections.Counter = collections.Counter()

    # -- the protocol
    def start(self) -> None:
        """Make the client and start the worker. :func:`from_settings` calls it, so the
        ``elasticsearch`` package loads while the bot starts (a missing one is an error there,
        not a spool that never drains), not on the worker in the middle of the first records."""
        with self._start_lock:
            if self._thread is not None:
                return
            if self._client is None:
                self._client = _new_client(self._settings)
            make_dirs(self._state_dir)
            self.spool.open()
            self._update_spool_gauges()
            self._thread = threading.Thread(target=self._run, name="es-log-shipper", daemon=True)
            self._thread.start()

    def submit(self, line: bytes, levelno: int) -> None:
        if self._thread is None:
            self.start()
        queue = self._queue
        if len(queue) < self._capacity:
            queue.append((levelno, line))
            if len(queue) == self._wake_at:
                self._wake.set()
        else:  # the worker cannot even spool as fast: count the loss, never block
            self._dropped(levelno, 1)

    def stats(self) -> dict:
        return {
            "queued": self._taken + len(self._queue),
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
        self._capacity = 0  # closed: later records are counted as dropped
        in_flight = self._in_flight
        if in_flight is not None and self._thread is not None and self._thread.is_alive():
            # The worker is stuck in a request past the deadline (a node that accepts and never
            # answers): its batch goes to the spool too. Should the request still succeed, the
            # replay finds the same _ids (409) and makes no duplicates.
            self._spool_taken(*in_flight)
        self._spool_taken(*self._take(len(self._queue)))  # whatever is left, if the worker is stuck
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken client must not fail disable()
                pass

    # -- worker
    def _run(self) -> None:
        mark_shipping_thread()
        while True:
            try:
                if self._round():
                    break
            except Exception:  # thread boundary: report, back off, go on (never a silent stop)
                worker_failed(self._metrics, "log_shipper", log, "shipping a batch")
                if not self._stop.is_set():
                    self._sleep_backoff()
                elif time.monotonic() < self._deadline:
                    time.sleep(CLOSING_RETRY)
                else:
                    break
        self._spool_taken(*self._take(len(self._queue)))

    def _round(self) -> bool:
        """One round of the worker: wait for a batch or the interval, send it; True when closed."""
        self._spill_excess()
        stopping = self._stop.is_set()
        if stopping and time.monotonic() >= self._deadline:
            return True
        if not stopping and len(self._queue) < self._batch_size and not self.spool:
            self._wake.wait(self._interval)
            self._wake.clear()
        queued = len(self._queue)
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
                time.sleep(max(0.0, min(CLOSING_RETRY, self._deadline - time.monotonic())))
            else:
                self._sleep_backoff()
        return False

    def _spill_excess(self, keep: int | None = None) -> None:
        """Behind: the oldest records past ``keep`` (the queue size) wait on disk."""
        excess = len(self._queue) - (self._queue_size if keep is None else keep)
        if excess > 0:
            self._spool_taken(*self._take(excess))

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
        first, taken = self._take(self._batch_size)
        fresh = self._fresh
        self._in_flight = (first, taken)
        try:
            failed = self._send(lambda: b"".join([fresh % (sequence, sequence, line[1:])
                                                  for sequence, (_, line) in enumerate(taken, first)]),
                                len(taken), lambda: self._records(first, taken))
        finally:
            self._in_flight = None
        if failed is None or failed:
            self._count_retry()
            if failed is None:  # not sent at all: spool the batch as taken
                self._spool_taken(first, taken)
            else:
                self._spool(failed)
            return False
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
            data = replaying[1] = path.read_bytes()
        end = lines_end(data, offset, self._batch_size)
        failed: list[Record] = []
        if end > offset:
            chunk = data if end - offset == len(data) else data[offset:end]
            failed = self._send(lambda: _bulk_body(self.index, chunk), chunk.count(b"\n"), lambda: list(parse(chunk)))
            if failed is None:
                self._count_retry()
                replaying[1] = None  # the node is away: the segment waits on disk, not in memory
                return False
            if failed:  # some refused for now (429): they wait in a new segment; the rest is done
                self._count_retry()
                self._spool(failed)
        replaying[2] = end
        if end >= len(data):
            self.spool.remove(path)
            self._replaying = None
            self._update_spool_gauges()
        return not failed

    def _take(self, count: int) -> tuple[int, list[tuple[int, bytes]]]:
        """Take up to ``count`` records, oldest first: (sequence of the first, [(levelno, line)])."""
        popleft = self._queue.popleft
        taken = [popleft() for _ in range(min(count, len(self._queue)))]
        if not all([line[-1:] == b"\n" for _, line in taken]):  # a sink fed by hand, not the handler
            taken = [(level, b" ".join(line.split(b"\n")).strip() + b"\n") for level, line in taken]
        first = self._taken
        self._taken += len(taken)
        self._metrics.ship_queued.inc(len(taken))
        self._metrics.ship_queue_size.set(len(self._queue))
        return first, taken

    def _records(self, first: int, taken: list[tuple[int, bytes]]) -> list[Record]:
        """Taken records as ``(levelno, _id, document)``, for the spool and the dead letters."""
        producer, prefix = self.producer, self._prefix
        # line is '{...}\n': the two fields go in after its "{", the newline goes
        return [(level, f"{producer}-{sequence}", b"%s%d,%s" % (prefix, sequence, line[1:-1]))
                for sequence, (level, line) in enumerate(taken, first)]

    def _node_answers(self) -> bool:
        """Whether to build and send a batch: always, unless the worker is backing off and the
        node does not take a TCP connection. An outage then costs a connect per attempt, not a
        batch body (a MiB for 2000 records) built and dropped each time, which left the bot
        about 4 MiB more resident (measured by bench_memory). A TCP connect needs no privilege
        beyond what shipping has; a node that answers 429 or 503 is tried with a batch."""
        if self._backoff == 0.0:
            return True
        timeout = min(PROBE_TIMEOUT, max(0.05, self._deadline - time.monotonic()))
        try:
            with socket.create_connection(self._address, timeout=timeout):
                return True
        except OSError:
            self._count_retry()
            return False

    def _bounded_client(self):
        """The client, its template installed, with a timeout that keeps close()'s deadline."""
        timeout = REQUEST_TIMEOUT
        if self._stop.is_set():  # closing: no request may outlive the deadline
            timeout = max(0.05, self._deadline - time.monotonic())
        client = self._connect(timeout)
        if timeout != REQUEST_TIMEOUT:
            client = _untraced(client.options(request_timeout=timeout))
        return client

    def _count_retry(self) -> None:
        self._counts["retried"] += 1
        self._metrics.ship_retried.inc()

    def _send(self, build: Callable[[], bytes], count: int,
              records: Callable[[], list[Record]]) -> list[Record] | None:
        """One ``_bulk`` request of ``build()`` (``count`` records); return those to retry later,
        or None when the request failed as a whole (transport error, 429, 5xx: retry them all).

        The body is built once the client is ready (its index template installed), so a node
        that is away costs no body. ``records()`` gives the records of the body, in its order;
        it is called only when some of them fail (the common clean batch never builds them).
        """
        try:
            client = self._bounded_client()
            body = build()
            response = client.bulk(body=body, filter_path="errors")
            if response.get("errors"):  # which ones: ask again with each item's status
                response = client.bulk(body=body, filter_path="errors,items.*.status,items.*.error")
        except Exception as exc:  # noqa: BLE001 - any failure to reach ES means "spool and retry"
            if self._backoff == 0.0:
                log.warning("Elasticsearch unreachable, spooling log records: %s", type(exc).__name__)
            return None
        self._backoff = 0.0
        if not response.get("errors"):
            self._counts["shipped"] += count
            self._metrics.ship_shipped.inc(count)
            return []
        retry, dead = [], []
        shipped = 0
        for record, item in zip(records(), response["items"]):
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
        if not self._template_installed:
            _untraced(self._client.options(request_timeout=min(10.0, timeout))).indices.put_index_template(
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
        with os.fdopen(fd, "ab") as handle:  # a buffered file writes all of it, short writes too
            handle.write("".join(lines).encode())
            handle.flush()
            os.fsync(handle.fileno())
        self._counts["dead_lettered"] += len(dead)
        self._metrics.ship_dead_lettered.inc(len(dead))
        log.warning("Elasticsearch rejected %d log record(s); written to %s", len(dead), self.dead_letter_path)

    def _spool(self, records: list[Record]) -> None:
        if records:
            self._spooled(self.spool.append(records))

    def _spool_taken(self, first: int, taken: list[tuple[int, bytes]]) -> None:
        """Spool records just taken from the queue, each made a spool line in one step."""
        if taken:
            template = self._spool_line
            data = bytearray()
            for sequence, (level, line) in enumerate(taken, first):
                data += template % (level, sequence, sequence, line[1:])
            self._spooled(self.spool.append_block(data, [level for level, _ in taken]))

    def _spooled(self, kept: int) -> None:
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


def from_settings(settings: Settings, metrics: Metrics) -> ElasticsearchSink:
    """The started sink (``logger_manager.enable()`` calls this when ``ELASTICSEARCH_URL`` is
    set): a missing client package is an error here, not a spool that never drains."""
    try:
        sink = ElasticsearchSink(settings, metrics)
        sink.start()
    except ImportError as exc:
        raise LoggingSetupError(f"ELASTICSEARCH_URL is set but the Elasticsearch client cannot be loaded: {exc}"
                                ) from exc
    except OSError as exc:  # STATE_DIR (the spool lives there) cannot be made or read
        raise LoggingSetupError(f"cannot keep the log spool under STATE_DIR={settings.general.state_dir}: "
                                f"{exc.strerror or exc}") from exc
    return sink
