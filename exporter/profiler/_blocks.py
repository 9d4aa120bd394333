"""The objects ``profile_sync``/``profile_async``/``mark_operation`` hand out.

Enabled, a block costs two ``perf_counter()`` calls, a ``bisect`` and one locked update of the
operation's state. Disabled (or for an operation not in ``PROFILED_OPERATIONS``) the profiler
returns one shared :class:`NoopBlock` per name, whose ``__enter__``/``__exit__`` do nothing.
"""
from __future__ import annotations

import functools
from bisect import bisect_left
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .. import tracing as _tracing
from ..metrics import OPERATION_BUCKETS

if TYPE_CHECKING:
    from ._stats import OperationState
    from .manager import Profiler

_BUCKETS = OPERATION_BUCKETS


def _wrap(profiler: "Profiler", name: str, func: Any, asynchronous: bool) -> Any:
    """A decorator body that asks the profiler at every call (so enabling later takes effect)."""
    import inspect  # ~1 MiB with ast and dis: loaded by the first decorator, not on import

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with profiler.profile_async(name):
                return await func(*args, **kwargs)
        return async_wrapper
    if asynchronous:
        raise TypeError(f"profile_async({name!r}) decorates coroutine functions; use profile_sync")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with profiler.profile_sync(name):
            return func(*args, **kwargs)
    return wrapper


class NoopBlock:
    """What a disabled profiler returns: a context manager (sync and async) and a decorator."""

    __slots__ = ("_profiler", "_name", "_asynchronous")

    def __init__(self, profiler: "Profiler", name: str, asynchronous: bool = False) -> None:
        self._profiler = profiler
        self._name = name
        self._asynchronous = asynchronous

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    def __call__(self, func: Any) -> Any:
        return _wrap(self._profiler, self._name, func, self._asynchronous)


class Block:
    """One measured run of an operation (a fresh object per ``with``)."""

    __slots__ = ("_profiler", "_state", "_start", "_span", "duration")
    _asynchronous = False

    def __init__(self, profiler: "Profiler", state: "OperationState") -> None:
        self._profiler = profiler
        self._state = state

    def __enter__(self) -> Any:
        self._span = _tracing.start_operation_span(self._state.name) if _tracing._tracer is not None else None
        self._start = perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        end = perf_counter()
        duration = self.duration = end - self._start
        failed = exc_type is not None
        trace_id = None if self._span is None else _tracing.end_operation_span(self._span, exc)
        self._state.record(duration, end, failed, bisect_left(_BUCKETS, duration), trace_id)
        if failed:
            self._profiler._failed(self._state)
        if duration > self._profiler._threshold:
            self._profiler._slow(self._state, duration, failed)
        elif self._state.alerting:
            self._profiler._in_time(self._state)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Any) -> Any:
        return _wrap(self._profiler, self._state.name, func, self._asynchronous)


class AsyncBlock(Block):
    """What ``profile_async`` hands out: as a decorator it accepts coroutine functions only."""

    __slots__ = ()
    _asynchronous = True


class Timer:
    """``mark_operation(name)``: started now; ``stop()`` records once and returns the seconds."""

    __slots__ = ("name", "_block", "_start", "_stopped")

    def __init__(self, name: str, block: Block | None) -> None:
        self.name = name
        self._block = block
        self._stopped = False
        if block is not None:
            block.__enter__()
            self._start = block._start
        else:
            self._start = perf_counter()

    def stop(self) -> float:
        """The seconds since the timer started. Raises RuntimeError when called twice."""
        if self._stopped:
            raise RuntimeError(f"timer {self.name!r} was already stopped")
        self._stopped = True
        if self._block is None:
            return perf_counter() - self._start
        self._block.__exit__(None, None, None)
        return self._block.duration

    @property
    def stopped(self) -> bool:
        return self._stopped
