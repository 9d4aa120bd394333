"""/metrics in the bot and from `opsstack serve`: formats, auth, promtool, real Prometheus,
multiprocess mode."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from exporter.config import default_settings
from exporter.exposition import DiskCollector, start_metrics_server
from exporter.metrics import Metrics
from exporter.profiler import Profiler
from tests.harness.base import free_port
from tests.probes import wait_until

ROOT = Path(__file__).resolve().parent.parent
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(url: str, accept: str | None = None, auth: tuple[str, str] | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url)
    if accept:
        request.add_header("Accept", accept)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode(), response.headers["Content-Type"]


def busy_metrics() -> Metrics:
    """Metrics with some of everything, including an exemplar."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from exporter import tracing

    metrics = Metrics()
    profiler = Profiler(metrics=metrics)
    profiler.enable(default_settings())
    tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=InMemorySpanExporter())
    try:
        with profiler.profile_sync("download"):
            pass
    finally:
        tracing.shutdown()
    with pytest.raises(ValueError):
        with profiler.profile_sync("upload"):
            raise ValueError
    metrics.alerts.labels("disk_full", "high").inc()
    metrics.downloads.labels("success").inc(3)
    metrics.backup_duration.observe(2.0)
    return metrics


@pytest.fixture
def server():
    started = []

    def start(metrics: Metrics, **flags):
        settings = default_settings().replace(METRICS_PORT=free_port(), **flags)
        made = start_metrics_server(settings, metrics)
        started.append(made)
        return made

    yield start
    for made in started:
        made.close()


def test_text_and_openmetrics_negotiation(server):
    metrics = busy_metrics()
    running = server(metrics)
    assert running.addr == "127.0.0.1"
    text, content_type = scrape(running.url)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert 'bot_operation_duration_seconds_count{operation="download"} 1.0' in text
    assert 'bot_operation_errors_total{operation="upload"} 1.0' in text
    assert "# {trace_id=" not in text  # no exemplars in the classic format
    open_text, open_type = scrape(running.url, accept=OPENMETRICS)
    assert open_type.startswith("application/openmetrics-text")
    assert open_text.endswith("# EOF\n")
    assert '# {trace_id="' in open_text
    assert metrics.registry.get_sample_value("bot_exporter_scrape_duration_seconds") > 0


def test_basic_auth(server):
    running = server(Metrics(), METRICS_AUTH_USERNAME="prom", METRICS_AUTH_PASSWORD="s3cret")
    with pytest.raises(urllib.error.HTTPError) as denied:
        scrape(running.url)
    assert denied.value.code == 401
    assert denied.value.headers["WWW-Authenticate"].startswith("Basic")
    with pytest.raises(urllib.error.HTTPError) as wrong:
        scrape(running.url, auth=("prom", "nope"))
    assert wrong.value.code == 401
    text, _ = scrape(running.url, auth=("prom", "s3cret"))
    assert "bot_build_info" in text


def test_auth_needs_both_user_and_password():
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError):
        start_metrics_server(default_settings().replace(METRICS_PORT=free_port(), METRICS_AUTH_USERNAME="u"),
                             Metrics())


def test_unknown_path_is_404(server):
    running = server(Metrics())
    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(running.url.replace("/metrics", "/nope"))
    assert missing.value.code == 404


def test_runtime_serves_metrics_when_a_manager_is_enabled(tmp_path):
    from exporter import runtime

    port = free_port()
    settings = default_settings().replace(ENABLE_PROFILER=True, METRICS_PORT=port, STATE_DIR=str(tmp_path))
    handle = runtime.start(settings)  # the managers use the process-wide default_metrics()
    try:
        from exporter.profiler import profiler

        with profiler.profile_sync("runtime_op"):
            pass
        text, _ = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        handle.stop()
    assert 'bot_operation_duration_seconds_count{operation="runtime_op"} 1.0' in text
    assert 'bot_feature_enabled{feature="profiler"} 1.0' in text
    with pytest.raises(OSError):
        scrape(f"http://127.0.0.1:{port}/metrics")


# --------------------------------------------------------------------------- the ecosystem's series

STANDARD_SERIES = ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                   "process_start_time_seconds")


def assert_standard_series(text: str) -> None:
    """``process_*``, ``python_gc_*`` and ``python_info`` of prometheus_client's collectors."""
    for name in STANDARD_SERIES:
        assert f"\n{name} " in text, name
    assert '\npython_gc_objects_collected_total{generation="0"} ' in text
    assert "\npython_info{implementation=" in text


