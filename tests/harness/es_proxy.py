"""A loopback proxy in front of Elasticsearch that can refuse work as a saturated node does.

Modes (``proxy.mode``, changed at any time by the test):

- ``pass``: every request goes through as it came;
- ``reject``: every ``_bulk`` answers ``429`` (``es_rejected_execution_exception``) as a whole;
- ``partial``: in each ``_bulk`` the items at odd positions answer ``429`` and the rest is
  forwarded, as a node whose write queue is full for part of a batch.

When the node itself is away, the client's connection is closed without an answer (what a dead
node looks like from the shipper: a transport error).
"""
from __future__ import annotations

import http.client
import http.server
import json
import urllib.parse

from .http_server import LoopbackServer

MODES = ("pass", "reject", "partial")
_REJECTION = {"type": "es_rejected_execution_exception", "reason": "rejected by the test proxy (write queue full)"}
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _relay(self) -> None:
        proxy: EsProxy = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        is_bulk = urllib.parse.urlsplit(self.path).path.endswith("/_bulk")
        mode = proxy.mode
        try:
            if is_bulk and mode == "reject":
                proxy.count("rejected_requests")
                self._answer(429, {"error": {"root_cause": [_REJECTION], **_REJECTION}, "status": 429})
            elif is_bulk and mode == "partial":
                self._answer(200, proxy.partial_bulk(self.path, body))
            else:
                status, headers, data = proxy.forward(self.command, self.path, dict(self.headers), body)
                self._send(status, headers, data)
        except OSError:  # the node is away: look like it
            proxy.count("upstream_down")
            self.close_connection = True

    def _answer(self, status: int, payload: dict) -> None:
        self._send(status, {"Content-Type": "application/json"}, json.dumps(payload).encode())

    def _send(self, status: int, headers: dict, data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay  # noqa: N815 (http.server's naming)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client killed mid-request (the bot's SIGKILL) resets its connection: not an error here."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _bulk_items(body: bytes) -> list[bytes]:
    """The body's items, each its action line and (for create/index/update) its document."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    items, index = [], 0
    while index < len(lines):
        action = json.loads(lines[index])
        width = 1 if "delete" in action else 2
        items.append(b"\n".join(lines[index:index + width]) + b"\n")
        index += width
    return items


def _item_meta(item: bytes) -> tuple[str, dict]:
    action = json.loads(item.split(b"\n", 1)[0])
    kind = next(iter(action))
    return kind, action[kind]


class EsProxy(LoopbackServer):
    """``url`` is what the bot is pointed at; ``upstream`` the real node (its port may come back)."""

    handler_class = _Handler
    server_class = _Server

    def __init__(self, upstream: str) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.mode = "pass"
        self.counts: dict[str, int] = {"rejected_requests": 0, "rejected_items": 0, "upstream_down": 0}

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; modes are {', '.join(MODES)}")
        self.mode = mode

    def forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def partial_bulk(self, path: str, body: bytes) -> dict:
        """Forward the even items, refuse the odd ones with 429; answer in the body's order."""
        items = _bulk_items(body)
        kept = items[0::2]
        split = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(split.query))
        wanted = query.pop("filter_path", None)
        forwarded_path = urllib.parse.urlunsplit(("", "", split.path, urllib.parse.urlencode(query), ""))
        status, _, data = self.forward("POST", forwarded_path, {"Content-Type": "application/x-ndjson"},
                                       b"".join(kept))
        if status != 200:
            raise OSError(f"upstream answered {status}")
        done = iter(json.loads(data)["items"])
        merged = []
        for position, item in enumerate(items):
            if position % 2 == 0:
                merged.append(next(done))
                continue
            kind, meta = _item_meta(item)
            merged.append({kind: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": 429,
                                  "error": _REJECTION}})
        self.count("rejected_items", len(items) - len(kept))
        answer: dict = {"errors": bool(items[1::2]) or any("error" in next(iter(m.values())) for m in merged)}
        if wanted is None or "items" in wanted:
            answer["items"] = merged
        return answer
