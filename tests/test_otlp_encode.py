"""``exporter._otlp_encode``: the same OTLP/protobuf bytes as the SDK's encoder, None for what it
does not write, and the exporter sending them to a real HTTP server."""
from __future__ import annotations

import http.server
import threading

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, TraceState

from exporter import tracing
from exporter._otlp_encode import encode
from exporter.config import default_settings


@pytest.fixture
def exported():
    spans = InMemorySpanExporter()
    tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=spans)
    yield spans
    tracing.shutdown()


def finished(spans: InMemorySpanExporter) -> list:
    assert tracing.force_flush(5.0)
    return list(spans.get_finished_spans())


def sdk_bytes(spans: list) -> bytes:
    return encode_spans(spans).SerializePartialToString()


def test_the_profilers_and_transfers_spans_encode_as_the_sdk_does(exported):
    for count in range(40):
        started = tracing.start_operation_span("download")
        if count % 2:
            tracing.record_span("download", 0.03, failed=count % 4 == 1, file_name=f"{count}.mp4",
                                size_bytes=123456 * count, task_id=f"d{count}")
        error = None
        if count % 12 == 0:
            try:
                raise ConnectionError("peer reset the connection during download")
            except ConnectionError as exc:
                error = exc
        tracing.end_operation_span(started, error)
    spans = finished(exported)
    assert len(spans) == 60
    assert encode(spans) == sdk_bytes(spans)


def test_every_plain_value_and_field_encodes_as_the_sdk_does(exported):
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED),
                         trace_state=TraceState([("vendor", "value"), ("other", "x=1")]))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with tracing.span("naïve ünïcode", path="/data/" + "x" * 300, flag=True, off=False, zero=0,
                          negative=-5, huge=2**62, ratio=0.25, nothing=None, empty="") as span:
            span.add_event("checkpoint", {"step": 3, "why": "é" * 70})
            span.add_event("")
            span.set_status(Status(StatusCode.ERROR, "went wrong"))
    finally:
        otel_context.detach(token)
    with tracing.span("ok") as span:
        span.set_status(Status(StatusCode.OK))
    spans = finished(exported)
    assert encode(spans) == sdk_bytes(spans)
    assert encode([]) == sdk_bytes([]) == b""


def test_what_it_does_not_write_is_left_to_the_sdk(exported):
    with tracing.span("listed") as span:
        span.set_attribute("sizes", [1, 2, 3])  # an array value
    linked = trace.get_tracer("test", tracer_provider=tracing.provider()).start_span(
        "linked", links=[Link(SpanContext(1, 2, is_remote=False))])
    linked.end()
    spans = finished(exported)
    assert [encode([span]) for span in spans] == [None, None]
    assert encode(spans[:1] + spans) is None  # one such span: the whole batch


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_http_exporter_sends_these_bytes(exported, monkeypatch):
    from exporter import _otlp_encode

    encoded = []
    monkeypatch.setattr(_otlp_encode, "encode", lambda spans: encoded.append(len(spans)) or encode(spans))
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = default_settings().replace(
            ENABLE_TRACING=True, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}").tracing
        exporter = tracing._span_exporter(config)
        for count in range(5):
            tracing.end_operation_span(tracing.start_operation_span(f"op{count}"), None)
        spans = finished(exported)
        _Collector.bodies.clear()
        assert exporter.export(spans).name == "SUCCESS"
        assert _Collector.bodies == [sdk_bytes(spans)] and encoded == [5]  # not the SDK's export
        exporter.shutdown()
    finally:
        server.shutdown()
        server.server_close()
