"""A local HTTP server that answers the Telegram Bot API's ``sendMessage`` as Telegram does.

Replies follow https://core.telegram.org/bots/api: ``{"ok": true, "result": Message}`` on
success, ``{"ok": false, "error_code": N, "description": "..."}`` otherwise (401 for a token
it does not know, 400 for a missing chat or text, or MarkdownV2 that does not parse).
"""
from __future__ import annotations

import itertools
import json
import re
import time
import urllib.parse

from .http_server import LoopbackServer

_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>\w+)$")
_MARKDOWN_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MARKERS = ("*", "_", "~", "`")


def markdown_v2_error(text: str) -> str | None:
    """Telegram's complaint about ``text`` in MarkdownV2, or None when it parses.

    Simplified: entity markers ``* _ ~ ``` must be balanced; every other reserved character
    must be escaped with a backslash (links and pre blocks are not supported here).
    """
    open_markers: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char in _MARKERS:
            if open_markers and open_markers[-1] == char:
                open_markers.pop()
            else:
                open_markers.append(char)
        elif char in _MARKDOWN_V2_RESERVED:
            return (f"Bad Request: can't parse entities: Character '{char}' is reserved and "
                    "must be escaped with the preceding '\\'")
        index += 1
    if open_markers:
        return f"Bad Request: can't parse entities: Can't find end of the entity starting at byte offset {text.rfind(open_markers[-1])}"
    return None


def _chat_id(value: object) -> object:
    try:
        return int(str(value))
    except ValueError:
        return value  # "@channelusername"


class TelegramBotAPI(LoopbackServer):
    """``url`` is the base to configure as TELEGRAM_API_URL; ``messages`` what was sent."""

    def __init__(self, token: str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1") -> None:
        super().__init__()
        self.token = token
        self.messages: list[dict] = []
        self._ids = itertools.count(1)
        self.flood_until = 0.0  # while time.time() is before it: 429 Too Many Requests, as Telegram
        self.refused: list[float] = []  # when each 429 was answered

    def route(self, method, path, headers, body):
        match = _PATH.match(urllib.parse.urlsplit(path).path)
        if not match:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        if match["token"] != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if match["method"] != "sendMessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        params = self._params(headers, body)
        wait = self.flood_until - time.time()
        if wait > 0:
            with self.lock:
                self.refused.append(time.time())
            return 429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after "
                         f"{max(1, round(wait))}", "parameters": {"retry_after": max(1, round(wait))}}
        if not params.get("chat_id"):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat_id is empty"}
        text = str(params.get("text") or "")
        if not text.strip():
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        if len(text) > 4096:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        if params.get("parse_mode") == "MarkdownV2":
            complaint = markdown_v2_error(text)
            if complaint:
                return 400, {"ok": False, "error_code": 400, "description": complaint}
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            # Telegram answers with a numeric chat id (clients such as telebot require it).
            "chat": {"id": _chat_id(params["chat_id"]), "type": "private"},
            "text": text,
        }
        with self.lock:
            self.messages.append({**params, "result": message})
        return 200, {"ok": True, "result": message}

    @staticmethod
    def _params(headers: dict, body: bytes) -> dict:
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if content_type.startswith("application/json"):
            return json.loads(body or b"{}")
        return dict(urllib.parse.parse_qsl(body.decode()))
