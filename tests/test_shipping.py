"""The Elasticsearch sink against the real node: delivery, dead letters, spool, deadlines, restarts."""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import time

import pytest
from elasticsearch import Elasticsearch

from exporter.config import default_settings
from exporter.metrics import Metrics
from exporter.sinks.elasticsearch import ElasticsearchSink
from tests.probes import wait_until


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _all_settings(tmp_path, url, namespace="test", **flags):
    flags = {"LOG_SHIP_INTERVAL": 0.2, **flags}
    return default_settings().replace(ELASTICSEARCH_URL=url, ELASTICSEARCH_NAMESPACE=namespace,
                                      STATE_DIR=str(tmp_path / "state"), **flags)


def _settings(tmp_path, url, namespace="test", **flags):
    """The shipping section: what a sink is given."""
    return _all_settings(tmp_path, url, namespace, **flags).shipping


def _line(number: int, level: str = "info", **extra) -> bytes:
    document = {"@timestamp": "2026-01-01T00:00:00.000Z", "log.level": level, "message": f"record {number}",
                "ecs.version": "8.11.0", "labels": {"n": str(number)}, **extra}
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def _search(url: str, index: str, size: int = 10_000, query=None) -> list[dict]:
    client = Elasticsearch(url)
    client.indices.refresh(index=index)
    result = client.search(index=index, size=size, query=query or {"match_all": {}},
                           sort=[{"event.sequence": "asc"}], track_total_hits=True)
    client.close()
    return [hit["_source"] | {"_id": hit["_id"]} for hit in result["hits"]["hits"]]


def test_records_arrive_and_are_searchable(elasticsearch, tmp_path):
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, elasticsearch.url, "arrive"), metrics)
    for number in range(250):
        sink.submit(_line(number), logging.INFO)
    sink.close(10)
    hits = _search(elasticsearch.url, "logs-bot-arrive")
    assert [hit["message"] for hit in hits] == [f"record {n}" for n in range(250)]
    assert {hit["_id"] for hit in hits} == {f"{sink.producer}-{n}" for n in range(250)}
    assert sink.stats()["shipped"] == 250
    assert metrics.registry.get_sample_value("bot_log_shipping_shipped_total") == 250
    found = _search(elasticsearch.url, "logs-bot-arrive", query={"query_string": {"query": 'message:"record 42"'}})
    assert [hit["labels"]["n"] for hit in found] == ["42"]


def test_mapping_error_goes_to_dead_letter_and_the_rest_arrive(elasticsearch, tmp_path):
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, elasticsearch.url, "deadletter"), metrics)
    for number in range(20):
        extra = {"file": {"size": "not a number"}} if number == 7 else {}
        sink.submit(_line(number, **extra), logging.INFO)
    sink.close(10)
    hits = _search(elasticsearch.url, "logs-bot-deadletter")
    assert [hit["message"] for hit in hits] == [f"record {n}" for n in range(20) if n != 7]
    dead = [json.loads(line) for line in (tmp_path / "state" / "dead-letter.ndjson").read_text().splitlines()]
    assert len(dead) == 1
    assert dead[0]["document"]["message"] == "record 7"
    assert "file.size" in dead[0]["reason"]["reason"]
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "dead-letter.ndjson").st_mode) == 0o600
    assert metrics.registry.get_sample_value("bot_log_shipping_dead_lettered_total") == 1


