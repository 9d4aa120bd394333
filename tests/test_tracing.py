"""Tracing: no-op while off, spans with semantic-convention attributes, bounded exit, the
Collector configuration, and a span reaching the real Collector and Elasticsearch."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from exporter import tracing
from exporter.config import default_settings
from exporter.errors import ConfigError
from exporter.metrics import Metrics
from tests.harness.base import free_port, skip_or_fail
from tests.harness.http_server import LoopbackServer
from tests.probes import wait_until

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_CONFIG = ROOT / "deploy" / "otel-collector" / "config.yaml"


@pytest.fixture
def memory_exporter():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    tracing.setup(default_settings().replace(ENABLE_TRACING=True, OTEL_SERVICE_NAME="test-bot"),
                  span_exporter=exported)
    yield exported
    tracing.shutdown()


def test_off_is_a_noop():
    assert tracing.setup(default_settings()) is None
    assert not tracing.enabled() and tracing.provider() is None
    with tracing.span("backup.create", path="/x") as span:
        assert span is None
    assert tracing.current_trace_id() is None
    assert tracing.shutdown() is True


def test_span_attributes_follow_semantic_conventions(memory_exporter):
    with tracing.span("backup.create", path="/data", backup_name="nightly", size_bytes=12,
                      ignored=None, tags=["a"]) as span:
        assert span.is_recording()
        inner_id = tracing.current_trace_id()
    tracing.force_flush()
    (finished,) = memory_exporter.get_finished_spans()
    assert finished.name == "backup.create"
    assert dict(finished.attributes) == {"file.path": "/data", "bot.backup_name": "nightly", "file.size": 12,
                                         "bot.tags": "['a']"}
    assert format(finished.context.trace_id, "032x") == inner_id
    assert finished.resource.attributes["service.name"] == "test-bot"


def test_span_records_errors_and_reraises(memory_exporter):
    with pytest.raises(OSError):
        with tracing.span("integrity.check"):
            raise OSError("disk")
    tracing.force_flush()
    (finished,) = memory_exporter.get_finished_spans()
    assert finished.status.status_code.name == "ERROR"
    assert finished.attributes["error.type"] == "OSError"
    assert finished.events[0].name == "exception"


def test_download_and_upload_events_are_spans_of_their_duration(memory_exporter, tmp_path):
    from exporter.logger_manager import LoggerManager

    manager = LoggerManager(default_settings().replace(ENABLE_ENHANCED_LOGGING=True, LOG_DIR=str(tmp_path),
                                                       LOG_CONSOLE=False), Metrics())
    manager.enable()
    try:
        with tracing.span("handle_update") as parent:
            manager.log_download(task_id="t1", filename="a.zip", size_bytes=2048, duration=2.5, speed=819.2,
                                 status="completed")
        manager.log_upload(task_id="t2", filename="b.mp4", size_bytes=10, duration=0.5, speed=20,
                           status="failed")
    finally:
        manager.disable()
    tracing.force_flush()
    spans = {span.name: span for span in memory_exporter.get_finished_spans()}
    download, upload = spans["bot.download"], spans["bot.upload"]
    assert (download.end_time - download.start_time) == 2_500_000_000
    assert dict(download.attributes) == {"file.name": "a.zip", "file.size": 2048, "bot.task_id": "t1"}
    assert download.parent.span_id == parent.get_span_context().span_id
    assert download.status.status_code.name == "UNSET"
    assert upload.status.status_code.name == "ERROR" and upload.parent is None


def test_sampler_always_off_makes_no_trace_ids():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    tracing.setup(default_settings().replace(ENABLE_TRACING=True, OTEL_TRACES_SAMPLER="always_off"),
                  span_exporter=exported)
    try:
        with tracing.span("x"):
            assert tracing.current_trace_id() is None
        tracing.force_flush()
    finally:
        tracing.shutdown()
    assert exported.get_finished_spans() == ()


def test_queued_spans_are_compact_copies_that_export_the_same(memory_exporter):
    with tracing.span("download") as parent:
        with tracing.span("download.chunk", path="/data/a.zip", size_bytes=3) as child:
            child.add_event("retry", {"attempt": 2})
        child_id = child.get_span_context().span_id
    tracing.force_flush()
    spans = {span.name: span for span in memory_exporter.get_finished_spans()}
    exported = spans["download.chunk"]
    from opentelemetry.sdk.util import BoundedList

    # the compact copy: tuples for events and links, not the SDK's bounded lists (two deques)
    assert not isinstance(exported._events, BoundedList) and not isinstance(exported._links, BoundedList)
    assert exported.links == ()
    assert [(event.name, dict(event.attributes)) for event in exported.events] == [("retry", {"attempt": 2})]
    assert dict(exported.attributes) == {"file.path": "/data/a.zip", "file.size": 3}
    assert type(exported._attributes) is dict  # a plain copy, not the SDK's locked mapping
    assert exported.context.span_id == child_id
    assert exported.parent.span_id == parent.get_span_context().span_id
    assert exported.start_time < exported.end_time
    assert exported.instrumentation_scope.name == "exporter"
    assert exported.resource.attributes["service.name"] == "test-bot"
    assert (exported.dropped_attributes, exported.dropped_events, exported.dropped_links) == (0, 0, 0)


def test_the_resource_is_hashed_once_and_equals_the_sdks(memory_exporter, monkeypatch):
    """The OTLP encoder groups each exported span by its resource: the hash is computed once."""
    from opentelemetry.sdk import resources

    made = tracing.provider().resource
    same = resources.Resource(dict(made.attributes), made.schema_url)
    assert hash(made) == hash(same) and made == same and same == made
    assert made != resources.Resource({**made.attributes, "service.name": "other"}, made.schema_url)

    def no_dumps(*args, **kwargs):
        raise AssertionError("the resource was serialised again to be hashed")

    monkeypatch.setattr(resources, "dumps", no_dumps)
    assert hash(made) == hash(made)
    with tracing.span("download"):
        pass
    tracing.force_flush()
    assert [span.resource for span in memory_exporter.get_finished_spans()] == [made]


def test_a_span_over_its_limits_keeps_its_dropped_counts(monkeypatch):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    exported = InMemorySpanExporter()
    tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=exported)
    try:
        with tracing.span("busy") as span:
            for index in range(3):
                span.add_event(f"event {index}")
        tracing.force_flush()
    finally:
        tracing.shutdown()
    (finished,) = exported.get_finished_spans()
    assert len(finished.events) == 1 and finished.dropped_events == 2


def test_the_span_queue_size_is_the_standard_variable():
    assert default_settings().tracing.max_queue_size == 2048
    assert default_settings().replace(OTEL_BSP_MAX_QUEUE_SIZE="100").tracing.max_queue_size == 100
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        default_settings().replace(OTEL_BSP_MAX_QUEUE_SIZE="0")


# --------------------------------------------------------------------------- the standard variables


def _tracing_from(environ: dict[str, str]):
    from exporter.config import load_settings

    return load_settings(environ={"ENABLE_TRACING": "true", **environ}).tracing


@pytest.mark.parametrize("protocol,environ,expected", [
    ("http/protobuf", {}, "http://localhost:4318/v1/traces"),
    ("http/protobuf", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"),
    ("http/protobuf", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                       "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom"}, "http://traces:9999/custom"),
    ("grpc", {}, "http://localhost:4317"),
    ("grpc", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317"}, "http://traces:4317"),
])
def test_the_traces_endpoint_is_used_as_is_over_the_general_one(protocol, environ, expected):
    config = _tracing_from({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, **environ})
    assert tracing.otlp_endpoint(config) == expected


def test_otel_sdk_disabled_turns_tracing_off():
    settings = default_settings().replace(ENABLE_TRACING=True, OTEL_SDK_DISABLED="true")
    assert tracing.setup(settings) is None
    assert not tracing.enabled()
    with tracing.span("backup.create") as span:
        assert span is None


def test_the_runtime_does_not_count_tracing_on_when_the_sdk_is_disabled():
    from exporter import runtime

    metrics = Metrics()
    handle = runtime.start(default_settings().replace(ENABLE_TRACING=True, OTEL_SDK_DISABLED="true",
                                                      ENABLE_PROFILER=True), metrics)
    try:
        assert handle.enabled == ["profiler"] and not tracing.enabled()
        assert metrics.registry.get_sample_value("bot_feature_enabled", {"feature": "tracing"}) == 0.0
    finally:
        handle.stop()


def test_the_export_timeout_is_the_standard_variable():
    """An OTLP export to a server that never answers gives up after OTEL_EXPORTER_OTLP_TIMEOUT."""
    import socket

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert _tracing_from({}).timeout_ms == 1000
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = _tracing_from({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "200"})
        assert config.timeout_ms == 200
        ended = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ended))
        provider.get_tracer("t").start_span("one").end()
        exporter = tracing._span_exporter(config)
        started = time.monotonic()
        result = exporter.export(ended.get_finished_spans())
        elapsed = time.monotonic() - started
    assert result is SpanExportResult.FAILURE
    assert 0.15 <= elapsed < 0.9, elapsed  # the default (1 s) would take longer


def test_otlp_over_http_exports_through_urllib3_without_loading_requests(tmp_path):
    """The exporter is given the SDK's urllib3 transport (urllib3 is the Elasticsearch sink's
    client anyway): requests, about 4 MiB more, is never imported, and the spans still arrive."""
    received = tmp_path / "received"
    script = f"""
