"""Collaborators for unit tests: what a manager is given instead of the real logger and alert managers."""
from __future__ import annotations

from typing import Any


class Recorder:
    """An event log and an alerter (``exporter.ports``) that keep every call they receive."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, Any, Any, dict[str, Any]]] = []
        self.alerts: list[tuple[Any, Any, str, str, dict[str, Any] | None]] = []
        self.resolved: list[tuple[Any, dict[str, Any]]] = []

    def log_event(self, action: Any, outcome: Any, message: Any = None, **fields: Any) -> None:
        self.events.append((action, outcome, message, fields))

    def trigger_alert_sync(self, alert_type: Any, severity: Any, title: str, message: str,
                           task_id: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.alerts.append((alert_type, severity, title, message, details))

    def resolve_alerts_sync(self, alert_type: Any, **details: Any) -> int:
        self.resolved.append((alert_type, details))
        return 0
