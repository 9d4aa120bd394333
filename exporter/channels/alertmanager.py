"""The ``alertmanager`` channel: POST ``/api/v2/alerts`` to a Prometheus Alertmanager, as its
client contract asks.

Labels ``alertname`` (``Bot`` + the type in CamelCase), ``severity`` (mapped onto the routing
severities critical / warning / info), ``type``, ``bot_severity``, ``fingerprint``, ``job``
(``bot``, the scrape job of the deploy/ Prometheus) and ``instance`` (this host, with
``METRICS_PORT``); annotations ``summary`` and ``description``.

A firing alert is sent with ``endsAt`` four ``RESEND_INTERVAL`` ahead and sent again every
``RESEND_INTERVAL`` while it fires, so Alertmanager keeps it firing exactly as long as the bot
does (and ends it on its own if the bot dies). A severity change changes the labels: the old
label set is ended in the same request. Resolving sends ``endsAt`` = the resolution time.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..errors import DeliveryError
from ._common import HttpPoster, mask, require

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("exporter.alerts")
ROUTING_SEVERITY = {"critical": "critical", "high": "warning", "medium": "info", "low": "info"}
RESEND_INTERVAL = 60.0  # seconds between two sends of a firing alert (Alertmanager asks 30 s to 3 min)


def alertname(alert_type: str) -> str:
    return "Bot" + "".join(part.capitalize() for part in alert_type.split("_"))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(alert, resolved_at: float | None = None, *, ends_at: float | None = None,
            target: dict[str, str] | None = None) -> dict:
    labels = {
        "alertname": alertname(alert.type.value),
        "severity": ROUTING_SEVERITY[alert.severity.value],
        "type": alert.type.value,
        "bot_severity": alert.severity.value,
        "fingerprint": alert.fingerprint,
        "source": "bot",
        **(target or {}),
    }
    description = alert.message
    if alert.task_id:
        description += f" (task {alert.task_id})"
    if alert.repeat_count > 1:
        description += f"; repeated {alert.repeat_count} times"
    item = {"labels": labels, "annotations": {"summary": alert.title, "description": description},
            "startsAt": _iso(alert.first_seen)}
    if resolved_at is not None or ends_at is not None:
        item["endsAt"] = _iso(resolved_at if resolved_at is not None else ends_at)
    return item


class AlertmanagerChannel:
    name = "alertmanager"

    def __init__(self, url, timeout: float = 10.0, *, target: dict[str, str] | None = None,
                 resend_interval: float = RESEND_INTERVAL) -> None:
        self._url = url  # a Secret: may carry basic-auth credentials
        mask(url)
        self._http = HttpPoster(self.name, timeout)
        self._target = target or {}
        self._interval = resend_interval
        self._firing: dict[str, object] = {}  # fingerprint -> the alert as last sent firing
        self._resender: asyncio.Task | None = None

    def _endpoint(self) -> str:
        return self._url.get().rstrip("/") + "/api/v2/alerts"

    def _firing_item(self, alert) -> dict:  # three missed sends in a row end it
        return payload(alert, ends_at=time.time() + self._interval * 4, target=self._target)

    async def send(self, alert) -> None:
        items = [self._firing_item(alert)]
        before = self._firing.get(alert.fingerprint)
        if before is not None and before.severity != alert.severity:  # the old label set ends now
            items.append(payload(before, resolved_at=time.time(), target=self._target))
        await self._http.post(self._endpoint(), items)
        self._firing[alert.fingerprint] = alert.copy()
        self._start_resending()

    def adopt(self, alerts) -> None:
        """Alerts still firing when the bot starts again (an earlier process sent them): renewed
        from now on like the ones it sends, or Alertmanager ends them at their endsAt while the
        bot still says they fire. Called on the delivery loop."""
        for alert in alerts:
            self._firing.setdefault(alert.fingerprint, alert.copy())
        self._start_resending()

    def _start_resending(self) -> None:
        if self._firing and (self._resender is None or self._resender.done()):
            self._resender = asyncio.get_running_loop().create_task(self._resend(), name="opsstack-am-resend")

    async def send_resolved(self, alert) -> None:
        ended = alert.resolved_at or alert.last_seen
        items = [payload(alert, resolved_at=ended, target=self._target)]
        before = self._firing.pop(alert.fingerprint, None)
        if before is not None and before.severity != alert.severity:
            items.append(payload(before, resolved_at=ended, target=self._target))
        await self._http.post(self._endpoint(), items)

    async def _resend(self) -> None:
        """Send every firing alert again each interval, its endsAt moved ahead."""
        while self._firing:
            await asyncio.sleep(self._interval)
            alerts = list(self._firing.values())
            try:
                await self._http.post(self._endpoint(), [self._firing_item(a) for a in alerts])
            except DeliveryError as exc:  # the next round tries again; the endsAt ahead covers it
                log.warning("re-sending %d firing alert(s) to Alertmanager failed: %s", len(alerts), exc)

    async def close(self) -> None:
        if self._resender is not None:
            self._resender.cancel()
            self._resender = None
        await self._http.close()


def from_settings(settings: Settings) -> AlertmanagerChannel:
    port = settings.metrics.port
    target = {"job": "bot", "instance": socket.gethostname() + (f":{port}" if port else "")}
    return AlertmanagerChannel(require(settings, "alertmanager", "ALERTMANAGER_URL", "alertmanager_url",
                                       "the Alertmanager base URL"), target=target)
