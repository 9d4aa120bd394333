"""``opsstack serve``: a standalone ``/metrics`` for bots that cannot serve HTTP themselves.

It reads, at every scrape, what the bot's managers leave on disk (backup catalog in
``BACKUP_DIR``, integrity state and log spool under ``STATE_DIR``) and, with
``PROMETHEUS_MULTIPROC_DIR`` set, the metric files of every worker process.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..config import load_settings
from ..errors import OpsError
from ._types import PORT

DEFAULT_PORT = 9464


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve /metrics from on-disk state (backups, integrity, "
                                                 "log spool)")
    parser.add_argument("--addr", help="address to bind (default: METRICS_ADDR, 127.0.0.1)")
    parser.add_argument("--port", type=PORT, help=f"port (default: METRICS_PORT, else {DEFAULT_PORT}; "
                                                  "0 picks a free one)")
    parser.set_defaults(handler=run)


class ScrapeDuration:
    """``bot_exporter_scrape_duration_seconds`` as a plain collector: a prometheus_client Gauge
    would also land in the multiprocess files and be rendered twice."""

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, seconds: float) -> None:
        self.value = seconds

    def collect(self):
        from prometheus_client.metrics_core import GaugeMetricFamily

        yield GaugeMetricFamily("bot_exporter_scrape_duration_seconds",
                                "Time the previous scrape of /metrics took.", value=self.value)


def build_registry(settings):
    """The registry ``opsstack serve`` renders: on-disk sources, the scrape duration and the
    standard ``process_*``/``python_*`` series of the serving process."""
    from prometheus_client import CollectorRegistry

    from ..exposition import DiskCollector
    from ..metrics import register_standard_collectors

    registry = CollectorRegistry()
    registry.register(DiskCollector(settings))
    register_standard_collectors(registry)
    scrape = ScrapeDuration()
    registry.register(scrape)
    return registry, scrape


def run(args: argparse.Namespace) -> int:
    from ..exposition import MetricsServer

    settings = load_settings(config_file=getattr(args, "config", None))
    config = settings.metrics
    addr = args.addr or config.addr
    port = args.port if args.port is not None else (config.port or DEFAULT_PORT)
    registry, scrape = build_registry(settings)
    password = config.auth_password.get() if config.auth_password is not None else None
    try:
        server = MetricsServer(registry, addr=addr, port=port, username=config.auth_username,
                               password=password, on_scrape=scrape.set, multiprocess="add")
    except OSError as exc:
        raise OpsError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from exc
    print(f"opsstack serve: metrics on {server.url}", flush=True)

    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("opsstack serve: stopped", file=sys.stderr, flush=True)
    return 0
