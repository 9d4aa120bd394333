"""A small threaded HTTP server on loopback that can stop and start again on the same port."""
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """Hands each request to the owning server's ``route(method, path, headers, body)``."""

    protocol_version = "HTTP/1.1"

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, *more = self.server.owner.route(method, self.path, dict(self.headers), body)
        data = b"" if payload is None else json.dumps(payload).encode()  # None: no body (204)
        self.send_response(status)
        for name, value in (more[0] if more else {}).items():
            self.send_header(name, value)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (keep tests quiet)
        pass


class LoopbackServer:
    """Base class: subclasses implement ``route`` (or bring their own ``handler_class``);
    ``url`` stays the same across restarts."""

    handler_class: type[http.server.BaseHTTPRequestHandler] = JsonHandler
    server_class: type[http.server.ThreadingHTTPServer] = http.server.ThreadingHTTPServer

    def __init__(self) -> None:
        self.port = 0
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, headers: dict, body: bytes) -> tuple:
        """``(status, payload)`` or ``(status, payload, headers)``; a None payload sends no body."""
        raise NotImplementedError

    def start(self) -> "LoopbackServer":
        httpd = self.server_class(("127.0.0.1", self.port), self.handler_class)
        httpd.daemon_threads = True
        httpd.owner = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name=type(self).__name__,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate`` (e.g. on received messages) until true or ``timeout``."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()
