"""Each saved search of deploy/kibana runs on the real node over records written by logger_manager."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from exporter.alert_manager import AlertManager
from exporter.channels import CHANNELS
from exporter.config import default_settings
from exporter.logger_manager.manager import LoggerManager
from exporter.metrics import Metrics
from exporter.sinks import SINKS

SAVED_OBJECTS = Path(__file__).resolve().parents[1] / "deploy" / "kibana" / "saved-objects.ndjson"


def _saved_objects() -> list[dict]:
    return [json.loads(line) for line in SAVED_OBJECTS.read_text().splitlines() if line.strip()]


def _queries() -> dict[str, str]:
    out = {}
    for saved in _saved_objects():
        if saved["type"] == "search":
            source = json.loads(saved["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert source["query"]["language"] == "lucene"
            out[saved["id"]] = source["query"]["query"]
    return out


def test_saved_objects_are_a_data_view_and_five_searches_referencing_it():
    objects = _saved_objects()
    views = [saved for saved in objects if saved["type"] == "index-pattern"]
    assert [view["attributes"]["title"] for view in views] == ["logs-bot-*"]
    assert views[0]["attributes"]["timeFieldName"] == "@timestamp"
    searches = [saved for saved in objects if saved["type"] == "search"]
    assert {saved["id"] for saved in searches} == {"bot-errors", "bot-failed-downloads", "bot-slow-operations",
                                                   "bot-alerts", "bot-task-story"}
    for saved in searches:
        assert saved["references"] == [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                                        "type": "index-pattern", "id": views[0]["id"]}]


def _flat(document: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in document.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture
def bot_logs(elasticsearch, tmp_path):
    """Records of a small bot session, written by logger_manager and shipped by the sink."""
    settings = default_settings().replace(
        LOG_DIR=str(tmp_path / "logs"), STATE_DIR=str(tmp_path / "state"), LOG_CONSOLE=False,
        ELASTICSEARCH_URL=elasticsearch.url, ELASTICSEARCH_NAMESPACE="kibana", LOG_SHIP_INTERVAL=0.1,
        LOG_SHUTDOWN_TIMEOUT=30)  # disable() waits until all is shipped: a cold node creates the data stream slowly
    manager = LoggerManager(settings, Metrics(), sink_factories=SINKS)
    manager.enable()
    alerts = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False)
    alerts.enable(settings.replace(ENABLE_ALERT_SYSTEM=True))  # every severity to the log channel
    try:
        bot = logging.getLogger("exporter.kibana_test")
        bot.info("bot started; task-1 is mentioned here only in the text")
        manager.log_download("task-1", "a.mp4", 1000, 1.0, 1000, "completed")
        manager.log_api_call("getFile", 0.5, "failure", 502, task_id="task-1")
        manager.log_download("task-1", "b.mp4", 2000, 2.0, 1000, "failed")
        manager.log_upload("task-2", "c.mp4", 3000, 3.0, 1000, "failed")
        manager.log_download("task-2", "d.mp4", 4000, 4.0, 1000, "failed")
        manager.log_event("slow_operation", "success", "upload took 9.000 s (threshold 5.000 s)",
                          level=logging.WARNING, duration=9.0, operation="upload")
        # what the alert manager's log channel writes: a firing alert (level error) and its resolution
        alert = alerts.trigger_alert_sync("download_failed", "high", "Download failed", "b.mp4: timed out",
                                          task_id="task-1")
        assert alerts.flush(10.0)
        alerts.resolve_alert(alert)
        assert alerts.flush(10.0)
        manager.log_event("alert.triggered", "failure", "an event named like an alert is not one",
                          level=logging.INFO)
        manager.log_event("backup", "failure", "backup nightly failed", level=logging.ERROR)
        bot.error("database is locked")
        bot.critical("out of disk")
        bot.warning("slow_operation mentioned in a plain warning")
    finally:
        alerts.disable(timeout=1.0)
        manager.disable()
    client = Elasticsearch(elasticsearch.url)
    client.indices.refresh(index="logs-bot-kibana")
    hits = client.search(index="logs-bot-kibana", size=100)["hits"]["hits"]
    alert_lines = [hit["_source"] for hit in hits if hit["_source"]["log"]["logger"] == "exporter.alerts"]
    assert sorted(line["event"]["action"] for line in alert_lines) == ["alert.firing", "alert.resolved"]
    yield client, {hit["_id"]: _flat(hit["_source"]) for hit in hits}
    client.close()


def _run(client, query: str) -> set[str]:
    result = client.search(index="logs-bot-kibana", size=100, query={"query_string": {"query": query}})
    return {hit["_id"] for hit in result["hits"]["hits"]}


def _ids(documents: dict, predicate) -> set[str]:
    return {doc_id for doc_id, doc in documents.items() if predicate(doc)}


def test_each_saved_search_returns_exactly_the_expected_documents(bot_logs):
    client, documents = bot_logs
    queries = _queries()
    expected = {
        "bot-errors": _ids(documents, lambda d: d["log.level"] in ("error", "critical")),
        "bot-failed-downloads": _ids(documents, lambda d: d.get("event.action") == "download"
                                     and d.get("event.outcome") == "failure"),
        "bot-slow-operations": _ids(documents, lambda d: d.get("event.action") == "slow_operation"),
        "bot-alerts": _ids(documents, lambda d: d.get("log.logger") == "exporter.alerts"),
        "bot-task-story": _ids(documents, lambda d: d.get("labels.task_id") == "task-1"),
    }
    sizes = {name: len(ids) for name, ids in expected.items()}
    assert sizes == {"bot-errors": 4, "bot-failed-downloads": 2, "bot-slow-operations": 1, "bot-alerts": 2,
                     "bot-task-story": 5}
    for name, query in queries.items():
        assert _run(client, query.replace("TASK_ID", "task-1")) == expected[name], name
    messages = {documents[i]["message"] for i in _run(client, queries["bot-failed-downloads"])}
    assert all("b.mp4" in m or "d.mp4" in m for m in messages)