def test_spool_limit_drops_info_before_warning(tmp_path):
    metrics = Metrics()
    settings = _settings(tmp_path, _closed_port_url(), LOG_SPOOL_MAX_BYTES=40_000, LOG_SHIP_BATCH_SIZE=50)
    sink = ElasticsearchSink(settings, metrics)
    for number in range(300):  # ~100 bytes each: the spool holds about a third of them
        sink.submit(_line(number), logging.INFO)
        sink.submit(_line(number, "warning"), logging.WARNING)
    sink.close(1)
    spool_dir = tmp_path / "state" / "spool"
    levels = [line.split(b"\t")[0] for path in sorted(spool_dir.glob("*.spool"))
              for line in path.read_bytes().splitlines()]
    assert levels.count(b"30") > 0 and levels.count(b"20") == 0
    assert sum(path.stat().st_size for path in spool_dir.glob("*.spool")) <= 40_000
    stats = sink.stats()
    assert stats["dropped"]["info"] == 300
    assert stats["dropped"].get("warning", 0) == 300 - levels.count(b"30")
    assert metrics.registry.get_sample_value("bot_log_shipping_dropped_total", {"level": "info"}) == 300
    assert stat.S_IMODE(os.stat(spool_dir).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(path).st_mode) == 0o600 for path in spool_dir.glob("*.spool"))


def test_the_spool_limit_holds_for_every_process_sharing_its_directory(tmp_path):
    """Celery's prefork children share STATE_DIR: each opens the spool before the others write,
    and the limit is still the directory's, not one per process."""
    from exporter.sinks.spool import Spool

    dropped: list[tuple[int, int]] = []
    spools = [Spool(tmp_path / "spool", 20_000, lambda level, count: dropped.append((level, count)))
              for _ in range(4)]
    for spool in spools:
        spool.open()
    for round_ in range(50):
        for number, spool in enumerate(spools):
            spool.append([(logging.INFO, f"{number}-{round_}-{i}", b"x" * 80) for i in range(5)])
    on_disk = sum(path.stat().st_size for path in (tmp_path / "spool").glob("*.spool"))
    assert 15_000 < on_disk <= 20_000  # full, and not four times over
    assert sum(count for _, count in dropped) > 500


def test_the_spool_counts_other_processes_segments_as_they_are_now(tmp_path):
    """Sizes of the other processes' segments are remembered per (name, inode): one rewritten
    in place (a purge replaces the file) or replayed and removed must count as it is now."""
    from exporter._files import replace_file
    from exporter.sinks.spool import Spool

    ours, theirs = (Spool(tmp_path / "spool", 1_000_000, lambda level, count: None) for _ in range(2))
    ours.open()
    theirs.open()
    for round_ in range(3):
        theirs.append([(logging.INFO, f"line {round_}", b"x" * 1000)])
    segments = sorted((tmp_path / "spool").glob("*.spool"))
    assert ours._others_size() == sum(path.stat().st_size for path in segments) > 3000
    replace_file(segments[0], b"y" * 10)  # rewritten smaller, under the same name
    segments[1].unlink()  # replayed by its process
    assert ours._others_size() == 10 + segments[2].stat().st_size


def test_close_keeps_its_deadline_with_elasticsearch_down_and_spools_everything(tmp_path):
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, _closed_port_url()), metrics)
    for number in range(5_000):
        sink.submit(_line(number), logging.INFO)
    started, started_at = time.monotonic(), time.time()
    sink.close(1.0)
    assert time.monotonic() - started <= 1.0 + 0.6
    assert sink.stats()["spooled"] == 5_000
    on_disk = sum(path.stat().st_size for path in (tmp_path / "state" / "spool").glob("*.spool"))
    assert metrics.registry.get_sample_value("bot_log_spool_bytes") == on_disk > 5_000 * 100
    assert started_at - 5 <= metrics.registry.get_sample_value("bot_log_spool_oldest_timestamp_seconds") <= time.time()


