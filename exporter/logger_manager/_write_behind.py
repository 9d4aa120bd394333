"""The handler the manager puts on the root logger: plain records are written behind the caller.

On the bot's thread, a record below WARNING (no exception, no stack) costs one ``append`` of
``(record, message, trace ids)`` to a queue: the trace ids of the active span are taken there,
and so is the message when its arguments could change afterwards (anything but ``str``,
``int``, ``float``, ``bool`` and ``None``). So are its ``extra`` fields when none of their
values can change either (those classes, and tuples of them: the logger manager's own events
are such records); a record with an ``extra`` value that could change (a list, a dict, an
object) is formatted there and its line queued. A writer thread formats and writes them
(:class:`._handler.ECSHandler` does), in order, at most :data:`GATHER` seconds after the first
of them was queued, all of them with one write per file: formatted a batch at a time, away from
the bot's work, a line costs less CPU than formatted between the bot's own steps (the bench
``bench/bench_cpu_share.py`` measures it).

Everything else is written before the call returns, with what is queued: a WARNING or worse,
a record a sink logged, and any record while :data:`PENDING_LIMIT` records are queued (the
caller then writes the queue itself: no record is ever dropped, and memory stays bounded).
``flush()`` writes what is queued.

So a process killed with SIGKILL loses at most :data:`PENDING_LIMIT` + 1 lines (the queue and
the one being written; one more for each other thread logging at that instant), all below
WARNING, the last ones logged (within :data:`GATHER` seconds while the writer keeps up); every
line up to the last WARNING or worse is in the file (``tests/test_write_behind.py`` kills a process to check).
A forked child leaves the lines queued before the fork to the parent, and its sinks let go of
the parent's connections and locks at once (:meth:`._handler.ECSHandler.after_fork_in_child`);
with its first line it opens the files again and starts a writer of its own
(:meth:`._handler.ECSHandler.reopen_in_child`), so a child that execs first (``subprocess``
with a ``preexec_fn``) opens and starts nothing.
"""
from __future__ import annotations

import collections
import logging
import os
import queue as queues
import threading
import weakref

from ..metrics import worker_failed
from ..ports import thread_state
from ._formatter import STANDARD_ATTRIBUTES, ECSFormatter, TraceIds
from ._handler import ECSHandler

log = logging.getLogger("exporter.logger_manager")

PENDING_LIMIT = 256  # records queued at the most: the lines a SIGKILL can lose
GATHER = 0.2  # seconds the writer lets records gather before it writes them
HURRY_AT = PENDING_LIMIT // 4  # records queued that end the gathering at once
_PLAIN_ATTRIBUTES = len(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__)
WARNING = logging.WARNING
_UNCHANGING = frozenset((str, int, float, bool, type(None)))
_FORMATTED = object()  # in a queued entry's place of the trace ids: the message is the line