def test_a_fresh_registry_has_the_standard_process_and_python_series():
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    assert get("process_resident_memory_bytes") > 1024 * 1024
    assert get("process_start_time_seconds") <= time.time()
    assert get("python_gc_collections_total", {"generation": "2"}) >= 0
    version = sys.version_info
    assert get("python_info", {"implementation": "CPython", "major": str(version.major),
                               "minor": str(version.minor), "patchlevel": str(version.micro),
                               "version": f"{version.major}.{version.minor}.{version.micro}"}) == 1.0


def test_series_of_known_label_values_start_at_zero():
    from exporter.alert_manager.model import AlertSeverity, AlertType
    from exporter.channels import CHANNELS
    from exporter.metrics import LOG_HANDLERS

    get = Metrics().registry.get_sample_value
    assert LOG_HANDLERS == ("file", "errors", "console", "sink", "events")
    for handler in LOG_HANDLERS:
        assert get("bot_log_handler_errors_total", {"handler": handler}) == 0.0, handler
    for kind in AlertType:
        assert get("bot_alerts_deduplicated_total", {"type": kind.value}) == 0.0, kind
        for severity in AlertSeverity:
            assert get("bot_alerts_total", {"type": kind.value, "severity": severity.value}) == 0.0
    for channel in CHANNELS:
        for outcome in ("success", "failure", "dropped"):
            assert get("bot_alert_notifications_total", {"channel": channel, "outcome": outcome}) == 0.0
    assert get("bot_alert_notifications_total", {"channel": "intake", "outcome": "dropped"}) == 0.0


def test_the_in_process_endpoint_serves_the_standard_series(server):
    text, _ = scrape(server(Metrics()).url)
    assert_standard_series(text)
    assert 'bot_log_handler_errors_total{handler="file"} 0.0' in text


# --------------------------------------------------------------------------- on-disk state


def make_disk_state(tmp_path: Path) -> dict[str, str]:
    """A real backup, an integrity state file and spool bytes; the environment pointing at them."""
    from exporter.backup_manager import BackupManager
    from exporter.recovery_manager.state import STATE_FILE, write_json

    source = tmp_path / "data"
    source.mkdir()
    (source / "a.txt").write_text("hello")
    state_dir = tmp_path / "state"
    settings = default_settings().replace(BACKUP_DIR=str(tmp_path / "backups"), STATE_DIR=str(state_dir),
                                          ENABLE_BACKUP_SYSTEM=True)
    manager = BackupManager(settings, Metrics())
    manager.enable(settings, schedule=False)
    try:
        manager.create_backup_sync([str(source)], "first", tier="daily")
    finally:
        manager.disable()
    write_json(state_dir / STATE_FILE, {"last_check": 1_700_000_000.0, "last_ok": False,
                                        "checks": {"success": 4, "failure": 1}, "repairs": {"success": 1}})
    (state_dir / "spool").mkdir(mode=0o700)
    (state_dir / "spool" / "0001.ndjson").write_bytes(b"x" * 1234)
    return {"BACKUP_DIR": str(tmp_path / "backups"), "STATE_DIR": str(state_dir)}


def test_disk_collector_reads_catalog_integrity_and_spool(tmp_path):
    from prometheus_client import CollectorRegistry

    env = make_disk_state(tmp_path)
    registry = CollectorRegistry()
    registry.register(DiskCollector(default_settings().replace(**env)))
    value = registry.get_sample_value
    assert value("bot_backup_last_success_timestamp_seconds") > 1_700_000_000
    assert value("bot_backup_last_files") == 1
    assert value("bot_backup_last_size_bytes") > 0
    assert value("bot_backups_retained", {"tier": "daily"}) == 1
    assert value("bot_backups_retained", {"tier": "hourly"}) == 0
    assert value("bot_integrity_last_check_ok") == 0
    assert value("bot_integrity_checks_total", {"outcome": "failure"}) == 1
    assert value("bot_integrity_repairs_total", {"outcome": "success"}) == 1
    assert value("bot_log_spool_bytes") == 1234
    spooled = Path(env["STATE_DIR"]) / "spool" / "0001.ndjson"
    assert value("bot_log_spool_oldest_timestamp_seconds") == spooled.stat().st_mtime


