"""PLACEHOLDER owned by the alert-manager work: replaced by the real manager.

Contract other managers rely on (keep it):
    from exporter.alert_manager import alert_manager, AlertType, AlertSeverity
    alert_manager.trigger_alert_sync(AlertType.X, AlertSeverity.Y, title, message, task_id=None, details=None)
is thread-safe, never blocks, never raises, and does nothing while the manager is disabled.
"""
from __future__ import annotations

import enum


class AlertSeverity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class AlertType(str, enum.Enum):
    DOWNLOAD_FAILED = "download_failed"
    UPLOAD_FAILED = "upload_failed"
    DISK_FULL = "disk_full"
    MEMORY_HIGH = "memory_high"
    API_ERROR = "api_error"
    RATE_LIMITED = "rate_limited"
    BACKUP_FAILED = "backup_failed"
    INTEGRITY_FAILED = "integrity_failed"
    SLOW_OPERATION = "slow_operation"
    CUSTOM = "custom"


class _Placeholder:
    enabled = False

    def trigger_alert_sync(self, *args, **kwargs):
        return None


alert_manager = _Placeholder()