def test_a_full_queue_spills_to_the_spool_without_losing_records(tmp_path):
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, _closed_port_url(), LOG_SHIP_QUEUE_SIZE=10,
                                       LOG_SHIP_INTERVAL=30), metrics)
    for number in range(1_000):
        sink.submit(_line(number), logging.INFO)
    sink.close(0.5)
    assert sink.stats()["dropped"] == {} and sink.stats()["queue_size"] == 0
    spooled = [line.split(b"\t")[1] for path in sorted((tmp_path / "state" / "spool").glob("*.spool"))
               for line in path.read_bytes().splitlines()]
    assert sorted(spooled, key=lambda rid: int(rid.rsplit(b"-", 1)[1])) == \
        [f"{sink.producer}-{n}".encode() for n in range(1_000)]
    assert metrics.registry.get_sample_value("bot_log_shipping_queued_total") == 1_000
    assert metrics.registry.get_sample_value("bot_log_shipping_spooled_total") == 1_000


def test_while_the_node_is_away_one_batch_stays_in_memory_and_the_rest_waits_on_disk(tmp_path):
    sink = ElasticsearchSink(_settings(tmp_path, _closed_port_url(), LOG_SHIP_BATCH_SIZE=100), Metrics())
    sink.submit(_line(0), logging.INFO)
    wait_until(lambda: sink.stats()["retried"] >= 1)  # the first request failed: backing off
    for number in range(1, 5_000):  # far below LOG_SHIP_QUEUE_SIZE (50,000)
        sink.submit(_line(number), logging.INFO)
    wait_until(lambda: sink.stats()["spooled"] >= 4_900)  # the first record and all but a batch
    assert sink.stats()["queue_size"] == 100
    sink.close(0.5)
    stats = sink.stats()
    assert stats["dropped"] == {} and stats["spooled"] == 5_000 and stats["queue_size"] == 0


def test_while_the_node_is_away_an_attempt_is_a_connect_not_a_batch(tmp_path):
    sink = ElasticsearchSink(_settings(tmp_path, _closed_port_url(), LOG_SHIP_BATCH_SIZE=10), Metrics())
    for number in range(50):
        sink.submit(_line(number), logging.INFO)
    wait_until(lambda: sink.stats()["retried"] >= 1)
    sent = []
    worker = sink._worker
    send = worker._send
    worker._send = lambda *args, **kwargs: sent.append(args) or send(*args, **kwargs)
    wait_until(lambda: sink.stats()["retried"] >= 3)  # two more attempts, each a failed connect
    assert sent == []  # no batch was built for them
    sink.close(0.5)
    assert sink.stats()["spooled"] == 50 and sink.stats()["dropped"] == {}


def test_close_spools_the_batch_of_a_request_that_never_ends(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:  # a node that takes the connection and never answers
        sink = ElasticsearchSink(_settings(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}",
                                           LOG_SHIP_INTERVAL=0.1), Metrics())
        for number in range(10):
            sink.submit(_line(number), logging.INFO)
        wait_until(lambda: sink.stats()["queue_size"] == 0)  # the worker took them and waits on the node
        sink.close(0.5)
        spooled = [line for path in (tmp_path / "state" / "spool").glob("*.spool")
                   for line in path.read_bytes().splitlines()]
        assert len(spooled) == 10 and sink.stats()["dropped"] == {}
    finally:
        listener.close()
        for connection, _ in accepted:
            connection.close()


class _MixedAnswers:
    """A client answering each replayed batch: its 2nd record refused (400), its 3rd "too many
    requests" (429) the first time; created ids answer 409 when sent again. Down at first."""

    class indices:  # noqa: N801 - the client's namespace
        @staticmethod
        def put_index_template(**kwargs):
            return None

    def __init__(self):
        self.down, self.calls, self.created = True, 0, set()

    def options(self, **kwargs):
        return self

    def close(self):
        return None

    def bulk(self, body, filter_path):
        if self.down:
            raise ConnectionError("down")
        ids = [json.loads(action)["create"]["_id"] for action in body.splitlines()[0::2]]
        items = []
        for number, rid in enumerate(ids):
            if number == 1:
                items.append({"create": {"status": 400, "error": {"type": "mapper_parsing_exception"}}})
            elif number == 2 and self.calls < 2:
                items.append({"create": {"status": 429}})
            else:
                items.append({"create": {"status": 409 if rid in self.created else 201}})
                self.created.add(rid)
        self.calls += 1
        errors = any(item["create"]["status"] not in (201, 409) for item in items)
        return {"errors": errors, "items": items} if "items" in filter_path else {"errors": errors}


