"""The ``slack`` channel: a Slack incoming webhook (``{"text": ...}``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import SEVERITY_MARK, HttpPoster, mask, plain_text, require

if TYPE_CHECKING:
    from ..config import AlertSettings


class SlackChannel:
    name = "slack"

    def __init__(self, url, timeout: float = 10.0) -> None:
        self._url = url
        mask(url)
        self._http = HttpPoster(self.name, timeout)

    async def send(self, alert) -> None:
        text = f"{SEVERITY_MARK[alert.severity.value]} {plain_text(alert)}"
        await self._http.post(self._url.get(), {"text": text})

    async def send_resolved(self, alert) -> None:
        await self._http.post(self._url.get(), {"text": f"✅ {plain_text(alert, resolved=True)}"})

    async def close(self) -> None:
        await self._http.close()


def from_settings(alerts: AlertSettings) -> SlackChannel:
    return SlackChannel(require(alerts, "slack", "SLACK_WEBHOOK_URL", "slack_webhook_url",
                                "an incoming webhook URL"))
