"""Operation timing with bounded memory (``from exporter.profiler import profiler``).

    profiler.enable()
    with profiler.profile_sync("parse_update"): ...
    async with profiler.profile_async("upload"): ...
    timer = profiler.mark_operation("critical"); ...; seconds = timer.stop()
    profiler.get_stats("parse_update")   # call_count, average_duration, median, p95, p99, ...

Each operation keeps a ring of its last ``PROFILER_WINDOW`` samples (older than
``PROFILER_RETENTION_HOURS`` they leave the statistics) and feeds the
``bot_operation_duration_seconds`` histogram; with tracing on, each block is also a span and its
observation carries the trace id as an exemplar. Slow operations are logged and alerted through
the module-level logger and alert managers.
"""
from __future__ import annotations

from .._lazy import lazy_attributes
from ._blocks import AsyncBlock, Block, NoopBlock, Timer
from .manager import SLOW_ALERT_INTERVAL, Profiler


def _profiler() -> Profiler:
    from ..alert_manager import alert_manager
    from ..logger_manager import logger_manager

    return Profiler(events=logger_manager, alerts=alert_manager)


__getattr__ = lazy_attributes(__name__, {"profiler": _profiler})

__all__ = ["AsyncBlock", "Block", "NoopBlock", "Profiler", "SLOW_ALERT_INTERVAL", "Timer", "profiler"]
