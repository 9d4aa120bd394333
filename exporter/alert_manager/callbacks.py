"""Subscribers and handlers: sync or async callables, each behind its own bounded lane.

A callback that raises or hangs is timed out, logged and counted
(``bot_alert_callback_errors_total``); it delays only its own lane. Async callbacks run on the
event loop that was running when they were subscribed (the bot's loop), else on the alert
worker's loop; sync callbacks run one at a time in their lane's own daemon thread, so one that
hangs holds up neither the other subscribers nor the process's exit.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable

from ..metrics import Metrics
from .model import Alert

log = logging.getLogger("exporter.alert_manager")

DROP_LOG_INTERVAL = 10.0  # seconds between "dropped" warnings of one lane


def _is_async(callback: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None))


def _name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or type(callback).__name__


class Subscription:
    """A callable and the loop its coroutines belong to (None: the worker's loop)."""

    def __init__(self, callback: Callable[..., Any]) -> None:
        if not callable(callback):
            raise TypeError(f"alert callback must be callable, not {type(callback).__name__}")
        self.callback = callback
        self.is_async = _is_async(callback)
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None


class _SyncRunner:
    """One daemon thread that runs a lane's sync callbacks one after the other."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._main, name=name, daemon=True).start()

    def submit(self, loop: asyncio.AbstractEventLoop, function: Callable[[Alert], Any],
               alert: Alert) -> asyncio.Future:
        """``function(alert)`` on the thread; its outcome in a future of ``loop``."""
        future = loop.create_future()
        self._calls.put((loop, future, function, alert))
        return future

    def stop(self) -> None:
        """End the thread once the call under way (if any) returns."""
        self._calls.put(None)

    def _main(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, function, alert = call
            try:
                outcome = (function(alert), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the lane, which logs it
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the worker's loop is closed: the manager was disabled
                return


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the lane timed out and cancelled it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class CallbackLane:
    """Calls one subscription for each alert in order, bounded to ``max_items`` waiting."""

    def __init__(self, subscription: Subscription, metrics: Metrics, *, max_items: int, timeout: float) -> None:
        self.subscription = subscription
        self.metrics = metrics
        self._runner: _SyncRunner | None = None  # made for the first sync call
        self.items: deque[Alert] = deque()
        self.max_items = max_items
        self.timeout = timeout
        self.wakeup = asyncio.Event()
        self.busy = False
        self.task: asyncio.Task | None = None
        self.calls = 0
        self.dropped = 0
        self.last_drop_log = float("-inf")
        self.stopping = False  # checked as well as cancellation: wait_for may swallow a cancel (3.11)

    def put(self, alert: Alert) -> None:
        if len(self.items) >= self.max_items:
            self.items.popleft()
            self.metrics.alert_callback_errors.inc()
            self.dropped += 1
            now = time.monotonic()
            if now - self.last_drop_log >= DROP_LOG_INTERVAL:  # one line per interval, not per drop
                log.warning("alert callback %s lags behind: dropped %d alert(s) so far",
                            _name(self.subscription.callback), self.dropped)
                self.last_drop_log = now
        self.items.append(alert)
        self.wakeup.set()

    def close(self) -> None:
        """Stop the lane's task and its thread (a call under way finishes on its own)."""
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
        if self._runner is not None:
            self._runner.stop()

    def idle(self) -> bool:
        return not self.items and not self.busy

    async def _call(self, alert: Alert) -> None:
        sub = self.subscription
        worker_loop = asyncio.get_running_loop()
        if sub.is_async and sub.loop is not None and sub.loop is not worker_loop and not sub.loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(sub.callback(alert), sub.loop)
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
            finally:
                future.cancel()
            return
        if sub.is_async:
            await asyncio.wait_for(sub.callback(alert), self.timeout)
            return
        if self._runner is None:
            self._runner = _SyncRunner(f"opsstack-alert-callback-{_name(sub.callback)}"[:60])
        result = await asyncio.wait_for(self._runner.submit(worker_loop, sub.callback, alert), self.timeout)
        if inspect.isawaitable(result):
            await asyncio.wait_for(result, self.timeout)

    async def run(self) -> None:
        while not self.stopping:
            if not self.items:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            alert = self.items.popleft()
            self.busy = True
            try:
                await self._call(alert)
                self.calls += 1
            except asyncio.TimeoutError:
                self.metrics.alert_callback_errors.inc()
                log.warning("alert callback %s did not finish within %gs",
                            _name(self.subscription.callback), self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # plug-in boundary: a subscriber's bug is logged and counted
                self.metrics.alert_callback_errors.inc()
                log.warning("alert callback %s raised %s: %s", _name(self.subscription.callback),
                            type(exc).__name__, exc)
            finally:
                self.busy = False
