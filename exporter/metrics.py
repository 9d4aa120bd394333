"""Every Prometheus metric of the project, defined in one place on an injectable registry.

Conventions: one prefix (``bot_``), base units (seconds, bytes), ``_total`` for counters,
timestamps rather than ages, labels only from small fixed sets, series created up front so
they start at 0. Managers receive a :class:`Metrics` and only increment, set and observe;
anything expensive happens at scrape time.
"""
from __future__ import annotations

import sys
import threading

from typing import TYPE_CHECKING

from . import __version__
from ._collectors import (  # noqa: F401 - re-exported
    LOG_LEVELS, OPERATION_BUCKETS, LogRecordCounts, OperationDurations, OperationSeries)
from .channels import CHANNELS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# prometheus_client (about 12 MB resident with its exposition, http.server and ssl imports) is
# imported when the first Metrics is built, not when this module is: importing opsstack with
# every feature off stays small.

BACKUP_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)

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
# Why unshipped log lines were gone at start (exporter.sinks._log_files).
FILE_GAP_REASONS = ("rotated_away", "truncated", "missing")
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
        self.ship_duplicates = Counter("bot_log_shipping_duplicates_total", "Log records Elasticsearch "
                                       "already held (409 on create): not indexed twice.", registry=r)
        self.ship_recovered = Counter("bot_log_shipping_recovered_total", "Log lines read back from the "
                                      "log file at start, not known to be shipped.", registry=r)
        self.ship_file_gaps = Counter("bot_log_shipping_file_gaps_total", "Unshipped log lines found "
                                      "gone at start, by reason.", ["reason"], registry=r)
        self.ship_queue_size = Gauge("bot_log_shipping_queue_records",
                                     "Log records waiting in memory.", registry=r)
        self.spool_bytes = Gauge("bot_log_spool_bytes", "Bytes in the on-disk log spool.", registry=r)
        self.spool_oldest = Gauge("bot_log_spool_oldest_timestamp_seconds",
                                  "Time of the oldest spooled record (0 when empty).", registry=r)
        for level in LOG_LEVELS:
            self.ship_dropped.labels(level)
        for reason in FILE_GAP_REASONS:
            self.ship_file_gaps.labels(reason)
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
