"""The alert worker: one daemon thread with its own event loop, where all I/O happens, and a
fixed pool of threads for the loop's blocking calls (SMTP, Celery, the resource check)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

IO_THREADS = 3  # the blocking calls that may overlap: an SMTP and a Celery delivery, the resource check


def start_every_thread(executor: concurrent.futures.ThreadPoolExecutor, count: int) -> None:
    """Start ``count`` threads of ``executor`` now. A pool starts a thread only when work
    overlaps and none is idle, so its threads appear at random moments (the rehearsal saw the
    bot's thread count rise by one long after start, when a SIGSTOP made calls coincide); started
    up front, the count is fixed from ``enable()`` on. Each task waits until all are running."""
    barrier = threading.Barrier(count)
    for future in [executor.submit(barrier.wait, 10.0) for _ in range(count)]:
        future.result()


class LoopThread:
    """Runs an event loop in a daemon thread; ``call`` and ``run`` hand work to it from any thread."""

    def __init__(self, name: str, io_threads: int = IO_THREADS) -> None:
        self.loop = asyncio.new_event_loop()
        self._io_threads = io_threads
        self._executor = concurrent.futures.ThreadPoolExecutor(io_threads, thread_name_prefix=f"{name}-io")
        self.loop.set_default_executor(self._executor)  # shut down by loop.close()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        self.loop.close()

    def start(self) -> "LoopThread":
        self.thread.start()
        self._ready.wait()
        start_every_thread(self._executor, self._io_threads)
        return self

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Schedule ``function(*args)`` on the loop (thread-safe, never blocks)."""
        self.loop.call_soon_threadsafe(function, *args)

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result from another thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
