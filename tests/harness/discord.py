"""A local HTTP server that answers Discord's "Execute Webhook" as Discord does, limits included.

``POST /api/webhooks/{id}/{token}[?wait=true]`` with ``{"content", "embeds"}``: 200 and the
message with ``wait=true``, else 204. It refuses what Discord refuses, with Discord's error
shape (``{"code": N, "message": ...}``): an unknown webhook (404, code 10015), an empty message
(400, 50006), content over 2000 characters, more than 10 embeds, an embed title over 256, a
description over 4096, more than 25 fields, a field name over 256 or value over 1024, a footer
over 2048, or more than 6000 characters in all embeds (400, 50035 "Invalid Form Body").

Rate limit: at most ``limit`` messages per ``window`` seconds; past it, 429 with the JSON body
``{"message": "You are being rate limited.", "retry_after": s, "global": false}`` and the
headers ``Retry-After`` and ``X-RateLimit-*``; every answer carries the ``X-RateLimit-*``
headers of the bucket, as Discord's do.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import time
import urllib.parse

from .http_server import LoopbackServer

_PATH = re.compile(r"^/api/webhooks/(?P<id>\d+)/(?P<token>[\w-]+)$")
EMBED_LIMITS = {"title": 256, "description": 4096}
FIELD_LIMITS = {"name": 256, "value": 1024}


def _invalid(where: str, detail: str) -> tuple[int, dict]:
    return 400, {"code": 50035, "message": "Invalid Form Body",
                 "errors": {where: {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": detail}]}}}


def form_error(body: dict) -> tuple[int, dict] | None:
    """Discord's 400 answer to this message body, or None when it is accepted."""
    content = body.get("content") or ""
    embeds = body.get("embeds") or []
    if not content.strip() and not embeds:
        return 400, {"code": 50006, "message": "Cannot send an empty message"}
    if len(content) > 2000:
        return _invalid("content", "Must be 2000 or fewer in length.")
    if len(embeds) > 10:
        return _invalid("embeds", "Must be 10 or fewer in length.")
    total = 0
    for n, embed in enumerate(embeds):
        for key, limit in EMBED_LIMITS.items():
            if len(embed.get(key) or "") > limit:
                return _invalid(f"embeds.{n}.{key}", f"Must be {limit} or fewer in length.")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            return _invalid(f"embeds.{n}.fields", "Must be 25 or fewer in length.")
        for m, item in enumerate(fields):
            for key, limit in FIELD_LIMITS.items():
                if not str(item.get(key) or "").strip():
                    return _invalid(f"embeds.{n}.fields.{m}.{key}", "This field is required")
                if len(str(item[key])) > limit:
                    return _invalid(f"embeds.{n}.fields.{m}.{key}", f"Must be {limit} or fewer in length.")
        footer = (embed.get("footer") or {}).get("text") or ""
        if len(footer) > 2048:
            return _invalid(f"embeds.{n}.footer.text", "Must be 2048 or fewer in length.")
        total += sum(len(embed.get(key) or "") for key in EMBED_LIMITS) + len(footer)
        total += sum(len(str(f["name"])) + len(str(f["value"])) for f in fields)
    if total > 6000:
        return _invalid("embeds", "Embed size exceeds maximum size of 6000")
    return None


class DiscordWebhook(LoopbackServer):
    """``webhook_url`` is what to configure as DISCORD_WEBHOOK_URL; ``messages`` what was posted."""

    def __init__(self, limit: int = 5, window: float = 2.0) -> None:
        super().__init__()
        self.webhook_id, self.token = "112233445566778899", "stand-in-token_ABCdef-123"
        self.limit, self.window = limit, window
        self.messages: list[dict] = []
        self.refused: list[float] = []  # when each 429 was answered
        self.sent_at: list[float] = []  # when each accepted message arrived (the bucket)
        self._ids = itertools.count(1_000_000)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/api/webhooks/{self.webhook_id}/{self.token}"

    def _bucket(self, now: float) -> tuple[int, float]:
        """Messages left in the window and seconds until the oldest counted one leaves it."""
        recent = [t for t in self.sent_at if now - t < self.window]
        reset_after = self.window - (now - recent[0]) if recent else self.window
        return self.limit - len(recent), max(0.0, reset_after)

    def _headers(self, remaining: int, reset_after: float, now: float) -> dict:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(max(0, remaining)),
                "X-RateLimit-Reset": f"{now + reset_after:.3f}", "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": "webhook-stand-in"}

    def route(self, method, path, headers, body):
        parts = urllib.parse.urlsplit(path)
        match = _PATH.match(parts.path)
        if method != "POST" or not match:
            return 404, {"code": 0, "message": "404: Not Found"}
        if match["id"] != self.webhook_id or match["token"] != self.token:
            return 404, {"code": 10015, "message": "Unknown Webhook"}
        try:
            message = json.loads(body or b"{}")
        except ValueError:
            return 400, {"code": 50109, "message": "The request body contains invalid JSON."}
        with self.lock:
            now = time.time()
            remaining, reset_after = self._bucket(now)
            if remaining <= 0:
                self.refused.append(now)
                headers = self._headers(0, reset_after, now)
                headers["Retry-After"] = str(math.ceil(reset_after))
                return 429, {"message": "You are being rate limited.", "retry_after": round(reset_after, 3),
                             "global": False}, headers
            refused = form_error(message)
            if refused is not None:
                return (*refused, self._headers(remaining, reset_after, now))
            self.sent_at.append(now)
            self.messages.append(message)
            remaining, reset_after = self._bucket(now)
            answer = {"id": str(next(self._ids)), "webhook_id": self.webhook_id, "type": 0,
                      "content": message.get("content") or "", "embeds": message.get("embeds") or []}
        wait = urllib.parse.parse_qs(parts.query).get("wait", ["false"])[0] == "true"
        status, payload = (200, answer) if wait else (204, None)
        return status, payload, self._headers(remaining, reset_after, now)
