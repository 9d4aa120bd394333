"""The profiler: statistics, errors, bounded memory, retention, slow operations, histogram."""
from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from exporter.config import default_settings
from exporter.metrics import OPERATION_BUCKETS, Metrics
from exporter.profiler import NoopBlock, Profiler, profiler as module_profiler
from exporter.profiler._stats import percentile, summarize
from tests.fakes import Recorder


def make(metrics: Metrics | None = None, **flags) -> tuple[Profiler, Metrics]:
    metrics = metrics or Metrics()
    settings = default_settings().replace(**flags) if flags else default_settings()
    made = Profiler(metrics=metrics)
    made.enable(settings)
    return made, metrics


def sample(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_disabled_returns_shared_noop_and_measures_nothing():
    metrics = Metrics()
    off = Profiler(metrics=metrics)
    block = off.profile_sync("x")
    assert isinstance(block, NoopBlock)
    assert off.profile_sync("x") is block
    with block:
        pass
    assert off.get_stats("x") is None
    assert off.get_all_stats() == {}
    assert sample(metrics, "bot_operation_duration_seconds_count", operation="x") is None
    assert module_profiler.enabled is False


def test_sync_stats_and_histogram():
    prof, metrics = make()
    for _ in range(5):
        with prof.profile_sync("parse"):
            time.sleep(0.002)
    stats = prof.get_stats("parse")
    assert stats["call_count"] == 5 and stats["window_count"] == 5
    assert stats["error_count"] == 0
    assert 0.002 <= stats["min_duration"] <= stats["median"] <= stats["max_duration"]
    assert stats["min_duration"] <= stats["average_duration"] <= stats["max_duration"]
    assert stats["p95"] <= stats["p99"] <= stats["max_duration"]
    assert 0 < stats["std_dev"] <= stats["max_duration"] - stats["min_duration"]  # five sleeps never take the same time
    assert sample(metrics, "bot_operation_duration_seconds_count", operation="parse") == 5
    assert sample(metrics, "bot_operation_duration_seconds_sum", operation="parse") == pytest.approx(
        stats["total_duration"])
    assert sample(metrics, "bot_operation_duration_seconds_bucket", operation="parse", le="0.001") == 0
    assert sample(metrics, "bot_operation_duration_seconds_bucket", operation="parse", le="+Inf") == 5


def test_exceptions_are_counted_and_reraised():
    prof, metrics = make()
    with pytest.raises(KeyError):
        with prof.profile_sync("lookup"):
            raise KeyError("missing")
    with prof.profile_sync("lookup"):
        pass
    stats = prof.get_stats("lookup")
    assert stats["call_count"] == 2 and stats["error_count"] == 1 and stats["window_error_count"] == 1
    assert sample(metrics, "bot_operation_errors_total", operation="lookup") == 1


def test_decorators_sync_and_async_and_late_enable():
    metrics = Metrics()
    prof = Profiler(metrics=metrics)

    @prof.profile_sync("add")
    def add(a, b):
        return a + b

    @prof.profile_async("fetch")
    async def fetch(value):
        await asyncio.sleep(0.001)
        return value

    assert add(1, 2) == 3  # decorated while off: counted once enabled
    prof.enable(default_settings())
    assert add(2, 3) == 5
    assert asyncio.run(fetch("v")) == "v"
    assert prof.get_stats("add")["call_count"] == 1
    assert prof.get_stats("fetch")["call_count"] == 1
    assert prof.get_stats("fetch")["min_duration"] >= 0.001
    with pytest.raises(TypeError):
        prof.profile_async("sync")(lambda: None)


async def test_async_context_manager_counts_errors():
    prof, _ = make()
    async with prof.profile_async("upload"):
        await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        async with prof.profile_async("upload"):
            raise RuntimeError("boom")
    stats = prof.get_stats("upload")
    assert stats["call_count"] == 2 and stats["error_count"] == 1


def test_mark_operation_stop_twice_is_an_error():
    prof, metrics = make()
    timer = prof.mark_operation("critical")
    time.sleep(0.001)
    seconds = timer.stop()
    assert seconds >= 0.001
    with pytest.raises(RuntimeError):
        timer.stop()
    assert prof.get_stats("critical")["call_count"] == 1
    assert prof.get_stats("critical")["max_duration"] == pytest.approx(seconds)
    assert sample(metrics, "bot_operation_duration_seconds_count", operation="critical") == 1


def test_mark_operation_while_disabled_still_times():
    timer = Profiler(metrics=Metrics()).mark_operation("x")
    time.sleep(0.001)  # the measured block
    assert 0.001 <= timer.stop() < 5
    with pytest.raises(RuntimeError):
        timer.stop()


def test_profiled_operations_filter():
    prof, metrics = make(PROFILED_OPERATIONS=["wanted"])
    with prof.profile_sync("wanted"):
        pass
    assert isinstance(prof.profile_sync("other"), NoopBlock)
    with prof.profile_sync("other"):
        pass
    assert set(prof.get_all_stats()) == {"wanted"}
    assert sample(metrics, "bot_operation_duration_seconds_count", operation="other") is None


def test_memory_is_bounded_by_the_window():
    prof, metrics = make(PROFILER_WINDOW=16)
    for index in range(1000):
        with prof.profile_sync("many"):
            pass
    state = prof._states["many"]
    assert len(state.durations) == 16 and len(state.stamps) == 16 and len(state.failed) == 16
    stats = prof.get_stats("many")
    assert stats["call_count"] == 1000 and stats["window_count"] == 16
    assert sample(metrics, "bot_operation_duration_seconds_count", operation="many") == 1000


def test_window_keeps_the_latest_samples():
    prof, _ = make(PROFILER_WINDOW=4)
    state_block = prof.profile_sync("w")
    state = state_block._state
    for value in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        state.record(value, time.perf_counter(), False, 0, None)
    stats = prof.get_stats("w")
    assert stats["min_duration"] == 3.0 and stats["max_duration"] == 6.0
    assert stats["median"] == 4.5


def test_retention_drops_old_samples():
    prof, _ = make(PROFILER_RETENTION_HOURS=1)
    state = prof.profile_sync("old")._state
    now = time.perf_counter()
    state.record(9.0, now - 7200, True, 0, None)  # two hours ago
    state.record(1.0, now, False, 0, None)
    stats = prof.get_stats("old")
    assert stats["window_count"] == 1 and stats["max_duration"] == 1.0
    assert stats["window_error_count"] == 0
    assert stats["call_count"] == 2  # totals since enable still count it


def test_percentiles_are_exact_over_the_window():
    ordered = [float(v) for v in range(1, 101)]
    assert percentile(ordered, 0.5) == 50.5
    assert percentile(ordered, 0.95) == pytest.approx(95.05)
    assert percentile(ordered, 0.99) == pytest.approx(99.01)
    assert percentile([7.0], 0.99) == 7.0


def test_std_dev_is_the_sample_standard_deviation_of_the_window():
    values = [0.5, 1.0, 2.0, 4.5]
    stats = summarize("x", values, window_errors=0, calls=4, errors=0, total=8.0)
    assert stats["std_dev"] == pytest.approx(statistics.stdev(values))
    assert summarize("x", [3.0], window_errors=0, calls=1, errors=0, total=3.0)["std_dev"] == 0.0


def test_slow_operations_counted_logged_and_alerted_once_per_interval():
    recorder, metrics = Recorder(), Metrics()
    prof = Profiler(metrics=metrics, events=recorder, alerts=recorder)
    prof.enable(default_settings().replace(PROFILE_THRESHOLD=0.001))
    for _ in range(3):
        with prof.profile_sync("thumbnail"):
            time.sleep(0.002)
    with prof.profile_sync("fast"):
        pass
    assert sample(metrics, "bot_slow_operations_total", operation="thumbnail") == 3
    assert sample(metrics, "bot_slow_operations_total", operation="fast") == 0
    assert len(recorder.events) == 3
    action, outcome, _, fields = recorder.events[0]
    assert (action, outcome) == ("slow_operation", "success") and fields["duration"] >= 0.002
    assert [alert[:3] for alert in recorder.alerts] == [("slow_operation", "medium", "Slow operation")]  # rate-limited
    slow = prof.get_slow_operations()
    assert [entry["operation"] for entry in slow] == ["thumbnail"]
    assert prof.get_slow_operations(threshold=10) == []


def test_a_run_in_time_resolves_the_slow_operation_alert_once():
    recorder = Recorder()
    prof = Profiler(metrics=Metrics(), events=recorder, alerts=recorder)
    prof.enable(default_settings().replace(PROFILE_THRESHOLD=0.05))
    state = prof.profile_sync("thumbnail")._state
    prof._slow(state, 0.2, failed=False)  # as a slow run reports itself
    for _ in range(2):
        with prof.profile_sync("other"):
            pass
    assert recorder.resolved == []  # another operation in time resolves nothing
    for _ in range(3):
        with prof.profile_sync("thumbnail"):
            pass
    assert recorder.resolved == [("slow_operation", {"operation": "thumbnail"})]  # once, not per run


def test_reset_forgets_statistics():
    prof, _ = make()
    with prof.profile_sync("a"):
        pass
    prof.reset()
    assert prof.get_stats("a") is None
    with prof.profile_sync("a"):
        pass
    assert prof.get_stats("a")["call_count"] == 1


def test_disable_stops_measuring():
    prof, metrics = make()
    prof.disable()
    with prof.profile_sync("a"):
        pass
    assert sample(metrics, "bot_operation_duration_seconds_count", operation="a") is None
    assert sample(metrics, "bot_feature_enabled", feature="profiler") == 0


def test_histogram_labels_observe_api_kept():
    metrics = Metrics()
    metrics.operation_duration.labels("manual").observe(0.2)
    assert sample(metrics, "bot_operation_duration_seconds_bucket", operation="manual", le="0.25") == 1
    assert sample(metrics, "bot_operation_duration_seconds_bucket", operation="manual", le="0.1") == 0
    assert len(OPERATION_BUCKETS) == 20


def test_spans_and_exemplars_when_tracing_is_on():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client.openmetrics.exposition import generate_latest

    from exporter import tracing

    exported = InMemorySpanExporter()
    tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=exported)
    try:
        prof, metrics = make()
        with pytest.raises(ValueError):
            with prof.profile_sync("traced"):
                trace_id = tracing.current_trace_id()
                raise ValueError("bad")
        tracing.force_flush()
        spans = exported.get_finished_spans()
    finally:
        tracing.shutdown()
    assert [span.name for span in spans] == ["traced"]
    assert format(spans[0].context.trace_id, "032x") == trace_id
    assert spans[0].attributes["error.type"] == "ValueError"
    assert spans[0].status.status_code.name == "ERROR"
    text = generate_latest(metrics.registry).decode()
    assert f'# {{trace_id="{trace_id}"}}' in text


