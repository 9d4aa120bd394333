"""The ``discord`` channel: a Discord webhook (``DISCORD_WEBHOOK_URL``), one message per alert.

The message is a short ``content`` line (severity and title) and one embed: the title, the
alert's message as its description, a colour per severity, and fields for the type, the task,
the repeats and the details. Every text is cut to Discord's limits (content 2000 characters,
embed title 256, description 4096, 25 fields of 256/1024, 6000 in all) so Discord never refuses
an alert for its size.

Rate limits: a ``429`` is waited out as long as Discord asks (``retry_after`` in the JSON body,
else the ``Retry-After`` or ``X-RateLimit-Reset-After`` header); when an answer says the bucket
is empty (``X-RateLimit-Remaining: 0``), the next message waits for its reset instead of being
refused. 400, 401, 403 and 404 (an unknown webhook) are not retried.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ._common import HttpPoster, delivery_error, mask, one_line, require, retry_after_header

if TYPE_CHECKING:
    from ..config import AlertSettings

CONTENT_MAX, TITLE_MAX, DESCRIPTION_MAX = 2000, 256, 4096
FIELDS_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX, EMBED_TOTAL_MAX = 25, 256, 1024, 6000
COLOUR = {"low": 0x3498DB, "medium": 0xF1C40F, "high": 0xE67E22, "critical": 0xE74C3C, "resolved": 0x2ECC71}
MARK = {"low": "ℹ️", "medium": "⚠️", "high": "🔶", "critical": "🚨", "resolved": "✅"}
PERMANENT = frozenset({400, 401, 403, 404, 405, 413})
WAIT_IN_SEND = 5.0  # an empty bucket resetting sooner is waited for in send(); later, retried then


def cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fields(alert) -> list[dict]:
    facts = [("type", alert.type.value)]
    if alert.task_id:
        facts.append(("task", alert.task_id))
    if alert.repeat_count > 1:
        facts.append(("repeated", f"{alert.repeat_count} times"))
    facts += sorted((str(key), str(value)) for key, value in alert.details.items())
    return [{"name": cut(one_line(name), FIELD_NAME_MAX), "value": cut(value, FIELD_VALUE_MAX) or "-",
             "inline": len(value) <= 40} for name, value in facts[:FIELDS_MAX]]


def message(alert, resolved: bool = False) -> dict:
    """The webhook body of ``alert`` (firing, or ``resolved``), within Discord's limits."""
    state = "resolved" if resolved else alert.severity.value
    head = "RESOLVED" if resolved else alert.severity.value.upper()
    title = cut(one_line(alert.title), TITLE_MAX)
    fields = _fields(alert)
    room = EMBED_TOTAL_MAX - len(title)
    while fields and sum(len(f["name"]) + len(f["value"]) for f in fields) > room // 2:
        fields.pop()  # the details give way first; the message keeps at least half the room
    room -= sum(len(f["name"]) + len(f["value"]) for f in fields)
    embed = {"title": title, "description": cut(alert.message, min(DESCRIPTION_MAX, room)),
             "color": COLOUR[state], "fields": fields}
    when = alert.to_dict()
    embed["timestamp"] = (resolved and when["resolved_at_iso"]) or when["last_seen_iso"]
    content = cut(f"{MARK[state]} **{head}**: {one_line(alert.title)}", CONTENT_MAX)
    return {"content": content, "embeds": [embed], "allowed_mentions": {"parse": []}}


class DiscordChannel:
    name = "discord"

    def __init__(self, url, timeout: float = 10.0) -> None:
        self._url = url  # a Secret: the webhook token is in its path
        mask(url)
        self._http = HttpPoster(self.name, timeout)
        self._bucket_reset = 0.0  # time.monotonic() when an empty rate-limit bucket refills

    async def _post(self, body: dict) -> None:
        wait = self._bucket_reset - time.monotonic()
        if wait > WAIT_IN_SEND:
            raise delivery_error("discord: rate limit bucket empty", retry_after=wait)
        if wait > 0:
            await asyncio.sleep(wait)
        response = await self._http.post(self._url.get() + "?wait=true", body, check=False)
        headers = response.headers
        if headers.get("X-RateLimit-Remaining") == "0":
            reset = retry_after_header(headers.get("X-RateLimit-Reset-After"))
            self._bucket_reset = time.monotonic() + (reset or 0.0)
        if response.status_code < 400:
            return
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        if response.status_code == 429:
            asked = answer.get("retry_after")
            retry_after = float(asked) if isinstance(asked, (int, float)) else (
                retry_after_header(headers.get("Retry-After"))
                or retry_after_header(headers.get("X-RateLimit-Reset-After")))
            raise delivery_error("discord: rate limited (429)", retry_after=retry_after)
        reason = str(answer.get("message") or f"HTTP {response.status_code}")
        raise delivery_error(f"discord: {cut(one_line(reason), 200)} (HTTP {response.status_code})",
                             permanent=response.status_code in PERMANENT)

    async def send(self, alert) -> None:
        await self._post(message(alert))

    async def send_resolved(self, alert) -> None:
        await self._post(message(alert, resolved=True))

    async def close(self) -> None:
        await self._http.close()


def from_settings(alerts: AlertSettings) -> DiscordChannel:
    return DiscordChannel(require(alerts, "discord", "DISCORD_WEBHOOK_URL", "discord_webhook_url",
                                  "a channel webhook URL"))
