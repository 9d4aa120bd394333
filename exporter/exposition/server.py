"""A small threaded HTTP server for ``/metrics`` with format negotiation and basic auth."""
from __future__ import annotations

import base64
import gzip
import hmac
import logging
import os
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("exporter.exposition")
CLIENT_TIMEOUT = 5.0  # seconds a connection may stay idle, or take to send its request
MAX_CONNECTIONS = 64  # open connections served at once; the ones past it are closed at once
RENDER_REUSE = 1.0  # seconds a rendered body serves further scrapes (a flood renders once a second)


def multiprocess_registry() -> CollectorRegistry | None:
    """A registry aggregating every worker's files when ``PROMETHEUS_MULTIPROC_DIR`` is set
    (dead workers' files folded into totals first: :mod:`.multiproc`), with the serving
    process's ``process_*``/``python_*`` series."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # prometheus_client's own switch
    if not directory:
        return None
    from .multiproc import FoldingCollector

    from ..metrics import register_standard_collectors

    registry = CollectorRegistry()
    FoldingCollector(directory, registry)
    register_standard_collectors(registry)  # of the serving process: the workers' are not in the files
    return registry


def render(registry: Any, accept: str | None) -> tuple[bytes, str]:
    """``(body, content type)`` of ``registry`` in the format the ``Accept`` header asks for."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT  # a client idle or slow for this long is disconnected

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
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        try:
            body, content_type = self.server.rendered(self.headers.get("Accept"), gzipped)
        except Exception:  # a broken collector gives a 500, never kills the server thread
            log.exception("rendering /metrics failed")
            self._send(500, b"rendering metrics failed\n")
            return
        self._send(200, body, content_type, {"Content-Encoding": "gzip"} if gzipped else None)

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
    """Threads per connection, at most ``MAX_CONNECTIONS`` of them; one render at a time, its
    body reused by the scrapes of the next ``RENDER_REUSE`` seconds (per format)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: at 5, a burst of connects waited 1 s (SYN resent)

    def __init__(self, address: tuple[str, int], registry: Any, credentials: bytes | None,
                 on_scrape: Any, multiprocess: str | None) -> None:
        self.registry = registry
        self.multiprocess = multiprocess
        self.credentials = credentials
        self.on_scrape = on_scrape
        self.refused = 0  # connections closed at once: MAX_CONNECTIONS were open
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._render_lock = threading.Lock()
        self._bodies: dict[tuple[str, bool], tuple[float, bytes, str]] = {}
        self._workers: Any = None
        # stop() writes a byte to end serving; made first: a failed bind calls server_close()
        self._wake_reader, self._wake_writer = socket.socketpair()
        super().__init__(address, _Handler)

    def serve_until_stopped(self) -> None:
        """Serve until :meth:`stop`, asleep in ``select`` while no one connects (where
        ``serve_forever`` wakes every ``poll_interval`` to look for a shutdown request)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is self._wake_reader for key, _ in ready):
                    return
                self._handle_request_noblock()

    def stop(self) -> None:
        """End :meth:`serve_until_stopped` (returns at once; join the serving thread)."""
        self._wake_writer.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def registry_for_scrape(self) -> Any:
        if self.multiprocess and self._workers is None:
            self._workers = multiprocess_registry()
        if self._workers is None:
            return self.registry
        if self.multiprocess == "add":
            return _Union(self._workers, self.registry)
        return self._workers

    def rendered(self, accept: str | None, gzipped: bool) -> tuple[bytes, str]:
        """The body (gzipped if asked) and content type for ``accept``: rendered now, or the one
        rendered less than ``RENDER_REUSE`` seconds ago for the same format."""
        from prometheus_client.exposition import choose_encoder

        key = (choose_encoder(accept or "")[1], gzipped)
        with self._render_lock:
            cached = self._bodies.get(key)
            if cached is not None and time.monotonic() - cached[0] < RENDER_REUSE:
                return cached[1], cached[2]
            started = time.perf_counter()
            body, content_type = render(self.registry_for_scrape(), accept)
            if gzipped:
                body = gzip.compress(body, compresslevel=1)
            self._bodies[key] = (time.monotonic(), body, content_type)
            if self.on_scrape is not None:
                self.on_scrape(time.perf_counter() - started)
        return body, content_type


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
        self._thread = threading.Thread(target=self._server.serve_until_stopped, name="opsstack-metrics",
                                        daemon=True)
        self._closed = False
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.stop()
        self._thread.join(timeout=2)
        self._server.server_close()


def start_metrics_server(settings: Any, metrics: Any, *, registry: Any = None) -> MetricsServer:
    """Serve ``metrics.registry`` (or ``registry``) on ``settings.metrics`` addr/port (port 0: any)."""
    config = settings.metrics
    password = config.auth_password.get() if config.auth_password is not None else None

    def on_scrape(seconds: float) -> None:
        metrics.scrape_duration.set(seconds)

    try:
        server = MetricsServer(registry if registry is not None else metrics.registry, addr=config.addr,
                               port=config.port or 0, username=config.auth_username, password=password,
                               on_scrape=on_scrape)
    except OSError as exc:  # the port is taken, the address is not this host's or does not resolve
        raise _listen_error(settings, exc) from exc
    log.info("serving metrics on %s", server.url)
    return server


def _listen_error(settings: Any, exc: OSError) -> Exception:
    """A :class:`ConfigError` naming the setting that cannot be used: METRICS_ADDR when the
    address does not resolve or is not this host's, else METRICS_PORT (taken, or privileged)."""
    import errno
    import socket

    from ..errors import ConfigError

    config = settings.metrics
    wrong_addr = isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL
    key, value = ("METRICS_ADDR", config.addr) if wrong_addr else ("METRICS_PORT", config.port)
    return ConfigError(key, settings.sources.get(key, "default"), value,
                       f"cannot listen on {config.addr}:{config.port}: {exc.strerror or exc}")
