"""Cost of profiling one block, and of rendering /metrics, against baselines from the same run.

    .venv/bin/python bench/bench_profiler.py [--calls 200000] [--repeat 5] [--series 10000]

Per call (best of --repeat, in microseconds), with the ratio to ``Histogram.time()``:
  empty ``with`` (a prebuilt ``contextlib.nullcontext``)   baseline of the disabled profiler
  bare ``perf_counter()`` pair                              baseline of the enabled profiler
  prometheus_client ``Histogram.time()`` (prelabelled)      the figure to beat
  ``profile_sync`` enabled (timing, window, statistics, histogram), tracing off
  ``profile_sync`` disabled
  ``profile_async`` enabled, and an empty ``async with`` as its baseline
  ``profile_sync`` enabled with tracing on (a span per block, the trace id as exemplar)

Render: ``bot_operation_duration_seconds`` with enough operations for --series series, through
the exporter's ``render`` (text format) against ``generate_latest`` of a prometheus_client
Histogram holding the same observations.

Goals (issue 4): enabled < Histogram.time() and <= bare pair + 2 us; disabled <= empty with +
0.2 us; render no slower than generate_latest.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, Histogram, generate_latest  # noqa: E402

from exporter.config import default_settings  # noqa: E402
from exporter.exposition import render  # noqa: E402
from exporter.metrics import OPERATION_BUCKETS, Metrics, OperationDurations  # noqa: E402
from exporter.profiler import Profiler  # noqa: E402

perf_counter = time.perf_counter


def best(function, calls: int, repeat: int) -> float:
    """Best seconds per call of ``function(calls)`` (which runs the loop itself)."""
    return min(function(calls) for _ in range(repeat)) / calls


def empty_with(calls: int) -> float:
    manager = contextlib.nullcontext()
    started = perf_counter()
    for _ in range(calls):
        with manager:
            pass
    return perf_counter() - started


def bare_pair(calls: int) -> float:
    started = perf_counter()
    for _ in range(calls):
        begin = perf_counter()
        _ = perf_counter() - begin
    return perf_counter() - started


def histogram_time(calls: int) -> float:
    child = Histogram("bench_seconds", "bench", ["operation"], buckets=OPERATION_BUCKETS,
                      registry=CollectorRegistry()).labels("op")
    started = perf_counter()
    for _ in range(calls):
        with child.time():
            pass
    return perf_counter() - started


def profile_sync_with(profiler: Profiler):
    def run(calls: int) -> float:
        profile_sync = profiler.profile_sync
        started = perf_counter()
        for _ in range(calls):
            with profile_sync("op"):
                pass
        return perf_counter() - started
    return run


def enabled_profiler() -> Profiler:
    profiler = Profiler(metrics=Metrics())
    profiler.enable(default_settings().replace(PROFILE_THRESHOLD=3600))
    return profiler


def async_loop(body):
    def run(calls: int) -> float:
        return asyncio.run(body(calls))
    return run


async def empty_async_with(calls: int) -> float:
    manager = contextlib.nullcontext()
    started = perf_counter()
    for _ in range(calls):
        async with manager:
            pass
    return perf_counter() - started


def profile_async_with(profiler: Profiler):
    async def body(calls: int) -> float:
        profile_async = profiler.profile_async
        started = perf_counter()
        for _ in range(calls):
            async with profile_async("op"):
                pass
        return perf_counter() - started
    return body


def traced(profiler: Profiler, calls: int, repeat: int) -> float:
    """profile_sync with tracing on: an SDK span per block (exported in batches to a no-op
    exporter) and the trace id as the histogram exemplar."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from exporter import tracing

    class Discard:
        def export(self, spans):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=0):
            return True

    tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=Discard())
    try:
        return best(profile_sync_with(profiler), min(calls, 50_000), repeat)
    finally:
        tracing.shutdown()


def render_figures(series: int, repeat: int) -> tuple[float, float, int]:
    per_operation = len(OPERATION_BUCKETS) + 4  # buckets + Inf, count, sum, created
    operations = max(1, series // per_operation)
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = OperationDurations(registry=ours_registry)
    theirs = Histogram("bot_operation_duration_seconds", "Duration of profiled operations.", ["operation"],
                       buckets=OPERATION_BUCKETS, registry=theirs_registry)
    for index in range(operations):
        name = f"operation_{index}"
        for value in (0.0005, 0.02, 0.3, 7.0):
            ours.labels(name).observe(value)
            theirs.labels(name).observe(value)
    body, _ = render(ours_registry, None)
    assert body.count(b"\n") - 2 == generate_latest(theirs_registry).count(b"\n") - 2
    count = body.count(b"\nbot_operation")

    def timed(function) -> float:
        started = perf_counter()
        function()
        return perf_counter() - started

    ours_seconds = min(timed(lambda: render(ours_registry, None)) for _ in range(repeat))
    theirs_seconds = min(timed(lambda: generate_latest(theirs_registry)) for _ in range(repeat))
    return ours_seconds, theirs_seconds, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--series", type=int, default=10_000)
    args = parser.parse_args()

    enabled = enabled_profiler()
    disabled = Profiler(metrics=Metrics())
    rows = [
        ("empty with (nullcontext)", best(empty_with, args.calls, args.repeat)),
        ("bare perf_counter pair", best(bare_pair, args.calls, args.repeat)),
        ("Histogram.time()", best(histogram_time, args.calls, args.repeat)),
        ("profile_sync enabled", best(profile_sync_with(enabled), args.calls, args.repeat)),
        ("profile_sync disabled", best(profile_sync_with(disabled), args.calls, args.repeat)),
        ("empty async with", best(async_loop(empty_async_with), args.calls, args.repeat)),
        ("profile_async enabled", best(async_loop(profile_async_with(enabled)), args.calls, args.repeat)),
        ("profile_sync + tracing (span)", traced(enabled, args.calls, args.repeat)),
    ]
    figures = dict(rows)
    histogram = figures["Histogram.time()"]
    print(f"per call, best of {args.repeat} x {args.calls:,} calls (Python {sys.version.split()[0]})")
    print(f"  {'':30} {'us/call':>9} {'vs Histogram.time()':>20}")
    for name, seconds in rows:
        print(f"  {name:30} {seconds * 1e6:9.3f} {seconds / histogram:19.2f}x")
    enabled_us = figures["profile_sync enabled"] * 1e6
    bare_us = figures["bare perf_counter pair"] * 1e6
    disabled_gap = (figures["profile_sync disabled"] - figures["empty with (nullcontext)"]) * 1e6
    print("goals:")
    print(f"  profile_sync enabled < Histogram.time():       {enabled_us:.3f} < {histogram * 1e6:.3f} us"
          f"  {'OK' if enabled_us < histogram * 1e6 else 'MISSED'}")
    print(f"  enabled - bare pair <= 2 us:                    {enabled_us - bare_us:.3f} us"
          f"  {'OK' if enabled_us - bare_us <= 2 else 'MISSED'}")
    print(f"  disabled - empty with <= 0.2 us:                {disabled_gap:.3f} us"
          f"  {'OK' if disabled_gap <= 0.2 else 'MISSED'}")
    ours, theirs, count = render_figures(args.series, args.repeat)
    print(f"render {count:,} series: exporter {ours * 1e3:.1f} ms, generate_latest {theirs * 1e3:.1f} ms, "
          f"ratio {ours / theirs:.2f}  {'OK' if ours <= theirs * 1.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
