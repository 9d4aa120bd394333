"""Session fixtures for the real services of ``tests/harness``.

A service that cannot start skips its tests on a developer's machine and fails them when
``CI`` is set: nothing is skipped silently in CI.
"""
from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import alertmanager as alertmanager_harness
from tests.harness import prometheus as prometheus_harness
from tests.harness.base import ServiceUnavailable, skip_or_fail
from tests.harness.smtp import SMTPServer
from tests.harness.telegram import TelegramBotAPI
from tests.harness.webhook import WebhookReceiver


# The fixtures that start a real service of the harness or need an artefact built or downloaded
# into a cache (promtool, amtool and redis-server from Debian's packages, the Elasticsearch
# launcher, the Collector, the ECS field list from npm). A test using one, itself or through
# another fixture, is marked ``services``: ``pytest -m "not services"`` is an offline run. The
# SMTP, Telegram and webhook servers run in the test process and count as local.
SERVICE_FIXTURES = frozenset({"promtool", "amtool", "elasticsearch", "start_elasticsearch", "otel_collector",
                              "start_prometheus", "start_alertmanager", "redis_server", "start_redis", "ecs"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


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
    from tests.harness import elasticsearch as es_harness

    yield from _servers_of_one_test("Elasticsearch", tmp_path / "elasticsearch",
                                    lambda workdir: es_harness.start(workdir))


@pytest.fixture(scope="session")
def otel_collector(services_dir: Path, elasticsearch):
    from tests.harness import otelcol

    collector = _start("OpenTelemetry Collector",
                       lambda: otelcol.start(services_dir / "otelcol", elasticsearch_url=elasticsearch.url))
    yield collector
    collector.stop()


@pytest.fixture(scope="session")
def redis_server(services_dir: Path):
    from tests.harness import redis as redis_harness

    server = _start("redis-server", lambda: redis_harness.start(services_dir / "redis"))
    yield server
    server.stop()


# --------------------------------------------------------------------------- per-test servers


def _servers_of_one_test(what: str, workdir: Path, launch: Callable[..., object]) -> Iterator[Callable]:
    """A fixture's ``start(...)``: each call launches one more server, all stopped after the test."""
    started: list = []

    def start(*args, **options):
        server = _start(what, lambda: launch(workdir.with_name(f"{workdir.name}-{len(started)}"),
                                             *args, **options))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., prometheus_harness.RunningPrometheus]]:
    yield from _servers_of_one_test(
        "Prometheus", tmp_path / "prometheus",
        lambda workdir, config, rule_files=(), **options: prometheus_harness.start(
            workdir, config, tuple(rule_files), **options))


@pytest.fixture
def start_alertmanager(tmp_path: Path) -> Iterator[Callable[[dict], alertmanager_harness.RunningAlertmanager]]:
    yield from _servers_of_one_test("Alertmanager", tmp_path / "alertmanager", alertmanager_harness.start)


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[[], object]]:
    """A redis-server of the test's own, to stop and start again on the same append-only file."""
    from tests.harness import redis as redis_harness

    yield from _servers_of_one_test("redis-server", tmp_path / "redis", redis_harness.start)


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


@pytest.fixture
def ctrl_c_reaches_children() -> Iterator[None]:
    """Children started during the test get Ctrl-C as a terminal gives it. A test run started
    in the background by a non-interactive shell (``make test &``, ``nohup``) has SIGINT ignored,
    every child inherits that, and Python then installs no KeyboardInterrupt handler: a SIGINT
    the test sends would do nothing. A handled signal is reset to the default at ``exec``."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
