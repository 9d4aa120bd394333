"""The ``webhook`` channel: a JSON POST ``{"status": "firing"|"resolved", "alert": {...}}``."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import HttpPoster, mask, require

if TYPE_CHECKING:
    from ..config import AlertSettings


class WebhookChannel:
    name = "webhook"

    def __init__(self, url, timeout: float = 10.0) -> None:
        self._url = url  # a Secret: webhook URLs often carry a token
        mask(url)
        self._http = HttpPoster(self.name, timeout)

    async def send(self, alert) -> None:
        await self._http.post(self._url.get(), {"status": "firing", "alert": alert.to_dict()})

    async def send_resolved(self, alert) -> None:
        await self._http.post(self._url.get(), {"status": "resolved", "alert": alert.to_dict()})

    async def close(self) -> None:
        await self._http.close()


def from_settings(alerts: AlertSettings) -> WebhookChannel:
    return WebhookChannel(require(alerts, "webhook", "ALERT_WEBHOOK_URL", "webhook_url", "a URL"))