class WriteBehind(logging.Handler):
    """Queues plain records for a writer thread and writes the rest at once, in one order."""

    def __init__(self, inner: ECSHandler, formatter: ECSFormatter, trace_ids: TraceIds | None) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self._format = formatter.format_captured
        self._format_now = formatter.format
        self._trace_ids = trace_ids
        self._queue: collections.deque = collections.deque()
        self._closed = False  # closing: every record is written at once
        self._start()
        _running.add(self)
        if not _fork_hook:
            os.register_at_fork(after_in_child=_restart_in_child)
            _fork_hook.append(True)

    def _start(self) -> None:
        # The writer sleeps in a get() of _signals, with no timeout, while nothing is queued. A
        # token wakes it: the first record of a batch (whoever finds _signalled False; two
        # threads at once make two tokens, which only ends the gathering early), a burst, and
        # closing. A SimpleQueue rather than Events: put and get are a C call each, where an
        # Event's set, wait and clear run a Condition in Python, and there is no timeout to
        # look at an empty queue every second.
        self._signals: queues.SimpleQueue = queues.SimpleQueue()
        self._signalled = False  # a token is on its way for what is queued (cleared by the writer)
        self._thread = threading.Thread(target=self._run, name="opsstack-log-writer", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """The caller's side (``Handler.handle`` without the lock: the queue needs none). The
        inner handler's filters run here too, on the caller's thread, before the record waits."""
        if (self.filters and not self.filter(record)) or (self.inner.filters and not self.inner.filter(record)):
            return False
        queue = self._queue
        attributes = record.__dict__
        if (record.levelno >= WARNING or record.exc_info or record.stack_info or thread_state.__dict__
                or len(queue) >= PENDING_LIMIT or self._closed):
            self._write_now(record)
            return True
        message = None
        ids = self._trace_ids() if self._trace_ids is not None else None
        # extra fields; "message" and "asctime" are what another handler's formatting adds
        if len(attributes) != _PLAIN_ATTRIBUTES and not _unchanging(attributes, attributes.keys() - STANDARD_ATTRIBUTES):
            message, ids = self._format(record, None, ids), _FORMATTED
        elif record.msg.__class__ is not str or record.args.__class__ is not tuple:
            message = record.getMessage()  # an object as the message, or a mapping of arguments
        else:
            for arg in record.args:
                if arg.__class__ not in _UNCHANGING:  # its text could change before it is written
                    message = record.getMessage()
                    break
        queue.append((record, message, ids))
        if self._closed:  # close() ran meanwhile, its last flush perhaps before this append
            self.flush()  # written, or counted as failed (the files are closed): never left queued
            return True
        if not self._signalled:  # read after the append: see _run
            self._signalled = True
            self._signals.put(None)  # once per gathering: the writer sleeps while nothing is queued
        elif len(queue) == HURRY_AT:
            self._signals.put(None)  # a burst: write it now rather than at the end of the gathering
        return True

    def _handle_first_in_child(self, record: logging.LogRecord) -> bool:
        self._reopen_in_child()
        return self.handle(record)

    def _reopen_in_child(self) -> None:
        """A forked child's first line (or its close): files and a writer of its own."""
        with self._child_lock:
            if "handle" in self.__dict__:
                self.inner.reopen_in_child()
                self._start()
                del self.handle

    def emit(self, record: logging.LogRecord) -> None:
        self._write_now(record)

    def _write_now(self, record: logging.LogRecord) -> None:
        inner = self.inner
        inner.acquire()
        try:
            if thread_state.__dict__:  # a sink's thread: the inner handler decides
                self._drain()
                inner.emit(record)
            else:  # with what is queued, in one write
                self._drain((record.levelno, self._format_now(record)))
        finally:
            inner.release()

    def flush(self) -> None:
        """Write every queued record now."""
        self.inner.acquire()
        try:
            self._drain()
        finally:
            self.inner.release()

    def _drain(self, last: tuple[int, str] | None = None) -> None:
        """Format the queued records and write them, oldest first, then ``last`` (a formatted
        ``(levelno, line)``), all at once (under the inner handler's lock)."""
        queue, format_captured = self._queue, self._format
        lines = []
        while queue:
            record, message, ids = queue.popleft()
            lines.append((record.levelno, message if ids is _FORMATTED else format_captured(record, message, ids)))
        if last is not None:
            lines.append(last)
        if lines:
            self.inner.output(lines, True)

    def _run(self) -> None:
        """Sleep until a token, let the batch gather, write it. No record waits unwritten for
        want of a token: a caller appends, then reads _signalled; the writer takes the tokens,
        clears _signalled, then writes the queue. A caller that reads True either appended
        before the clear, so before the write, or after another caller set it again, whose
        token is on its way; one that reads False puts a token for the next round."""
        signals = self._signals
        while True:
            signals.get()
            # let a batch gather (ends at once on a burst, or when closing); take its tokens
            _pause(signals, 0 if self._closed else GATHER)
            self._signalled = False
            if self._closed:  # close() sets it before its token: a token taken here is seen
                return
            try:
                self.flush()
            except Exception:  # thread boundary: report and go on (the callers write meanwhile)
                worker_failed(self.inner.metrics, "log_writer", log, "writing log lines")
                _pause(signals, GATHER)
                if self._closed:
                    return

    def close(self) -> None:
        """Stop the writer, write what is left, close the files."""
        if "handle" in self.__dict__:  # a forked child that never logged: its own parts first
            self._reopen_in_child()
        self._closed = True
        _running.discard(self)
        self._signals.put(None)
        self._thread.join()
        self.flush()
        self.inner.close()
        super().close()


def _pause(signals: queues.SimpleQueue, seconds: float) -> None:
    """Wait up to ``seconds`` for a token of ``signals`` (0: no wait), then take the ones there."""
    if seconds:
        try:
            signals.get(timeout=seconds)
        except queues.Empty:
            pass
    try:
        while True:
            signals.get_nowait()
    except queues.Empty:
        return


def _unchanging(attributes: dict, extras: set) -> bool:
    """Whether the values of the ``extras`` are all of classes whose value cannot change (and
    tuples of them): then the record can be formatted later and give the same line."""
    for name in extras:
        value = attributes[name]
        kind = value.__class__
        if kind not in _UNCHANGING and not (kind is tuple and all([item.__class__ in _UNCHANGING for item in value])):
            return False
    return True


_running: weakref.WeakSet = weakref.WeakSet()  # the open handlers, whose writers a fork leaves behind
_fork_hook: list = []  # whether the hook is registered (os.register_at_fork has no undo)


def _restart_in_child() -> None:
    """In a forked child: the lines queued are the parent's to write; the sinks let go of the
    parent's; files and a writer of its own come with the child's first line."""
    for handler in list(_running):
        handler._queue.clear()
        handler.inner.after_fork_in_child()
        handler._child_lock = threading.Lock()  # a fresh one: the parent's may be held by a thread gone here
        handler.handle = handler._handle_first_in_child  # until then, shadowing the method
