"""Operation timing with bounded memory (``from exporter.profiler import profiler``).

    profiler.enable()
    with profiler.profile_sync("parse_update"): ...
    async with profiler.profile_async("upload"): ...
    timer = profiler.mark_operation("critical"); ...; seconds = timer.stop()
    profiler.get_stats("parse_update")   # call_count, average_duration, median, p95, p99, ...

Each operation keeps a ring of its last ``PROFILER_WINDOW`` samples (older than
``PROFILER_RETENTION_HOURS`` they leave the statistics) and feeds the
``bot_operation_duration_seconds`` histogram; with tracing on, each block is also a span and its
observation carries the trace id as an exemplar.
"""
from __future__ import annotations

from ._blocks import AsyncBlock, Block, NoopBlock, Timer
from .profiler import SLOW_ALERT_INTERVAL, Profiler, profiler

__all__ = ["AsyncBlock", "Block", "NoopBlock", "Profiler", "SLOW_ALERT_INTERVAL", "Timer", "profiler"]