import http.server, sys, threading
from pathlib import Path
from exporter import tracing
from exporter.config import default_settings

class Collector(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Path({str(received)!r}).write_bytes(self.path.encode() + b" " + body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
threading.Thread(target=server.serve_forever, daemon=True).start()
tracing.setup(default_settings().replace(
    ENABLE_TRACING=True, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{{server.server_port}}"))
with tracing.span("over.urllib3"):
    pass
tracing.force_flush()
tracing.shutdown()
print("requests" in sys.modules, "urllib3" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
    path, _, body = received.read_bytes().partition(b" ")
    assert path == b"/v1/traces" and b"over.urllib3" in body


def test_otlp_tls_settings_reach_the_transport_and_a_credential_provider_keeps_the_sdks():
    from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport

    config = _tracing_from({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
                            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": "/etc/client.pem",
                            "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/etc/client.key"})
    transport = tracing._http_transport(config)
    assert isinstance(transport, Urllib3HTTPTransport)
    pool = transport._pool.connection_pool_kw
    assert (pool["ca_certs"], pool["cert_file"], pool["key_file"], pool["cert_reqs"]) == (
        "/etc/ca.pem", "/etc/client.pem", "/etc/client.key", "CERT_REQUIRED")
    overridden = _tracing_from({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
                                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/etc/traces-ca.pem"})
    assert tracing._http_transport(overridden)._pool.connection_pool_kw["ca_certs"] == "/etc/traces-ca.pem"
    assert tracing._http_transport(_tracing_from(
        {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "my-session"})) is None


def test_a_proxy_in_the_environment_keeps_the_sdks_transport_which_honours_it(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert tracing._http_transport(_tracing_from({})) is not None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert tracing._http_transport(_tracing_from({})) is None


def test_the_schedule_delay_is_the_standard_variable():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert _tracing_from({}).schedule_delay_ms == 1000
    exported = InMemorySpanExporter()
    tracing.setup(default_settings().replace(ENABLE_TRACING=True, OTEL_BSP_SCHEDULE_DELAY="20"),
                  span_exporter=exported)
    try:
        with tracing.span("quick"):
            pass
        # No flush: the batch processor exports on its own after 20 ms, long before the default 1 s.
        deadline = time.monotonic() + 0.8
        while not exported.get_finished_spans() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [span.name for span in exported.get_finished_spans()] == ["quick"]
    finally:
        tracing.shutdown()


# --------------------------------------------------------------------------- the global provider


@pytest.fixture
def unset_global_provider(monkeypatch):
    """OpenTelemetry's global tracer provider as in a fresh process (set once per process; the
    API's own tests reset it the same way)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    yield trace
    tracing.shutdown()


class _Answering(LoopbackServer):
    """Answers every request, keeping the last ``traceparent`` header it was sent."""

    traceparent: str | None = None

    def route(self, method, path, headers, body):
        self.traceparent = headers.get("traceparent")
        return 200, {"ok": True}


def test_an_httpx_request_in_a_profiled_block_joins_its_trace(unset_global_provider):
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from exporter.profiler import Profiler

    exported = InMemorySpanExporter()
    made = tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=exported)
    assert unset_global_provider.get_tracer_provider() is made
    profiler = Profiler(metrics=Metrics())
    profiler.enable(default_settings().replace(ENABLE_PROFILER=True))
    answer = _Answering().start()
    HTTPXClientInstrumentor().instrument()
    try:
        with profiler.profile_sync("download"), httpx.Client() as client:
            assert client.get(answer.url + "/file").status_code == 200
    finally:
        HTTPXClientInstrumentor().uninstrument()
        answer.stop()
    tracing.force_flush()
    spans = {span.name: span for span in exported.get_finished_spans()}
    assert set(spans) == {"download", "GET"}, set(spans)
    block, request = spans["download"], spans["GET"]
    assert request.context.trace_id == block.context.trace_id
    assert request.parent.span_id == block.context.span_id
    # and the trace goes on to the server
    assert answer.traceparent.split("-")[1] == format(block.context.trace_id, "032x")


def test_the_bots_own_global_provider_is_kept(unset_global_provider):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    bots = TracerProvider()
    bots_spans = InMemorySpanExporter()
    bots.add_span_processor(SimpleSpanProcessor(bots_spans))
    unset_global_provider.set_tracer_provider(bots)
    exported = InMemorySpanExporter()
    assert tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=exported) is not None
    assert unset_global_provider.get_tracer_provider() is bots
    with tracing.span("backup.create"):
        trace_id = tracing.current_trace_id()
        with unset_global_provider.get_tracer("bot").start_as_current_span("bot.work"):
            pass
    (inner,) = bots_spans.get_finished_spans()
    assert format(inner.context.trace_id, "032x") == trace_id


# --------------------------------------------------------------------------- bounded exit

EXIT_SCRIPT = """
import sys
from exporter.config import default_settings
from exporter import tracing
import opentelemetry.sdk.trace  # the baseline pays the same imports
import opentelemetry.exporter.otlp.proto.grpc.trace_exporter
import opentelemetry.exporter.otlp.proto.http.trace_exporter
protocol, endpoint, on = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if on:
    tracing.setup(default_settings().replace(ENABLE_TRACING=True, OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                                             OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))
for index in range(200):
    with tracing.span("work", index=index):
        pass
"""


def _exit_time(protocol: str, endpoint: str, on: bool) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, protocol, endpoint, "1" if on else "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    return elapsed


@pytest.mark.slow
@pytest.mark.parametrize("protocol,endpoint", [("grpc", "127.0.0.1:{port}"),
                                               ("http/protobuf", "http://127.0.0.1:{port}")])
def test_exit_is_bounded_with_the_collector_unreachable(protocol, endpoint):
    endpoint = endpoint.format(port=free_port())  # nothing listens there
    without = min(_exit_time(protocol, endpoint, False) for _ in range(2))
    with_tracing = _exit_time(protocol, endpoint, True)
    assert with_tracing - without <= 2.0, (with_tracing, without)


# --------------------------------------------------------------------------- the Collector


@pytest.mark.slow
@pytest.mark.services  # builds the Collector into the harness cache
def test_deploy_collector_config_validates():
    from tests.harness import otelcol
    from tests.harness.base import ServiceUnavailable

    try:
        result = otelcol.validate(COLLECTOR_CONFIG)
    except ServiceUnavailable as exc:
        skip_or_fail(f"collector unavailable: {exc}")
    assert result.returncode == 0, result.stdout + result.stderr
    text = COLLECTOR_CONFIG.read_text()
    assert "http://elasticsearch:9200" in text


def _search_trace(es_url: str, trace_id: str, timeout: float = 30.0) -> list[dict]:
    from tests.harness.otelcol import TRACES_INDEX

    query = urllib.parse.urlencode({"q": f'TraceId:"{trace_id}"'})

    def hits() -> list[dict]:
        try:
            with urllib.request.urlopen(f"{es_url}/{TRACES_INDEX}/_search?{query}", timeout=5) as response:
                return json.load(response)["hits"]["hits"]
        except OSError:  # the index is not there yet
            return []

    return wait_until(hits, timeout, what=f"trace {trace_id} in Elasticsearch", interval=0.5)


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_span_reaches_collector_and_elasticsearch_with_the_log_trace_id(protocol, otel_collector,
                                                                        elasticsearch, tmp_path):
    from exporter.logger_manager import LoggerManager

    endpoint = otel_collector.grpc_endpoint if protocol == "grpc" else otel_collector.http_endpoint
    settings = default_settings().replace(
        ENABLE_TRACING=True, OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="e2e-bot", ENABLE_ENHANCED_LOGGING=True, LOG_DIR=str(tmp_path / "logs"),
        LOG_CONSOLE=False)
    logs = LoggerManager(settings, Metrics())
    tracing.setup(settings)
    logs.enable(settings)
    try:
        with tracing.span("backup.create", path=str(tmp_path)):
            trace_id = tracing.current_trace_id()
            logs.log_event("backup", "success", "inside the span", level=logging.INFO)
        assert tracing.force_flush(5.0)
    finally:
        logs.disable()
        tracing.shutdown()

    lines = [json.loads(line) for line in (tmp_path / "logs").glob("*.json").__next__().read_text().splitlines()]
    logged = [line for line in lines if line.get("message") == "inside the span"]
    assert logged, lines
    flat_trace_id = logged[0].get("trace.id") or logged[0].get("trace", {}).get("id")
    assert flat_trace_id == trace_id

    spans = otel_collector.wait_for_span(trace_id)
    assert [span["name"] for span in spans] == ["backup.create"]
    hits = _search_trace(elasticsearch.url, trace_id)
    assert hits, f"trace {trace_id} not in Elasticsearch"
    document = hits[0]["_source"]
    assert document["TraceId"] == trace_id and document["Name"] == "backup.create"


@pytest.mark.slow
@pytest.mark.services
def test_spans_go_to_the_traces_endpoint_over_the_general_one(otel_collector):
    from exporter.config import load_settings

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = load_settings(environ={
        "ENABLE_TRACING": "true", "OTEL_SERVICE_NAME": "e2e-bot", "OTEL_EXPORTER_OTLP_ENDPOINT": dead,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otel_collector.http_endpoint + "/v1/traces",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "5000"})
    tracing.setup(settings)
    try:
        with tracing.span("backup.verify"):
            trace_id = tracing.current_trace_id()
        assert tracing.force_flush(5.0)
    finally:
        tracing.shutdown()
    spans = otel_collector.wait_for_span(trace_id)
    assert [span["name"] for span in spans] == ["backup.verify"]