def test_a_replayed_batch_with_refused_records_is_not_sent_twice(tmp_path):
    listener = socket.socket()  # something to take the TCP probe while backing off
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    client = _MixedAnswers()
    try:
        sink = ElasticsearchSink(_settings(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}",
                                           LOG_SHIP_INTERVAL=0.1), Metrics(), client=client)
        for number in range(3):
            sink.submit(_line(number), logging.INFO)
        wait_until(lambda: sink.stats()["spooled"] == 3)
        client.down = False
        wait_until(lambda: not sink.spool)
        sink.close(1.0)
    finally:
        listener.close()
    stats = sink.stats()
    assert stats["shipped"] == 2 and stats["dead_lettered"] == 1
    assert len((tmp_path / "state" / "dead-letter.ndjson").read_text().splitlines()) == 1


def test_a_record_past_the_overflow_room_is_dropped_and_counted(tmp_path):
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, _closed_port_url(), LOG_SHIP_QUEUE_SIZE=10,
                                       LOG_SHIP_BATCH_SIZE=1), metrics)
    sink._thread = "not started"  # no worker drains the queue: it fills up to its capacity
    for number in range(100):
        sink.submit(_line(number), logging.WARNING)
    assert sink.stats()["queue_size"] == 10 + 10  # queue_size plus as much overflow room
    assert sink.stats()["dropped"] == {"warning": 80}
    assert metrics.registry.get_sample_value("bot_log_shipping_dropped_total", {"level": "warning"}) == 80


def test_a_new_sink_replays_the_spool(elasticsearch, tmp_path):
    down = ElasticsearchSink(_settings(tmp_path, _closed_port_url(), "replay"), Metrics())
    for number in range(100):
        down.submit(_line(number), logging.INFO)
    down.close(0.5)
    assert list((tmp_path / "state" / "spool").glob("*.spool"))
    up = ElasticsearchSink(_settings(tmp_path, elasticsearch.url, "replay"), Metrics())
    up.start()
    up.submit(_line(100), logging.INFO)
    up.close(10)
    hits = _search(elasticsearch.url, "logs-bot-replay")
    replayed = [hit for hit in hits if hit["agent.ephemeral_id"] == down.producer]
    assert [hit["message"] for hit in replayed] == [f"record {n}" for n in range(100)]
    assert [hit["event.sequence"] for hit in replayed] == list(range(100))
    assert [hit["message"] for hit in hits if hit["agent.ephemeral_id"] == up.producer] == ["record 100"]
    assert not list((tmp_path / "state" / "spool").glob("*.spool"))


def test_two_sinks_sharing_a_state_dir_replay_the_spool_without_an_error(elasticsearch, tmp_path):
    """Celery's prefork children share STATE_DIR: each lists the spool when it starts, so a
    segment one of them replays and removes is gone when the other comes to it."""
    down = ElasticsearchSink(_settings(tmp_path, _closed_port_url(), "shared-spool"), Metrics())
    for number in range(100):
        down.submit(_line(number), logging.INFO)
    down.close(0.5)
    metrics = [Metrics(), Metrics()]
    first, second = (ElasticsearchSink(_settings(tmp_path, elasticsearch.url, "shared-spool"), m) for m in metrics)
    second.spool.open()  # it lists the segments, then the first process takes them
    first.start()
    first.close(10)
    assert not list((tmp_path / "state" / "spool").glob("*.spool"))
    second.start()
    second.submit(_line(100), logging.INFO)
    second.close(10)
    assert metrics[1].registry.get_sample_value("bot_worker_errors_total", {"worker": "log_shipper"}) == 0
    assert second.stats()["shipped"] == 1 and not second.spool
    hits = _search(elasticsearch.url, "logs-bot-shared-spool")
    assert sorted(int(hit["labels"]["n"]) for hit in hits) == list(range(101))


