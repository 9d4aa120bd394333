"""The ``telegram`` channel: Bot API ``sendMessage`` with MarkdownV2-escaped text."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ._common import SEVERITY_MARK, HttpPoster, delivery_error, mask, require

if TYPE_CHECKING:
    from ..config import AlertSettings

_RESERVED = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
MAX_LENGTH = 4096  # Telegram's limit for one message
TITLE_LENGTH = 512  # the bold title line and the facts line are cut here; the message gets the rest


def escape_markdown_v2(text: str) -> str:
    """Escape every character MarkdownV2 reserves, so user text shows literally."""
    return _RESERVED.sub(r"\\\1", text)


def format_message(alert, resolved: bool = False) -> str:
    """The MarkdownV2 text of ``alert``: a bold title line, the message, the facts; at most
    MAX_LENGTH (counted in UTF-16 units, as Telegram does), cut inside the title or the message
    but never through an escape or the bold marks."""
    head = "✅ RESOLVED" if resolved else f"{SEVERITY_MARK[alert.severity.value]} {alert.severity.value.upper()}"
    facts = [f"type: {alert.type.value}"]
    if alert.task_id:
        facts.append(f"task: {alert.task_id}")
    if alert.repeat_count > 1:
        facts.append(f"repeated {alert.repeat_count} times")
    title = f"*{_escaped_within(f'{head}: {alert.title}', TITLE_LENGTH)}*"
    facts_line = _escaped_within(", ".join(facts), TITLE_LENGTH)
    room = MAX_LENGTH - _length(title) - _length(facts_line) - 2  # two line breaks
    return "\n".join([title, _escaped_within(alert.message, room), facts_line])


def _length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _escaped_within(text: str, limit: int) -> str:
    """``text`` escaped, cut (with "…") to at most ``limit`` UTF-16 units."""
    escaped = escape_markdown_v2(text)
    if _length(escaped) <= limit:
        return escaped
    kept, used = [], 1  # the "…"
    for character in text:
        piece = escape_markdown_v2(character)
        used += _length(piece)
        if used > limit:
            break
        kept.append(piece)
    return "".join(kept) + "…"


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
            parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
            retry_after = parameters.get("retry_after")  # 429: the Bot API says how long to wait
            raise delivery_error(f"telegram: {reason}", permanent=response.status_code == 400,
                                 retry_after=float(retry_after) if isinstance(retry_after, (int, float)) else None)

    async def send(self, alert) -> None:
        await self._send(format_message(alert))

    async def send_resolved(self, alert) -> None:
        await self._send(format_message(alert, resolved=True))

    async def close(self) -> None:
        await self._http.close()


def from_settings(alerts: AlertSettings) -> TelegramChannel:
    token = require(alerts, "telegram", "TELEGRAM_BOT_TOKEN", "telegram_token", "a bot token")
    chat = require(alerts, "telegram", "TELEGRAM_CHAT_ID", "telegram_chat_id", "a chat id")
    return TelegramChannel(token, chat, alerts.telegram_api_url)
