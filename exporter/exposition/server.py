"""A small threaded HTTP server for ``/metrics`` with format negotiation and basic auth."""
from __future__ import annotations

import base64
import gzip
import hmac
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("exporter.exposition")


def multiprocess_registry() -> CollectorRegistry | None:
    """A registry aggregating every worker's files when ``PROMETHEUS_MULTIPROC_DIR`` is set, with
    the serving process's ``process_*``/``python_*`` series."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prometheus_client's own switch
        return None
    from prometheus_client.multiprocess import MultiProcessCollector

    from ..metrics import register_standard_collectors

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    register_standard_collectors(registry)  # of the serving process: the workers' are not in the files
    return registry


def render(registry: Any, accept: str | None) -> tuple[bytes, str]:
    """``(body, content type)`` of ``registry`` in the format the ``Accept`` header asks for."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        expected = self.server.credentials
        if expected is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:], validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, expected)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if not self._authorized():
            self._send(401, b"authentication required\n", extra={"WWW-Authenticate": 'Basic realm="metrics"'})
            return
        if path in ("/", ""):
            self._send(200, b"opsstack exporter: see /metrics\n")
            return
        if path != "/metrics":
            self._send(404, b"not found\n")
            return
        started = time.perf_counter()
        try:
            body, content_type = render(self.server.registry_for_scrape(), self.headers.get("Accept"))
        except Exception:  # a broken collector gives a 500, never kills the server thread
            log.exception("rendering /metrics failed")
            self._send(500, b"rendering metrics failed\n")
            return
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, content_type, headers)
        self.server.scraped(time.perf_counter() - started)

    do_HEAD = do_GET


class _Union:
    """Registries rendered as one; a family name already rendered by an earlier one is skipped
    (the workers' live value wins over the same metric read from disk)."""

    def __init__(self, *registries: Any) -> None:
        self.registries = registries

    def collect(self) -> Any:
        seen: set[str] = set()
        for registry in self.registries:
            for family in registry.collect():
                if family.name not in seen:
                    seen.add(family.name)
                    yield family


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: Any, credentials: bytes | None,
                 on_scrape: Any, multiprocess: str | None) -> None:
        self.registry = registry
        self.multiprocess = multiprocess
        self.credentials = credentials
        self.on_scrape = on_scrape
        super().__init__(address, _Handler)

    def registry_for_scrape(self) -> Any:
        workers = multiprocess_registry() if self.multiprocess else None
        if workers is None:
            return self.registry
        if self.multiprocess == "add":
            return _Union(workers, self.registry)
        return workers

    def scraped(self, seconds: float) -> None:
        if self.on_scrape is not None:
            self.on_scrape(seconds)


class MetricsServer:
    """A running ``/metrics`` endpoint (``.port``, ``.url``, ``.close()``).

    With ``PROMETHEUS_MULTIPROC_DIR`` set, ``multiprocess="replace"`` serves the workers' aggregated
    files instead of ``registry`` (whose values are in those files), ``"add"`` serves both
    (``registry`` holding only what is not in the files), None ignores them."""

    def __init__(self, registry: Any, *, addr: str = "127.0.0.1", port: int = 0,
                 username: str | None = None, password: str | None = None, on_scrape: Any = None,
                 multiprocess: str | None = "replace") -> None:
        if (username is None) != (password is None):
            from ..errors import ConfigError

            raise ConfigError("METRICS_AUTH_USERNAME" if username is None else "METRICS_AUTH_PASSWORD",
                              "settings", None, "basic auth needs both a user name and a password")
        credentials = f"{username}:{password}".encode() if username is not None else None
        self._server = _Server((addr, port), registry, credentials, on_scrape, multiprocess)
        self.addr = addr
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="opsstack-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)


def start_metrics_server(settings: Any, metrics: Any, *, registry: Any = None) -> MetricsServer:
    """Serve ``metrics.registry`` (or ``registry``) on ``settings.metrics`` addr/port (port 0: any)."""
    config = settings.metrics
    password = config.auth_password.get() if config.auth_password is not None else None

    def on_scrape(seconds: float) -> None:
        metrics.scrape_duration.set(seconds)

    server = MetricsServer(registry if registry is not None else metrics.registry, addr=config.addr,
                           port=config.port or 0, username=config.auth_username, password=password,
                           on_scrape=on_scrape)
    log.info("serving metrics on %s", server.url)
    return server
