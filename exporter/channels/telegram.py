"""The ``telegram`` channel: Bot API ``sendMessage`` with MarkdownV2-escaped text."""
from __future__ import annotations

import re

from ..config import Settings
from ._common import SEVERITY_MARK, HttpPoster, delivery_error, mask, require

_RESERVED = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
MAX_LENGTH = 4096


def escape_markdown_v2(text: str) -> str:
    """Escape every character MarkdownV2 reserves, so user text shows literally."""
    return _RESERVED.sub(r"\\\1", text)


def format_message(alert, resolved: bool = False) -> str:
    head = "✅ RESOLVED" if resolved else f"{SEVERITY_MARK[alert.severity.value]} {alert.severity.value.upper()}"
    lines = [f"*{escape_markdown_v2(f'{head}: {alert.title}')}*", escape_markdown_v2(alert.message)]
    facts = [f"type: {alert.type.value}"]
    if alert.task_id:
        facts.append(f"task: {alert.task_id}")
    if alert.repeat_count > 1:
        facts.append(f"repeated {alert.repeat_count} times")
    lines.append(escape_markdown_v2(", ".join(facts)))
    text = "\n".join(lines)
    if len(text) > MAX_LENGTH:
        text = text[: MAX_LENGTH - 2].rstrip("\\") + escape_markdown_v2("…")
    return text


class TelegramChannel:
    name = "telegram"

    def __init__(self, token, chat_id: str, api_url: str = "https://api.telegram.org",
                 timeout: float = 10.0) -> None:
        self._token = token
        mask(token)
        self.chat_id = chat_id
        self.api_url = api_url.rstrip("/")
        self._http = HttpPoster(self.name, timeout)

    async def _send(self, text: str) -> None:
        url = f"{self.api_url}/bot{self._token.get()}/sendMessage"
        payload = {"chat_id": self.chat_id, "text": text, "parse_mode": "MarkdownV2",
                   "disable_web_page_preview": True}
        response = await self._http.post(url, payload, check=False)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400 or not body.get("ok"):
            reason = body.get("description") or f"HTTP {response.status_code}"
            # 400: Telegram refuses this message (too long, bad entities, unknown chat): retrying
            # the same text cannot succeed. 401/403/429/5xx may pass after a fix or a wait.
            raise delivery_error(f"telegram: {reason}", permanent=response.status_code == 400)

    async def send(self, alert) -> None:
        await self._send(format_message(alert))

    async def send_resolved(self, alert) -> None:
        await self._send(format_message(alert, resolved=True))

    async def close(self) -> None:
        await self._http.close()


def from_settings(settings: Settings) -> TelegramChannel:
    token = require(settings, "telegram", "TELEGRAM_BOT_TOKEN", "telegram_token", "a bot token")
    chat = require(settings, "telegram", "TELEGRAM_CHAT_ID", "telegram_chat_id", "a chat id")
    return TelegramChannel(token, chat, settings.alerts.telegram_api_url)