@pytest.mark.slow
def test_elasticsearch_stopped_mid_stream_every_record_once_in_order(start_elasticsearch, tmp_path):
    node = start_elasticsearch()
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, node.url, "restart", LOG_SHIP_BATCH_SIZE=200), metrics)
    for number in range(10_000):
        sink.submit(_line(number, "warning" if number % 10 == 0 else "info"), logging.INFO)
        if number == 3_000:
            node.stop()
        if number == 7_000:
            assert sink.stats()["spooled"] > 0
            node.start()
        if number % 500 == 0:  # a paced stream, so the worker ships while the node stops and starts
            time.sleep(0.05)
    sink.close(60)
    hits = _search(node.url, "logs-bot-restart", size=10_000)
    assert [hit["event.sequence"] for hit in hits] == list(range(10_000))
    assert [hit["message"] for hit in hits] == [f"record {n}" for n in range(10_000)]
    assert len({hit["_id"] for hit in hits}) == 10_000
    assert sink.stats()["queue_size"] == 0 and sink.stats()["spool_bytes"] == 0
    # the node was away for a while: at least one request failed, and the metric counts each retry
    assert metrics.registry.get_sample_value("bot_log_shipping_retried_total") == sink.stats()["retried"] >= 1


def test_the_shippers_own_request_lines_are_neither_shipped_nor_logged(elasticsearch, tmp_path):
    from exporter.logger_manager import LoggerManager
    from exporter.sinks import SINKS

    settings = _all_settings(tmp_path, elasticsearch.url, "quiet", LOG_DIR=str(tmp_path / "logs"), LOG_CONSOLE=False)
    metrics = Metrics()
    manager = LoggerManager(settings, metrics, sink_factories=SINKS)
    manager.enable()

    def shipped() -> float:
        return metrics.registry.get_sample_value("bot_log_shipping_shipped_total")

    logging.getLogger("bot").info("the first line")
    wait_until(lambda: shipped() >= 1, what="the first line shipped")
    # One queue, oldest first: a line the first _bulk request logged would be shipped before this one.
    logging.getLogger("bot").info("the last line")
    wait_until(lambda: shipped() >= 2, what="the last line shipped")
    manager.disable()
    lines = [json.loads(line) for line in (tmp_path / "logs" / "bot.json").read_text().splitlines()]
    assert [line["message"] for line in lines] == ["the first line", "the last line"]
    assert [hit["message"] for hit in _search(elasticsearch.url, "logs-bot-quiet")] == \
        ["the first line", "the last line"]


UNTRACED_PROBE = """
import logging, sys
from elasticsearch import Elasticsearch
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from exporter.config import default_settings
from exporter.metrics import Metrics
from exporter.sinks.elasticsearch import ElasticsearchSink

exported = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exported))
trace.set_tracer_provider(provider)  # what a bot does to let instrumentation use its provider
url, state = sys.argv[1], sys.argv[2]
sink = ElasticsearchSink(default_settings().replace(ELASTICSEARCH_URL=url, ELASTICSEARCH_NAMESPACE="untraced",
                                                    STATE_DIR=state, LOG_SHIP_INTERVAL=0.1).shipping, Metrics())
for number in range(10):
    sink.submit(b'{"@timestamp":"2026-01-01T00:00:00Z","message":"record %d"}\\n' % number, logging.INFO)
sink.close(10)
assert sink.stats()["shipped"] == 10, sink.stats()
Elasticsearch(url).cluster.health()  # the bot's own client is still traced
print(sorted({span.name for span in exported.get_finished_spans()}))
"""


