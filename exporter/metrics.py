"""Every Prometheus metric of the project, defined in one place on an injectable registry.

Conventions: one prefix (``bot_``), base units (seconds, bytes), ``_total`` for counters,
timestamps rather than ages, labels only from small fixed sets, series created up front so
they start at 0. Managers receive a :class:`Metrics` and only increment, set and observe;
anything expensive happens at scrape time.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from bisect import bisect_left

from typing import TYPE_CHECKING

from . import __version__
from .channels import CHANNELS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# prometheus_client (about 12 MB resident with its exposition, http.server and ssl imports) is
# imported when the first Metrics is built, not when this module is: importing opsstack with
# every feature off stays small.

# Operation durations: a millisecond to an hour (large downloads take that long).
OPERATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)
BACKUP_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ALERT_SEVERITIES = ("low", "medium", "high", "critical")
OUTCOMES = ("success", "failure")
BACKUP_TIERS = ("hourly", "daily", "weekly", "manual")
FEATURES = ("logging", "alerts", "backups", "profiler", "recovery", "tracing", "shipping")
# The background loops: each counts an unexpected error in bot_worker_errors_total and goes on.
WORKERS = ("integrity_check", "log_shipper", "log_writer", "backup_scheduler", "alert_intake", "alert_delivery",
           "alert_persistence")
# The alert manager's AlertType values (tests/test_metrics_endpoint.py keeps them equal): metrics
# sits below the managers and does not import them.
ALERT_TYPES = ("download_failed", "upload_failed", "disk_full", "memory_high", "api_error", "rate_limited",
               "backup_failed", "integrity_failed", "slow_operation", "custom")
NOTIFICATION_OUTCOMES = ("success", "failure", "dropped")
# The outputs of the logger manager's handler: its two files, stderr, the sinks, custom events.
LOG_HANDLERS = ("file", "errors", "console", "sink", "events")


def register_standard_collectors(registry: CollectorRegistry) -> None:
    """prometheus_client's ``process_*``, ``python_gc_*`` and ``python_info`` on ``registry``, as
    every Python exporter has them: they read ``/proc`` and the ``gc`` module at scrape time."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)


