"""Ship ECS log lines to Elasticsearch: bounded queue, background ``_bulk`` worker, disk spool.

``ElasticsearchSink(shipping, metrics)`` starts nothing; ``start()`` (or the first ``submit``)
makes the client and starts the worker thread. The caller's thread only appends
``(levelno, line, log file, offset)`` to one bounded deque (``LOG_SHIP_QUEUE_SIZE`` records, plus as much again of
overflow room); everything else happens on the worker, so a record costs the bot one ``append``.
Only when the overflow room is full too is a record dropped (and counted by level). The caller
never touches the disk.

Records go with ``op_type=create`` and a deterministic ``_id`` into the data stream
``logs-bot-<namespace>``: a 409 on a replay is counted as a duplicate avoided, so at-least-once
delivery makes no duplicates. Transport errors, 429 and 5xx send a batch to the spool (retried
with backoff); any other per-document error (a 400 mapping error) goes to
``state_dir/dead-letter.ndjson`` with the reason. Transport retries of the client are off: the
spool is the retry, and ``close()`` must keep its deadline.

The parts, one job each:

- this module: the queue the bot appends to and the sink's lifecycle (``start``, ``submit``,
  ``stats``, ``close``), and :func:`from_settings`;
- :mod:`._es_worker`: the worker thread (batches, spilling to the spool, replay, backoff) and
  the counts behind ``stats()`` and the metrics;
- :mod:`._es_bulk`: ``_bulk`` bodies and the classification of the node's answer;
- :mod:`._es_client`: the client made from the settings, the index template, the TCP probe;
- :mod:`._log_files`: the ``_id`` of a line from its place in the log file (``submit_at``), the
  checkpoint, and the read-back at start of what a killed run had not delivered;
- :mod:`.spool` and :mod:`.dead_letters`: the sink's files under ``STATE_DIR``.
"""
from __future__ import annotations

import collections
import threading
import time
import uuid
from pathlib import Path

from .._files import make_dirs
from ..config import ShippingSettings
from ..errors import LoggingSetupError
from ..metrics import Metrics
from ..ports import LogFile
from ._es_bulk import BulkEncoder
from ._es_client import TEMPLATE_NAME, Node, load_template
from ._es_client import new_client as _new_client  # looked up here at start(): a test stands in for it
from ._es_worker import Tally, Worker
from .dead_letters import DeadLetters
from .spool import Spool

__all__ = ["TEMPLATE_NAME", "ElasticsearchSink", "from_settings", "load_template"]

JOIN_SLACK = 0.25  # seconds close() gives the worker past the deadline to spool its last batch