def test_disk_collector_survives_a_failing_source(tmp_path):
    from prometheus_client import CollectorRegistry

    def broken(settings):
        raise OSError("unreadable")

    collector = DiskCollector(default_settings().replace(STATE_DIR=str(tmp_path)))
    collector.add_source(broken)
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("bot_log_spool_bytes") == 0
    assert registry.get_sample_value("bot_exporter_source_errors_total", {"source": "broken"}) >= 1


class Serve:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--port", str(self.port)], cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        deadline = time.monotonic() + 20
        while True:
            try:
                scrape(self.url)
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"opsstack serve did not start: {self.process.stderr.read()}")
                time.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)
        return self.process.returncode


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(env: dict[str, str]) -> Serve:
        made = Serve(env, tmp_path)
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


def test_opsstack_serve_reads_state_at_scrape_time(tmp_path, serve):
    env = make_disk_state(tmp_path)
    running = serve(env)
    text, _ = scrape(running.url)
    assert 'bot_backups_retained{tier="daily"} 1.0' in text
    assert "bot_log_spool_bytes 1234.0" in text
    (Path(env["STATE_DIR"]) / "spool" / "0002.ndjson").write_bytes(b"y" * 10)
    text, _ = scrape(running.url, accept=OPENMETRICS)
    assert "bot_log_spool_bytes 1244.0" in text and text.endswith("# EOF\n")
    assert "bot_exporter_scrape_duration_seconds" in text
    assert_standard_series(text)
    assert running.stop() == 0


def test_multiprocess_workers_are_aggregated(tmp_path, serve, promtool):
    directory = tmp_path / "multiproc"
    directory.mkdir()
    worker = ("from exporter.metrics import Metrics\n"
              "m = Metrics()\n"
              "m.downloads.labels('success').inc()\n"
              "m.operation_duration.labels('download').observe(0.3)\n"
              "m.log_records.inc('warning')\n")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "STATE_DIR": str(tmp_path / "state")}
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", worker], cwd=ROOT, env={**os.environ, **env},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    text, _ = scrape(serve(env).url)
    assert 'bot_downloads_total{outcome="success"} 2.0' in text
    assert 'bot_operation_duration_seconds_count{operation="download"} 2.0' in text
    assert 'bot_log_records_total{level="warning"} 2.0' in text
    assert text.count("# TYPE bot_log_spool_bytes ") == 1  # workers' value, not also the disk one
    assert text.count("# TYPE bot_exporter_scrape_duration_seconds ") == 1
    assert_standard_series(text)
    assert text.count("# TYPE process_resident_memory_bytes ") == 1
    result = promtool_check(promtool, text)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- promtool and Prometheus


def promtool_check(promtool: str, text: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=60)


def test_promtool_accepts_both_endpoints(promtool, server, serve, tmp_path):
    in_process = server(busy_metrics())
    standalone = serve(make_disk_state(tmp_path))
    for url in (in_process.url, standalone.url):
        text, _ = scrape(url)
        result = promtool_check(promtool, text)
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
            url, result.stdout + result.stderr)


@pytest.mark.slow
@pytest.mark.services
def test_real_prometheus_scrapes_both(start_prometheus, server, serve, tmp_path):
    in_process = server(busy_metrics(), METRICS_AUTH_USERNAME="prom", METRICS_AUTH_PASSWORD="pw")
    standalone = serve(make_disk_state(tmp_path))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "bot", "static_configs": [{"targets": [f"127.0.0.1:{in_process.port}"]}],
             "basic_auth": {"username": "prom", "password": "pw"}},
            {"job_name": "serve", "static_configs": [{"targets": [f"127.0.0.1:{standalone.port}"]}]},
        ],
    }
    prometheus = start_prometheus(config)

    def both_scraped():
        up = {item["metric"]["job"]: item["value"][1] for item in prometheus.query("up")}
        downloads = prometheus.query('bot_downloads_total{job="bot",outcome="success"}')
        retained = prometheus.query('bot_backups_retained{job="serve",tier="daily"}')
        return up == {"bot": "1", "serve": "1"} and downloads and retained and (downloads, retained)

    downloads, retained = wait_until(both_scraped, timeout=30, what="both targets up and scraped", interval=0.5)
    assert downloads[0]["value"][1] == "3"
    assert retained[0]["value"][1] == "1"


