"""Per-operation state: a fixed ring of the last ``window`` samples plus running totals.

Memory per operation is bounded by the window (three preallocated arrays of ``window`` items),
whatever the number of calls. Statistics are exact over the samples still in the window and
younger than the retention: ``median``/``p95``/``p99`` use linear interpolation between the two
nearest ranks of those samples (the same definition as ``numpy.percentile``'s default); once more
than ``window`` calls were made, older calls are no longer represented (the error is the
difference between the last ``window`` samples and the whole history, by design).
"""
from __future__ import annotations

import math
from array import array
from time import perf_counter
from typing import Any

from ..metrics import OperationSeries


class OperationState:
    """The samples and totals of one operation; ``series.lock`` guards everything here."""

    __slots__ = ("name", "series", "window", "durations", "stamps", "failed", "position",
                 "calls", "errors", "total", "last_alert", "alerting")

    def __init__(self, name: str, series: OperationSeries, window: int) -> None:
        self.name = name
        self.series = series
        self.window = window
        self.durations = array("d", bytes(8 * window))
        self.stamps = array("d", bytes(8 * window))  # perf_counter() at the end of each sample
        self.failed = bytearray(window)
        self.position = 0
        self.calls = 0
        self.errors = 0
        self.total = 0.0
        self.last_alert = -math.inf
        self.alerting = False  # a SLOW_OPERATION alert of it fires: the next run in time resolves it

    def record(self, duration: float, end: float, failed: bool, index: int,
               trace_id: str | None) -> None:
        """Add one sample; ``index`` is its histogram bucket (computed outside the lock)."""
        series = self.series
        with series.lock:
            position = self.position
            self.durations[position] = duration
            self.stamps[position] = end
            self.failed[position] = failed
            position += 1
            self.position = 0 if position == self.window else position
            self.calls += 1
            self.total += duration
            if failed:
                self.errors += 1
            series.counts[index] += 1
            series.sum += duration
            series.count += 1
            if trace_id is not None:
                series.exemplars[index] = (trace_id, duration, None)

    def samples(self, max_age: float) -> tuple[list[float], int]:
        """The durations younger than ``max_age`` seconds, and how many of them failed."""
        cutoff = perf_counter() - max_age
        with self.series.lock:
            filled = min(self.calls, self.window)
            durations = self.durations[:filled]
            stamps = self.stamps[:filled]
            failed = self.failed[:filled]
        kept = [d for d, t in zip(durations, stamps) if t >= cutoff]
        errors = sum(1 for f, t in zip(failed, stamps) if f and t >= cutoff)
        return kept, errors

    def stats(self, max_age: float) -> dict[str, Any]:
        values, window_errors = self.samples(max_age)
        with self.series.lock:
            calls, errors, total = self.calls, self.errors, self.total
        return summarize(self.name, values, window_errors, calls, errors, total)


def percentile(ordered: list[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks of a sorted, non-empty list."""
    rank = (len(ordered) - 1) * fraction
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(name: str, values: list[float], window_errors: int, calls: int, errors: int,
              total: float) -> dict[str, Any]:
    """The stats dictionary of ``get_stats``: ``call_count``/``error_count``/``total_duration``
    count every call since enable or reset; the rest describe the retained window."""
    result: dict[str, Any] = {
        "operation": name, "call_count": calls, "error_count": errors, "total_duration": total,
        "window_count": len(values), "window_error_count": window_errors,
    }
    if not values:
        result.update(average_duration=0.0, min_duration=0.0, max_duration=0.0, median=0.0, p95=0.0,
                      p99=0.0, std_dev=0.0)
        return result
    ordered = sorted(values)
    count = len(ordered)
    mean = math.fsum(ordered) / count
    variance = math.fsum((v - mean) ** 2 for v in ordered) / (count - 1) if count > 1 else 0.0
    result.update(average_duration=mean, min_duration=ordered[0], max_duration=ordered[-1],
                  median=percentile(ordered, 0.5), p95=percentile(ordered, 0.95),
                  p99=percentile(ordered, 0.99), std_dev=math.sqrt(variance))
    return result
