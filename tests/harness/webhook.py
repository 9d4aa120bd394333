"""A webhook receiver: records every JSON POST it gets (Alertmanager, the webhook channel)."""
from __future__ import annotations

import json

from .http_server import LoopbackServer


class WebhookReceiver(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict] = []

    def route(self, method, path, headers, body):
        if method != "POST":
            return 405, {"error": "POST only"}
        try:
            payload = json.loads(body or b"null")
        except json.JSONDecodeError:
            return 400, {"error": "body is not JSON"}
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "json": payload})
        return 200, {"ok": True}