def test_operation_histogram_exposition_is_exact():
    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest

    from exporter.metrics import OperationDurations

    registry = CollectorRegistry()
    durations = OperationDurations(registry=registry)
    series = durations.labels("parse")
    series.created = 1_700_000_000.0
    series.observe(0.003, "0af7651916cd43dd8448eb211c80319c")
    series.exemplars[2] = ("0af7651916cd43dd8448eb211c80319c", 0.003, 1_700_000_001.0)  # pin its time
    series.observe(4000.0)
    lines = generate_latest(registry).decode().splitlines()
    assert lines[:2] == ["# HELP bot_operation_duration_seconds Duration of profiled operations.",
                         "# TYPE bot_operation_duration_seconds histogram"]
    assert lines[3] == 'bot_operation_duration_seconds_bucket{le="0.0025",operation="parse"} 0.0'
    assert lines[4] == ('bot_operation_duration_seconds_bucket{le="0.005",operation="parse"} 1.0 '
                        '# {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.003 1700000001.0')
    assert lines[21:26] == ['bot_operation_duration_seconds_bucket{le="3600.0",operation="parse"} 1.0',
                            'bot_operation_duration_seconds_bucket{le="+Inf",operation="parse"} 2.0',
                            'bot_operation_duration_seconds_count{operation="parse"} 2.0',
                            'bot_operation_duration_seconds_sum{operation="parse"} 4000.003',
                            'bot_operation_duration_seconds_created{operation="parse"} 1.7e+09']
    assert lines[-1] == "# EOF"


def test_slow_and_idle_clients_are_disconnected_and_connections_are_bounded(monkeypatch):
    import socket

    from exporter.exposition import server as server_module
    from exporter.exposition.server import MetricsServer

    monkeypatch.setattr(server_module._Handler, "timeout", 0.5)
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 4)
    metrics = busy_metrics()
    served = MetricsServer(metrics.registry)
    try:
        slow = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(4)]
        for sock in slow:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        deadline = time.monotonic() + 5
        while served._server.refused == 0 and time.monotonic() < deadline:
            extra = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            assert extra.recv(1) == b""  # the fifth is closed at once
            extra.close()
        assert served._server.refused >= 1
        started = time.monotonic()
        for sock in slow:
            assert sock.recv(1) == b""  # dropped after the timeout
            sock.close()
        assert time.monotonic() - started < 3

        def served_normally() -> str | None:
            try:
                return scrape(served.url)[0]
            except urllib.error.URLError:
                return None

        body = wait_until(served_normally, timeout=5, what="a normal scrape once the slots are free", interval=0.05)
        assert "bot_downloads_total" in body
    finally:
        served.close()


def test_a_flood_of_scrapes_renders_once_a_second(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from exporter.exposition.server import MetricsServer

    metrics = busy_metrics()
    renders = []
    served = MetricsServer(metrics.registry, on_scrape=renders.append)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(lambda _: scrape(served.url)[0], range(200)))
        elapsed = time.monotonic() - started
        assert len(set(bodies)) <= len(renders) and all("bot_downloads_total" in b for b in bodies)
        assert 1 <= len(renders) <= elapsed + 2
        metrics.downloads.labels("success").inc(5)
        time.sleep(1.05)  # the reuse window is over: the next scrape shows the new value
        assert scrape(served.url)[0] != bodies[-1]
    finally:
        served.close()


def test_an_idle_endpoint_sleeps_until_a_scrape_and_closes_at_once():
    """No scrape, no wake-up of the serving thread (it used to wake five times a second to look
    for a shutdown request); a scrape is served at once, close() ends it at once, twice is fine."""
    from exporter.exposition.server import MetricsServer

    served = MetricsServer(busy_metrics().registry)
    try:
        task = Path(f"/proc/self/task/{served._thread.native_id}/status")

        def wake_ups() -> int:
            return int(task.read_text().split("voluntary_ctxt_switches:")[1].split()[0])

        assert "bot_downloads_total" in scrape(served.url)[0]
        time.sleep(0.2)
        before = wake_ups()
        time.sleep(1.5)
        assert wake_ups() - before <= 1
        assert "bot_downloads_total" in scrape(served.url)[0]
    finally:
        started = time.monotonic()
        served.close()
        served.close()
    assert time.monotonic() - started < 0.5 and not served._thread.is_alive()
    with pytest.raises(OSError):
        socket_to(served.port)


def socket_to(port: int) -> None:
    import socket

    socket.create_connection(("127.0.0.1", port), timeout=2).close()
