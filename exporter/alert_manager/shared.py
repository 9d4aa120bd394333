"""Alerts notified once for all workers (shared marks: Redis), asked off the delivery loop.

With shared marks, only the first of the workers raising an alert within the dedup window
notifies (per severity), ``gather`` seconds later, with the count of workers that raised it by
then as its ``repeat_count``; the others count it deduplicated.

Redis is asked on a thread of its own (:class:`OffLoop`), never on the delivery loop, and
waited for at most ``ASK_WAIT`` seconds: a Redis that stops answering (suspended, a peer gone
without a reset) then counts as an unreachable one (the mark 1: notify; the count 0; the rate
slot: this process's own limit), and while one question is overdue the next ones get that
answer at once. So it delays the channels by ``ASK_WAIT`` at most, once, instead of blocking
every lane for the client's socket timeout. The notifications of one alert key keep their
order: while a question about a key is on its way, that key's later notifications wait for it.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..metrics import worker_failed
from .model import FIRING, Alert

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..ports import SharedMarks

log = logging.getLogger("exporter.alert_manager")

ASK_WAIT = 0.25  # seconds a question to the shared marks is waited for
RELEASE = "release"  # what :meth:`SharedNotifier.route` is given when a key's gathering time is over


class OffLoop:
    """The calls of a :class:`SharedMarks`, on one thread, each waited for at most ``wait``."""

    def __init__(self, marks: SharedMarks, wait: float = ASK_WAIT) -> None:
        self.marks = marks
        self.wait = wait
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="opsstack-shared-marks")
        self._overdue: asyncio.Future | None = None
        self._slow = False

    async def ask(self, fallback: Any, name: str, *args: Any) -> Any:
        """``marks.<name>(*args)``, or ``fallback`` when it does not answer in time (or an
        earlier question is still unanswered); a question given up is not asked late."""
        if self._overdue is not None and not self._overdue.done():
            return fallback
        method, given_up = getattr(self.marks, name), threading.Event()
        future = asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: fallback if given_up.is_set() else method(*args))
        try:
            answer = await asyncio.wait_for(asyncio.shield(future), self.wait)
        except asyncio.TimeoutError:
            given_up.set()
            self._overdue = future
            future.add_done_callback(_retrieve)
            if not self._slow:
                log.warning("the shared marks (Redis) did not answer within %gs: alerts go on "
                            "without them until they do", self.wait)
                self._slow = True
            return fallback
        if self._slow:
            log.info("the shared marks (Redis) answer again")
            self._slow = False
        return answer

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _retrieve(future: asyncio.Future) -> None:
    """An answer come too late is dropped (its error too: the breaker has logged it)."""
    if not future.cancelled():
        future.exception()


class SharedNotifier:
    """The firing notifications of routed alerts, held back until one worker sends each once.
    ``put(kind, alert)`` hands a notification to the channels."""

    def __init__(self, asker: OffLoop, put: Callable[[str, Alert], None], metrics: Metrics, *,
                 window: float, gather: float) -> None:
        self.asker = asker
        self.put = put
        self.metrics = metrics
        self.window = window
        self.gather = gather
        self.gathering: dict[str, tuple[asyncio.TimerHandle, Alert]] = {}
        self.held: dict[str, list[tuple[str, Alert | None]]] = {}  # key -> what waits for its question
        self.asked: dict[str, tuple[str, Alert]] = {}  # key -> the notification its question is about
        self.tasks: set[asyncio.Task] = set()

    @staticmethod
    def key(alert: Alert) -> str:
        return f"alert:{alert.fingerprint}:{alert.severity.value}"

    def busy(self) -> bool:
        return bool(self.gathering or self.held)

    def route(self, kind: str, alert: Alert | None, key: str | None = None) -> None:
        """``(FIRING or RESOLVED, alert)``, or ``(RELEASE, None, key)``, in their order per key."""
        key = key or self.key(alert)
        if key in self.held:
            self.held[key].append((kind, alert))
        elif key in self.gathering:  # its gathered firing notification goes first, with the count
            handle, gathered = self.gathering.pop(key)
            handle.cancel()
            self._ask(key, gathered, lambda: self._release(key, gathered))
            if kind != RELEASE:
                self.held[key].append((kind, alert))
        elif kind == FIRING:
            self._ask(key, alert, lambda: self._first(key, alert))
        elif kind != RELEASE:
            self.put(kind, alert)

    def _ask(self, key: str, alert: Alert, question: Callable[[], Awaitable[None]]) -> None:
        self.held[key], self.asked[key] = [], (FIRING, alert)
        task = asyncio.get_running_loop().create_task(self._answered(key, question))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answered(self, key: str, question: Callable[[], Awaitable[None]]) -> None:
        try:
            await question()
        except Exception:  # task boundary: report, and notify rather than lose it
            worker_failed(self.metrics, "alert_intake", log, "notifying an alert once for all workers")
            self.put(*self.asked[key])
        del self.asked[key]
        for kind, alert in self.held.pop(key):
            self.route(kind, alert, key)

    async def _first(self, key: str, alert: Alert) -> None:
        """Mark ``alert``; the first worker to mark it gathers the others' count, the rest are done."""
        if await self.asker.ask(1, "mark", key, self.window) > 1:
            self.metrics.alerts_deduplicated.labels(alert.type.value).inc()
            return
        handle = asyncio.get_running_loop().call_later(self.gather, self.route, RELEASE, None, key)
        self.gathering[key] = (handle, alert)

    async def _release(self, key: str, alert: Alert) -> None:
        alert.repeat_count = max(alert.repeat_count, await self.asker.ask(0, "count", key))
        self.put(FIRING, alert)

    def stop(self) -> None:
        """Hand every notification held back to the channels now (with this worker's count)."""
        for task in self.tasks:
            task.cancel()
        for handle, alert in self.gathering.values():
            handle.cancel()
            self.put(FIRING, alert)
        for key, later in self.held.items():
            self.put(*self.asked[key])
            for kind, alert in later:
                if kind != RELEASE:
                    self.put(kind, alert)
        self.gathering.clear()
        self.held.clear()
        self.asked.clear()
        self.asker.close()
