"""A loopback proxy in front of an HTTP service that can hold chosen requests back: a request for
which ``hold(body)`` is true waits (its client sees a slow answer) until :meth:`release`, then
goes on to the service. What a busy or slow receiver looks like, with the order of arrival at
the service chosen by the test."""
from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from .http_server import LoopbackServer

HOLD_LIMIT = 30.0  # seconds a held request waits at most for release()


class HoldingProxy(LoopbackServer):
    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.hold: Callable[[bytes], bool] = lambda body: False
        self.released = threading.Event()
        self.held: list[bytes] = []  # bodies held back so far
        self.passed: list[bytes] = []  # bodies forwarded at once
        self.answered = 0  # requests the service has answered

    def release(self) -> None:
        """Let the held requests (and every later one) through."""
        self.hold = lambda body: False
        self.released.set()

    def route(self, method, path, headers, body):
        held = self.hold(body)
        with self.lock:
            (self.held if held else self.passed).append(body)
        if held:
            self.released.wait(HOLD_LIMIT)
        request = urllib.request.Request(self.upstream + path, data=body or None, method=method,
                                         headers={"Content-Type": headers.get("Content-Type", "application/json")})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        with self.lock:
            self.answered += 1
        return status, None
