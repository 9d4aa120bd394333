"""The two hot-path metrics as custom collectors: recording is a list index or a dict add on the
caller's thread; the Prometheus families are built at scrape time. :mod:`exporter.metrics`
declares them with every other metric."""
from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Operation durations: a millisecond to an hour (large downloads take that long).
OPERATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class OperationSeries:
    """One operation's histogram: bucket counts (not cumulative; the last is +Inf), sum, count
    and the latest exemplar per bucket. The profiler records under ``lock`` itself."""

    __slots__ = ("lock", "counts", "sum", "count", "exemplars", "created", "mirror")

    def __init__(self, mirror=None) -> None:
        self.lock = threading.Lock()
        self.counts = [0] * (len(OPERATION_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0
        self.exemplars: list = [None] * (len(OPERATION_BUCKETS) + 1)
        self.created = time.time()
        self.mirror = mirror  # a prometheus_client child in multiprocess mode, else None

    def observe(self, value: float, trace_id: str | None = None) -> None:
        index = bisect_left(OPERATION_BUCKETS, value)
        with self.lock:
            self.counts[index] += 1
            self.sum += value
            self.count += 1
            if trace_id is not None:
                self.exemplars[index] = (trace_id, value, time.time())
        if self.mirror is not None:
            self.mirror.observe(value)


class OperationDurations:
    """``bot_operation_duration_seconds{operation}``: a histogram whose buckets the profiler fills
    with a list index and an add; cumulative counts and exemplars are built at scrape time.

    ``labels(operation).observe(seconds)`` works like a prometheus_client histogram. In
    multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) every observation is also mirrored into a
    prometheus_client Histogram, whose files ``MultiProcessCollector`` aggregates.
    """

    name = "bot_operation_duration_seconds"
    documentation = "Duration of profiled operations."

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._series: dict[str, OperationSeries] = {}
        self._lock = threading.Lock()
        self._mirror = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the client's own switch, read by it too
            from prometheus_client import Histogram

            self._mirror = Histogram(self.name, self.documentation, ["operation"],
                                     buckets=OPERATION_BUCKETS, registry=None)
        if registry is not None:
            registry.register(self)

    def labels(self, operation: str) -> OperationSeries:
        series = self._series.get(operation)
        if series is None:
            with self._lock:
                series = self._series.get(operation)
                if series is None:
                    mirror = self._mirror.labels(operation) if self._mirror is not None else None
                    series = self._series[operation] = OperationSeries(mirror)
        return series

    def clear(self) -> None:
        with self._lock:
            self._series.clear()

    def describe(self):
        from prometheus_client.metrics_core import HistogramMetricFamily

        return [HistogramMetricFamily(self.name, self.documentation, labels=["operation"])]

    def collect(self):
        from prometheus_client.metrics_core import HistogramMetricFamily
        from prometheus_client.samples import Exemplar, Sample
        from prometheus_client.utils import floatToGoString

        family = HistogramMetricFamily(self.name, self.documentation, labels=["operation"])
        for operation, series in sorted(self._series.items()):
            with series.lock:
                counts = list(series.counts)
                exemplars = list(series.exemplars)
                total, made = series.sum, series.created
            buckets, running = [], 0
            for index, bound in enumerate((*OPERATION_BUCKETS, math.inf)):
                running += counts[index]
                le = floatToGoString(bound)
                found = exemplars[index]
                if found is None:
                    buckets.append((le, running))
                else:
                    buckets.append((le, running, Exemplar({"trace_id": found[0]}, found[1], found[2])))
            family.add_metric([operation], buckets, total)
            family.samples.append(Sample(self.name + "_created", {"operation": operation}, made))
        yield family


class LogRecordCounts:
    """``bot_log_records_total{level}``: the log handler adds to a dict (it already holds its
    lock), the counter family is built at scrape time. A prometheus_client child costs a lock
    and three calls per record, a fifth of what writing the record costs.

    ``inc(level)`` is for the handler (one thread at a time); in multiprocess mode every
    increment is also mirrored into a prometheus_client Counter for ``MultiProcessCollector``.
    """

    name = "bot_log_records"
    documentation = "Log records written, by level."

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.counts = dict.fromkeys(LOG_LEVELS, 0)
        self.created = time.time()
        self._mirror = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import Counter

            self._mirror = Counter(self.name, self.documentation, ["level"], registry=None)
        if registry is not None:
            registry.register(self)

    def inc(self, level: str, amount: int = 1) -> None:
        self.counts[level] += amount
        if self._mirror is not None:
            self._mirror.labels(level).inc(amount)

    def describe(self):
        from prometheus_client.metrics_core import CounterMetricFamily

        return [CounterMetricFamily(self.name, self.documentation, labels=["level"])]

    def collect(self):
        from prometheus_client.metrics_core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=["level"])
        for level, count in list(self.counts.items()):
            family.add_metric([level], count, created=self.created)
        yield family