def test_concurrent_threads_lose_no_sample():
    import threading

    prof, metrics = make(PROFILER_WINDOW=64)

    def work():
        for _ in range(2000):
            with prof.profile_sync("shared"):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert prof.get_stats("shared")["call_count"] == 8000
    assert prof.get_stats("shared")["window_count"] == 64
    assert sample(metrics, "bot_operation_duration_seconds_count", operation="shared") == 8000


def test_excluded_operation_is_looked_up_once():
    prof, _ = make(PROFILED_OPERATIONS=["only"])
    first = prof.profile_sync("skip")
    assert prof._states["skip"] is None
    assert prof.profile_sync("skip") is first


def test_distinct_operations_are_capped_and_memory_stays_flat(caplog):
    import tracemalloc

    from exporter.config import load_settings
    from exporter.profiler import Profiler

    metrics = Metrics()
    profiler = Profiler(metrics=metrics)
    profiler.enable(load_settings({"ENABLE_PROFILER": True, "PROFILER_MAX_OPERATIONS": 50}, environ={}))

    def measure(names):
        for name in names:
            with profiler.profile_sync(name):
                pass

    measure(f"download_{i}" for i in range(1000))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    measure(f"upload_{i}" for i in range(100_000))
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()

    operations = {s.labels["operation"] for m in metrics.registry.collect() if m.name == "bot_operation_duration_seconds"
                  for s in m.samples}
    assert len(operations) == 51 and "other" in operations and "download_49" in operations
    assert metrics.registry.get_sample_value("bot_profiler_operations_overflow_total") == 950 + 100_000
    assert metrics.registry.get_sample_value("bot_operation_duration_seconds_count", {"operation": "other"}) \
        == 950 + 100_000
    assert grown < 256 * 1024, f"the profiler grew by {grown} bytes over 100,000 new names"
    assert profiler.get_stats("other")["call_count"] == 950 + 100_000
    assert len([r for r in caplog.records if "PROFILER_MAX_OPERATIONS" in r.getMessage()]) == 1
