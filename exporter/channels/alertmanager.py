"""The ``alertmanager`` channel: POST ``/api/v2/alerts`` to a Prometheus Alertmanager.

Labels ``alertname`` (``Bot`` + the type in CamelCase), ``severity`` (mapped onto the routing
severities critical / warning / info), ``type``, ``bot_severity`` and ``fingerprint``;
annotations ``summary`` and ``description``. A firing alert carries no ``endsAt`` (Alertmanager
resolves it after its ``resolve_timeout`` unless repeated); resolving sends ``endsAt`` = now.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ._common import HttpPoster, mask, require

if TYPE_CHECKING:
    from ..config import Settings

ROUTING_SEVERITY = {"critical": "critical", "high": "warning", "medium": "info", "low": "info"}


def alertname(alert_type: str) -> str:
    return "Bot" + "".join(part.capitalize() for part in alert_type.split("_"))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(alert, resolved_at: float | None = None) -> dict:
    labels = {
        "alertname": alertname(alert.type.value),
        "severity": ROUTING_SEVERITY[alert.severity.value],
        "type": alert.type.value,
        "bot_severity": alert.severity.value,
        "fingerprint": alert.fingerprint,
        "source": "bot",
    }
    description = alert.message
    if alert.task_id:
        description += f" (task {alert.task_id})"
    if alert.repeat_count > 1:
        description += f"; repeated {alert.repeat_count} times"
    item = {"labels": labels, "annotations": {"summary": alert.title, "description": description},
            "startsAt": _iso(alert.first_seen)}
    if resolved_at is not None:
        item["endsAt"] = _iso(resolved_at)
    return item


class AlertmanagerChannel:
    name = "alertmanager"

    def __init__(self, url, timeout: float = 10.0) -> None:
        self._url = url  # a Secret: may carry basic-auth credentials
        mask(url)
        self._http = HttpPoster(self.name, timeout)

    def _endpoint(self) -> str:
        return self._url.get().rstrip("/") + "/api/v2/alerts"

    async def send(self, alert) -> None:
        await self._http.post(self._endpoint(), [payload(alert)])

    async def send_resolved(self, alert) -> None:
        await self._http.post(self._endpoint(), [payload(alert, resolved_at=alert.resolved_at or alert.last_seen)])

    async def close(self) -> None:
        await self._http.close()


def from_settings(settings: Settings) -> AlertmanagerChannel:
    return AlertmanagerChannel(require(settings, "alertmanager", "ALERTMANAGER_URL", "alertmanager_url",
                                       "the Alertmanager base URL"))
