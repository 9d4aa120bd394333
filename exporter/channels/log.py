"""The ``log`` channel: one line per alert on the ``exporter.alerts`` logger, an ECS alert event
(``event.kind: alert``) once the logger manager writes it."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import AlertSettings


LEVELS = {"low": logging.INFO, "medium": logging.WARNING, "high": logging.ERROR, "critical": logging.CRITICAL}
# ECS ``event.severity`` (a number, larger is worse) of each alert severity.
SEVERITIES = {"low": 1, "medium": 2, "high": 3, "critical": 4}
# ECS ``event.category`` of each alert type (a custom alert has none).
CATEGORIES = {"download_failed": "file", "upload_failed": "file", "backup_failed": "file",
              "integrity_failed": "file", "disk_full": "host", "memory_high": "host", "api_error": "api",
              "rate_limited": "api", "slow_operation": "process"}


def ecs_fields(alert, state: str) -> dict[str, object]:
    """The ECS event an alert line is: ``event.kind: alert``, its category, ``alert.<state>`` as
    the action, the severity as a number and a label, the alert type as ``rule.name``."""
    fields: dict[str, object] = {
        "event.kind": "alert", "event.type": ["info"], "event.action": f"alert.{state}",
        "event.severity": SEVERITIES[alert.severity.value], "rule.name": alert.type.value,
        "labels.severity": alert.severity.value, "labels.alert_fingerprint": alert.fingerprint,
    }
    category = CATEGORIES.get(alert.type.value)
    if category is not None:
        fields["event.category"] = [category]
    if alert.task_id:
        fields["labels.task_id"] = alert.task_id
    return fields


class LogChannel:
    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("exporter.alerts")

    def _line(self, alert, state: str) -> None:
        suffix = f" task={alert.task_id}" if alert.task_id else ""
        if alert.repeat_count > 1:
            suffix += f" repeated={alert.repeat_count}"
        level = LEVELS[alert.severity.value] if state == "firing" else logging.INFO  # good news
        self.logger.log(level, "alert %s [%s] %s: %s - %s (fingerprint=%s%s)",
                        state, alert.severity.value, alert.type.value, alert.title, alert.message,
                        alert.fingerprint, suffix, extra=ecs_fields(alert, state))

    async def send(self, alert) -> None:
        self._line(alert, "firing")

    async def send_resolved(self, alert) -> None:
        self._line(alert, "resolved")

    async def close(self) -> None:
        pass


def from_settings(alerts: AlertSettings) -> LogChannel:
    return LogChannel()