def test_the_shippers_requests_are_not_traced_the_bots_own_client_still_is(elasticsearch, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", UNTRACED_PROBE, elasticsearch.url, str(tmp_path / "state")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['cluster.health']"


def test_a_line_without_its_newline_or_with_one_inside_still_ships(elasticsearch, tmp_path):
    sink = ElasticsearchSink(_settings(tmp_path, elasticsearch.url, "newlines"), Metrics())
    sink.submit(_line(0)[:-1], logging.INFO)  # no trailing newline
    sink.submit(_line(1).replace(b'"message"', b'\n"message"'), logging.INFO)  # whitespace newline inside
    sink.submit(_line(2), logging.INFO)
    sink.close(10)
    assert [hit["message"] for hit in _search(elasticsearch.url, "logs-bot-newlines")] == \
        ["record 0", "record 1", "record 2"]


# --------------------------------------------------------------------------- the parts, offline


def test_a_record_replayed_from_the_spool_is_the_bulk_line_it_would_have_been_sent_as():
    from exporter.sinks._es_bulk import BulkEncoder
    from exporter.sinks.spool import encode_line, parse

    encoder = BulkEncoder("logs-bot-unit", "0123456789abcdef")
    taken = [(logging.INFO, _line(0), b"0123456789abcdef-7"), (logging.WARNING, _line(1, "warning"), b"1f-2a-0c")]
    fresh = encoder.fresh(7, taken)
    assert fresh.splitlines()[0] == b'{"create":{"_index":"logs-bot-unit","_id":"0123456789abcdef-7"}}'
    assert fresh.splitlines()[2] == b'{"create":{"_index":"logs-bot-unit","_id":"1f-2a-0c"}}'
    assert json.loads(fresh.splitlines()[3]) == {**json.loads(_line(1, "warning")),
                                                 "agent.ephemeral_id": "0123456789abcdef", "event.sequence": 8}
    spooled = bytes(encoder.spool_block(7, taken))
    assert encoder.replayed(spooled) == fresh
    records = encoder.records(7, taken)
    assert list(parse(spooled)) == records
    assert b"".join(encode_line(*record) for record in records) == spooled


def test_an_answer_is_sorted_into_shipped_retried_and_dead():
    from exporter.sinks._es_bulk import classify

    records = [(20, f"p-{n}", b"{}") for n in range(6)]
    assert classify({"errors": False}, 6, lambda: pytest.fail("a clean batch builds no records")) == (6, 0, [], [])
    error = {"type": "mapper_parsing_exception", "reason": "failed to parse field [file.size]"}
    items = [{"create": {"status": 201}}, {"create": {"status": 409}}, {"create": {"status": 429}},
             {"create": {"status": 503}}, {"create": {"status": 400, "error": error}}, {"index": {"status": 200}}]
    shipped, duplicates, retry, dead = classify({"errors": True, "items": items}, 6, lambda: records)
    assert shipped == 2 and duplicates == 1
    # sent again to learn which failed: a 409 may be one the first request created
    assert classify({"errors": True, "items": items}, 6, lambda: records, again=True)[:2] == (3, 0)
    assert retry == [records[2], records[3]]
    assert dead == [(records[4], error)]


def test_dead_letters_keep_the_document_the_reason_and_the_level(tmp_path):
    from exporter.sinks.dead_letters import DeadLetters

    letters = DeadLetters(tmp_path, "logs-bot-unit")
    letters.append([((logging.ERROR, "p-1", b'{"message":"m"}'), {"type": "x"}),
                    ((25, "p-2", b"not json \xff"), None)])
    assert [json.loads(line) for line in letters.path.read_text().splitlines()] == [
        {"_id": "p-1", "index": "logs-bot-unit", "reason": {"type": "x"}, "level": "error",
         "document": {"message": "m"}},
        {"_id": "p-2", "index": "logs-bot-unit", "reason": None, "level": "info", "document": "not json \ufffd"},
    ]
    assert stat.S_IMODE(os.stat(letters.path).st_mode) == 0o600
