"""Session fixtures for the real services of ``tests/harness``.

A service that cannot start skips its tests on a developer's machine and fails them when
``CI`` is set: nothing is skipped silently in CI.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import alertmanager as alertmanager_harness
from tests.harness import prometheus as prometheus_harness
from tests.harness.base import ServiceUnavailable, skip_or_fail
from tests.harness.smtp import SMTPServer
from tests.harness.telegram import TelegramBotAPI
from tests.harness.webhook import WebhookReceiver

def _start(what: str, starter: Callable[[], object]) -> object:
    try:
        return starter()
    except ServiceUnavailable as exc:
        skip_or_fail(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


# --------------------------------------------------------------------------- binaries


@pytest.fixture(scope="session")
def promtool() -> str:
    return _start("promtool", prometheus_harness.promtool)


@pytest.fixture(scope="session")
def amtool() -> str:
    return _start("amtool", alertmanager_harness.amtool)


# --------------------------------------------------------------------------- JVM and Go services


@pytest.fixture(scope="session")
def elasticsearch(services_dir: Path):
    from tests.harness import elasticsearch as es_harness

    node = _start("Elasticsearch", lambda: es_harness.start(services_dir / "elasticsearch"))
    yield node
    node.stop()


@pytest.fixture
def start_elasticsearch(tmp_path: Path):
    """A dedicated node for one test, which may stop it and start it again (same port, data)."""
    from tests.harness import elasticsearch as es_harness

    started = []

    def start():
        node = _start("Elasticsearch", lambda: es_harness.start(tmp_path / f"elasticsearch-{len(started)}"))
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="session")
def otel_collector(services_dir: Path, elasticsearch):
    from tests.harness import otelcol

    collector = _start("OpenTelemetry Collector",
                       lambda: otelcol.start(services_dir / "otelcol", elasticsearch_url=elasticsearch.url))
    yield collector
    collector.stop()


# --------------------------------------------------------------------------- per-test servers


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., prometheus_harness.RunningPrometheus]]:
    started: list[prometheus_harness.RunningPrometheus] = []

    def start(config: dict, rule_files=(), **options) -> prometheus_harness.RunningPrometheus:
        workdir = tmp_path / f"prometheus-{len(started)}"
        server = _start("Prometheus", lambda: prometheus_harness.start(workdir, config, tuple(rule_files),
                                                                        **options))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_alertmanager(tmp_path: Path) -> Iterator[Callable[[dict], alertmanager_harness.RunningAlertmanager]]:
    started: list[alertmanager_harness.RunningAlertmanager] = []

    def start(config: dict) -> alertmanager_harness.RunningAlertmanager:
        workdir = tmp_path / f"alertmanager-{len(started)}"
        server = _start("Alertmanager", lambda: alertmanager_harness.start(workdir, config))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def telegram_api() -> Iterator[TelegramBotAPI]:
    server = TelegramBotAPI().start()
    yield server
    server.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()
