"""One smoke test per service: each is the real thing, reachable on loopback."""
from __future__ import annotations

import json
import smtplib
import urllib.request
from email.message import EmailMessage

import pytest

from tests.harness.telegram import markdown_v2_error
from tests.probes import wait_until

pytestmark = pytest.mark.services


def _post_json(url: str, payload: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            return response.status, json.loads(body) if body else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_prometheus_scrapes_a_target(start_prometheus, webhook_receiver):
    # Prometheus scraping itself is the simplest real target.
    server = start_prometheus({"global": {"scrape_interval": "1s"}, "scrape_configs": []})
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}]}
    server.config_path.write_text(json.dumps(config))
    urllib.request.urlopen(urllib.request.Request(f"{server.url}/-/reload", method="POST"), timeout=5)
    result = wait_until(lambda: server.query('up{job="self"} == 1'), timeout=20, what="Prometheus scraping itself")
    assert result[0]["metric"]["job"] == "self"


def test_alertmanager_routes_an_alert_to_a_webhook(start_alertmanager, webhook_receiver):
    manager = start_alertmanager({
        "route": {"receiver": "hook", "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": f"{webhook_receiver.url}/hook"}]}],
    })
    status, _ = _post_json(f"{manager.url}/api/v2/alerts",
                           [{"labels": {"alertname": "SmokeTest", "severity": "info"},
                             "annotations": {"summary": "smoke"}}])
    assert status == 200
    assert webhook_receiver.wait_for(lambda: webhook_receiver.requests, timeout=15)
    body = webhook_receiver.requests[0]["json"]
    assert body["alerts"][0]["labels"]["alertname"] == "SmokeTest"
    assert any(a["labels"]["alertname"] == "SmokeTest" for a in manager.alerts())


def test_smtp_server_receives_a_mail(smtp_server):
    message = EmailMessage()
    message["From"] = "bot@example.test"
    message["To"] = "ops@example.test"
    message["Subject"] = "smoke"
    message.set_content("hello")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.send_message(message)
    assert len(smtp_server.messages) == 1
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ["ops@example.test"]
    assert received.message["Subject"] == "smoke"


def test_telegram_stand_in_answers_like_the_bot_api(telegram_api):
    base = f"{telegram_api.url}/bot{telegram_api.token}/sendMessage"
    status, body = _post_json(base, {"chat_id": 42, "text": "hello"})
    assert status == 200 and body["ok"] is True and body["result"]["text"] == "hello"
    status, body = _post_json(f"{telegram_api.url}/bot1:wrong/sendMessage", {"chat_id": 42, "text": "x"})
    assert status == 401 and body == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    status, body = _post_json(base, {"chat_id": 42, "text": "v1.2", "parse_mode": "MarkdownV2"})
    assert status == 400 and "reserved" in body["description"]
    assert len(telegram_api.messages) == 1


def test_markdown_v2_check_accepts_escaped_text():
    assert markdown_v2_error(r"*Backup failed* on host\-1 \(disk 95\.0%\)") is None
    assert markdown_v2_error("*unclosed") == ("Bad Request: can't parse entities: Can't find end of the entity "
                                              "starting at byte offset 0")


def test_elasticsearch_indexes_and_finds_a_document(elasticsearch):
    from elasticsearch import Elasticsearch

    client = Elasticsearch(elasticsearch.url)
    assert client.cluster.health(wait_for_status="yellow", timeout="10s")["status"] in ("yellow", "green")
    client.index(index="smoke-test", id="doc-1", document={"message": "the harness is real"}, refresh=True)
    hits = client.search(index="smoke-test", query={"match": {"message": "harness"}})["hits"]
    assert hits["total"]["value"] == 1 and hits["hits"][0]["_id"] == "doc-1"


def test_collector_receives_an_otlp_span(otel_collector):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "harness-smoke"}))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{otel_collector.grpc_endpoint}", insecure=True, timeout=5)))
    with provider.get_tracer("smoke").start_as_current_span("smoke-span") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    wait_until(lambda: any(s["traceId"] == trace_id and s["name"] == "smoke-span" for s in otel_collector.spans()),
               timeout=15, what="the span in the Collector's file")