class ElasticsearchSink:
    """A :class:`exporter.ports.LogSink`: the queue the bot appends to, and the worker's lifecycle."""

    def __init__(self, shipping: ShippingSettings, metrics: Metrics, *, client=None):
        self.index = f"logs-bot-{shipping.namespace}"
        self._shipping = shipping
        self._wake_at = min(shipping.batch_size, shipping.queue_size)
        # Room past queue_size for what the worker has not spooled yet.
        self._capacity = shipping.queue_size + max(shipping.queue_size, 4 * shipping.batch_size)
        self._state_dir = Path(shipping.state_dir)
        self._tally = Tally(metrics)
        self._fresh(client)

    def _fresh(self, client) -> None:
        """A producer, queue, spool, client and worker of this process's own, not started."""
        shipping = self._shipping
        self.producer = uuid.uuid4().hex[:16]
        self._queue: collections.deque = collections.deque()
        self.spool = Spool(self._state_dir / "spool", shipping.spool_max_bytes, self._tally.dropped)
        dead_letters = DeadLetters(self._state_dir, self.index)
        self.dead_letter_path = dead_letters.path
        self._node = Node(shipping.url.get(), client)
        self._worker = Worker(self._queue, self.spool, self._node, BulkEncoder(self.index, self.producer),
                              dead_letters, self._tally, state_dir=self._state_dir, batch_size=shipping.batch_size,
                              queue_size=shipping.queue_size, interval=shipping.interval)
        self._wake = self._worker.wake
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """In a forked child (the logger manager calls it): a sink as in a new process, started
        by the child's first line. The parent's worker, queue, connections and checkpoint slots
        stay the parent's: the child lets go of its copies of the slots' descriptors (the
        parent's locks hold) and takes a slot of its own at ``follow()``."""
        self._worker.files.forget_in_child()
        self._fresh(None)

    def start(self) -> None:
        """Make the client and start the worker. :func:`from_settings` calls it, so the
        ``elasticsearch`` package loads while the bot starts (a missing one is an error there,
        not a spool that never drains), not on the worker in the middle of the first records."""
        with self._start_lock:
            if self._thread is not None:
                return
            if self._node.client is None:
                self._node.client = _new_client(self._shipping)
            make_dirs(self._state_dir)
            self.spool.open()
            self._tally.spool_changed(self.spool)
            self._thread = threading.Thread(target=self._worker.run, name="es-log-shipper", daemon=True)
            self._thread.start()

    def follow(self, file: LogFile, offset: int) -> None:
        """The handler's log file, before its first line: a run killed before it shipped anything
        leaves the checkpoint there (see :mod:`._log_files`)."""
        make_dirs(self._state_dir)
        self._worker.files.follow(file, offset)

    def submit(self, line: bytes, levelno: int) -> None:
        self.submit_at(line, levelno, None, 0)

    def submit_at(self, line: bytes, levelno: int, file: LogFile | None, offset: int) -> None:
        """A line the handler wrote at ``offset`` of the log ``file`` (None: written nowhere)."""
        if self._thread is None:
            self.start()
        queue = self._queue
        if len(queue) < self._capacity:
            queue.append((levelno, line, file, offset))
            if len(queue) == self._wake_at:
                self._wake.set()
        else:  # the worker cannot even spool as fast: count the loss, never block
            self._tally.dropped(levelno, 1)

    def stats(self) -> dict:
        counts = self._tally.counts
        return {
            "queued": self._worker.taken + len(self._queue),
            "shipped": counts["shipped"],
            "duplicates": counts["duplicates"],
            "recovered": counts["recovered"],
            "file_gaps": {name.partition(":")[2]: count for name, count in counts.items() if name.startswith("gap:")},
            "retried": counts["retried"],
            "spooled": counts["spooled"],
            "dropped": dict(self._tally.dropped_by_level),
            "dead_lettered": counts["dead_lettered"],
            "queue_size": len(self._queue),
            "spool_bytes": self.spool.size(),
            "spool_oldest": self.spool.oldest(),
        }

    def close(self, timeout: float) -> None:
        """Send what is queued until ``timeout`` seconds from now, spool the rest, stop the worker."""
        worker = self._worker
        worker.stop(time.monotonic() + max(0.0, timeout))
        if self._thread is not None:
            self._thread.join(worker.time_left() + JOIN_SLACK)
        self._capacity = 0  # closed: later records are counted as dropped
        worker.spool_left_behind(stuck=self._thread is not None and self._thread.is_alive())
        worker.files.release()
        self._node.close()


def from_settings(shipping: ShippingSettings, metrics: Metrics) -> ElasticsearchSink:
    """The started sink (``logger_manager.enable()`` calls this when ``ELASTICSEARCH_URL`` is
    set): a missing client package is an error here, not a spool that never drains."""
    try:
        sink = ElasticsearchSink(shipping, metrics)
        sink.start()
    except ImportError as exc:
        raise LoggingSetupError(f"ELASTICSEARCH_URL is set but the Elasticsearch client cannot be loaded: {exc}"
                                ) from exc
    except OSError as exc:  # STATE_DIR (the spool lives there) cannot be made or read
        raise LoggingSetupError(f"cannot keep the log spool under LOG_SHIP_STATE_DIR={shipping.state_dir}: "
                                f"{exc.strerror or exc}") from exc
    return sink