def log_level_label(levelno: int) -> str:
    """The ``level`` label (one of :data:`LOG_LEVELS`) of a stdlib ``levelno``; custom levels round down."""
    return LOG_LEVELS[min(4, max(0, levelno // 10 - 1))]


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


class Metrics:
    """The project's metrics on one registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        register_standard_collectors(r)

        # -- build and features
        self.build_info = Info("bot_build", "Version of opsstack and Python serving these metrics.",
                               registry=r)
        self.build_info.info({"version": __version__, "python": sys.version.split()[0]})
        self.feature_enabled = Gauge("bot_feature_enabled", "1 when an opsstack feature is on.",
                                     ["feature"], registry=r)
        for feature in FEATURES:
            self.feature_enabled.labels(feature)

        # -- profiler
        self.operation_duration = OperationDurations(registry=r)
        self.operation_errors = Counter("bot_operation_errors_total",
                                        "Profiled operations that raised.", ["operation"], registry=r)
        self.slow_operations = Counter("bot_slow_operations_total",
                                       "Operations slower than PROFILE_THRESHOLD.", ["operation"],
                                       registry=r)
        self.operations_overflow = Counter(
            "bot_profiler_operations_overflow_total",
            "Measurements of operations past PROFILER_MAX_OPERATIONS, recorded as operation=\"other\".",
            registry=r)

        # -- bot activity (from the logger manager's custom events)
        self.downloads = Counter("bot_downloads_total", "Downloads finished, by outcome.", ["outcome"],
                                 registry=r)
        self.uploads = Counter("bot_uploads_total", "Uploads finished, by outcome.", ["outcome"],
                               registry=r)
        self.transferred_bytes = Counter("bot_transferred_bytes_total",
                                         "Bytes of successful downloads and uploads.", ["direction"],
                                         registry=r)
        self.api_calls = Counter("bot_api_calls_total", "API calls made by the bot, by outcome.",
                                 ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.downloads.labels(outcome)
            self.uploads.labels(outcome)
            self.api_calls.labels(outcome)
        for direction in ("download", "upload"):
            self.transferred_bytes.labels(direction)

        # -- logging and shipping
        self.log_records = LogRecordCounts(r)
        self.log_redactions = Counter("bot_log_redactions_total", "Secrets masked in log records.",
                                      registry=r)
        self.log_handler_errors = Counter("bot_log_handler_errors_total",
                                          "Log records a handler failed to write.", ["handler"],
                                          registry=r)
        self.ship_queued = Counter("bot_log_shipping_queued_total",
                                   "Log records queued for Elasticsearch.", registry=r)
        self.ship_shipped = Counter("bot_log_shipping_shipped_total",
                                    "Log records Elasticsearch accepted.", registry=r)
        self.ship_retried = Counter("bot_log_shipping_retried_total",
                                    "Bulk requests retried after a failure.", registry=r)
        self.ship_spooled = Counter("bot_log_shipping_spooled_total",
                                    "Log records written to the on-disk spool.", registry=r)
        self.ship_dropped = Counter("bot_log_shipping_dropped_total",
                                    "Log records dropped (queue or spool full), by level.", ["level"],
                                    registry=r)
        self.ship_dead_lettered = Counter("bot_log_shipping_dead_lettered_total",
                                          "Log records Elasticsearch rejected for their content.",
                                          registry=r)
        self.ship_queue_size = Gauge("bot_log_shipping_queue_records",
                                     "Log records waiting in memory.", registry=r)
        self.spool_bytes = Gauge("bot_log_spool_bytes", "Bytes in the on-disk log spool.", registry=r)
        self.spool_oldest = Gauge("bot_log_spool_oldest_timestamp_seconds",
                                  "Time of the oldest spooled record (0 when empty).", registry=r)
        for level in LOG_LEVELS:
            self.ship_dropped.labels(level)
        for handler in LOG_HANDLERS:
            self.log_handler_errors.labels(handler)

        # -- alerts
        self.alerts = Counter("bot_alerts_total", "Alerts raised, by type and severity.",
                              ["type", "severity"], registry=r)
        self.alerts_deduplicated = Counter("bot_alerts_deduplicated_total",
                                           "Repeated alerts folded into an earlier one.", ["type"],
                                           registry=r)
        self.alerts_active = Gauge("bot_alerts_active", "Unresolved alerts, by severity.", ["severity"],
                                   registry=r)
        self.alert_notifications = Counter("bot_alert_notifications_total",
                                           "Notifications by channel and outcome.",
                                           ["channel", "outcome"], registry=r)
        self.alert_callback_errors = Counter("bot_alert_callback_errors_total",
                                             "Subscribers and handlers that raised or timed out.",
                                             registry=r)
        self.alert_delivery_queue = Gauge("bot_alert_delivery_queue_size",
                                          "Notifications waiting for a retry.", registry=r)
        for severity in ALERT_SEVERITIES:
            self.alerts_active.labels(severity)
            for kind in ALERT_TYPES:
                self.alerts.labels(kind, severity)
        for kind in ALERT_TYPES:
            self.alerts_deduplicated.labels(kind)
        for channel in CHANNELS:
            for outcome in NOTIFICATION_OUTCOMES:
                self.alert_notifications.labels(channel, outcome)
        self.alert_notifications.labels("intake", "dropped")  # the intake queue was full

        # -- resources
        self.disk_free_ratio = Gauge("bot_disk_free_ratio", "Free fraction of the disk of a watched path.",
                                     ["path"], registry=r)
        self.memory_used_ratio = Gauge("bot_system_memory_used_ratio", "Used fraction of system memory.",
                                       registry=r)
        self.process_memory = Gauge("bot_process_resident_memory_bytes", "Resident memory of the bot.",
                                    registry=r)

        # -- backups
        self.backup_last_success = Gauge("bot_backup_last_success_timestamp_seconds",
                                         "Time the last backup succeeded (0: never).", registry=r)
        self.backup_last_attempt = Gauge("bot_backup_last_attempt_timestamp_seconds",
                                         "Time the last backup was attempted (0: never).", registry=r)
        self.backup_duration = Histogram("bot_backup_duration_seconds", "Time to create a backup.",
                                         buckets=BACKUP_BUCKETS, registry=r)
        self.backup_size = Gauge("bot_backup_last_size_bytes", "Archive size of the last backup.",
                                 registry=r)
        self.backup_files = Gauge("bot_backup_last_files", "Files in the last backup.", registry=r)
        self.backups = Counter("bot_backups_total", "Backups attempted, by outcome.", ["outcome"],
                               registry=r)
        self.backup_verifications = Counter("bot_backup_verifications_total",
                                            "Backup verifications, by outcome.", ["outcome"], registry=r)
        self.backup_last_verify_ok = Gauge("bot_backup_last_verify_ok",
                                           "1 when the last verification passed, 0 when it failed.",
                                           registry=r)
        self.backup_restores = Counter("bot_backup_restores_total", "Restores, by outcome.", ["outcome"],
                                       registry=r)
        self.backups_retained = Gauge("bot_backups_retained", "Backups kept, by retention tier.",
                                      ["tier"], registry=r)
        self.backup_drills = Counter("bot_backup_drills_total", "Restore drills, by outcome.",
                                     ["outcome"], registry=r)
        self.backup_last_drill = Gauge("bot_backup_last_drill_timestamp_seconds",
                                       "Time the last restore drill finished (0: never).", registry=r)
        self.backup_last_drill_success = Gauge(
            "bot_backup_last_drill_success", "1 when the last restore drill passed, 0 when it failed "
            "or none ran.", registry=r)
        self.backup_interval = Gauge("bot_backup_interval_seconds",
                                     "Seconds between scheduled backups (BACKUP_FREQUENCY; 0: none "
                                     "scheduled).", registry=r)
        self.backup_drill_interval = Gauge("bot_backup_drill_interval_seconds",
                                           "Seconds between scheduled restore drills (0: none).",
                                           registry=r)
        for outcome in OUTCOMES:
            self.backups.labels(outcome)
            self.backup_verifications.labels(outcome)
            self.backup_restores.labels(outcome)
            self.backup_drills.labels(outcome)
        for tier in BACKUP_TIERS:
            self.backups_retained.labels(tier)

        # -- integrity and recovery
        self.integrity_checks = Counter("bot_integrity_checks_total", "Integrity checks, by outcome.",
                                        ["outcome"], registry=r)
        self.integrity_last_check = Gauge("bot_integrity_last_check_timestamp_seconds",
                                          "Time of the last integrity check.", registry=r)
        self.integrity_last_ok = Gauge("bot_integrity_last_check_ok",
                                       "1 when the last integrity check passed.", registry=r)
        self.integrity_repairs = Counter("bot_integrity_repairs_total", "Repairs, by outcome.",
                                         ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.integrity_checks.labels(outcome)
            self.integrity_repairs.labels(outcome)

        # -- the exporter itself
        self.scrape_duration = Gauge("bot_exporter_scrape_duration_seconds",
                                     "Time the previous scrape of /metrics took.", registry=r)
        self.worker_errors = Counter("bot_worker_errors_total",
                                     "Unexpected errors in a background worker (logged; it goes on).",
                                     ["worker"], registry=r)
        for worker in WORKERS:
            self.worker_errors.labels(worker)


def worker_failed(metrics: Metrics, worker: str, logger, what: str) -> None:
    """Report the exception being handled in a background loop (call it from the loop's one
    broad ``except``): logged with its traceback, counted in ``bot_worker_errors_total``."""
    logger.exception("%s failed unexpectedly (the %s worker goes on)", what, worker)
    metrics.worker_errors.labels(worker).inc()


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide metrics, made on first use (not at import)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default
