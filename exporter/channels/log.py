"""The ``log`` channel: one line per alert on the ``exporter.alerts`` logger."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings


LEVELS = {"low": logging.INFO, "medium": logging.WARNING, "high": logging.ERROR, "critical": logging.CRITICAL}


class LogChannel:
    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("exporter.alerts")

    def _line(self, alert, state: str) -> None:
        extra = f" task={alert.task_id}" if alert.task_id else ""
        if alert.repeat_count > 1:
            extra += f" repeated={alert.repeat_count}"
        self.logger.log(LEVELS[alert.severity.value], "alert %s [%s] %s: %s - %s (fingerprint=%s%s)",
                        state, alert.severity.value, alert.type.value, alert.title, alert.message,
                        alert.fingerprint, extra)

    async def send(self, alert) -> None:
        self._line(alert, "firing")

    async def send_resolved(self, alert) -> None:
        self._line(alert, "resolved")

    async def close(self) -> None:
        pass


def from_settings(settings: Settings) -> LogChannel:
    return LogChannel()
