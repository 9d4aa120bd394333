"""End-to-end shipping rate of ElasticsearchSink into a real node vs ``elasticsearch.helpers.bulk``.

    .venv/bin/python bench/bench_shipping.py [--records 100000] [--url http://127.0.0.1:9200]

Without ``--url`` a node is started through ``tests.harness.elasticsearch``. The same ECS lines
(written by ``logger_manager``'s formatter shape) are sent (a) pre-built through
``helpers.bulk`` (baseline), (b) through the sink as fast as the caller can submit (rate = records
/ time until ``close()`` returned, everything indexed), (c) through the sink at 80% of the
baseline rate, reporting the largest queue seen (the queue must not grow).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elasticsearch import Elasticsearch, helpers  # noqa: E402

from exporter.config import default_settings  # noqa: E402
from exporter.metrics import Metrics  # noqa: E402
from exporter.sinks.elasticsearch import ElasticsearchSink, load_template  # noqa: E402


def _lines(count: int) -> list[bytes]:
    lines = []
    for number in range(count):
        document = {
            "@timestamp": "2026-01-01T00:00:00.%03dZ" % (number % 1000), "log.level": "info",
            "message": f"download completed: file{number}.mp4 ({number * 10} bytes in 1.000 s)",
            "bot": {"speed_bytes_per_second": float(number)}, "ecs.version": "8.11.0",
            "event": {"action": "download", "category": ["file"], "duration": 1_000_000_000, "kind": "event",
                      "outcome": "success", "type": ["creation"]},
            "file": {"extension": "mp4", "name": f"file{number}.mp4", "size": number * 10},
            "labels": {"status": "completed", "task_id": f"task-{number % 97}"},
            "log": {"logger": "exporter.events", "origin": {"file": {"line": 42, "name": "bot.py"},
                                                             "function": "handle_update"}},
            "process": {"name": "MainProcess", "pid": 4242, "thread": {"id": 1, "name": "MainThread"}},
        }
        lines.append(json.dumps(document, separators=(",", ":")).encode() + b"\n")
    return lines


def _count(client: Elasticsearch, index: str) -> int:
    client.indices.refresh(index=index)
    return client.count(index=index)["count"]


def baseline(client: Elasticsearch, lines: list[bytes], batch: int, index: str = "logs-bot-benchbase") -> float:
    actions = [{"_op_type": "create", "_index": index, "_id": f"base-{n}", "_source": json.loads(line)}
               for n, line in enumerate(lines)]
    started = time.perf_counter()
    helpers.bulk(client, actions, chunk_size=batch, max_chunk_bytes=100 * 2**20)
    elapsed = time.perf_counter() - started
    assert _count(client, index) == len(lines)
    return len(lines) / elapsed


def sink_run(url: str, lines: list[bytes], state: Path, namespace: str, rate: float | None, batch: int):
    settings = default_settings().replace(ELASTICSEARCH_URL=url, ELASTICSEARCH_NAMESPACE=namespace,
                                          STATE_DIR=str(state), LOG_SHIP_BATCH_SIZE=batch,
                                          LOG_SHIP_INTERVAL=0.2, LOG_SHIP_QUEUE_SIZE=len(lines) + 1)
    sink = ElasticsearchSink(settings.shipping, Metrics())
    sink.start()
    max_queue = 0
    started = time.perf_counter()
    for number, line in enumerate(lines):
        sink.submit(line, logging.INFO)
        if number % 1000 == 0:
            max_queue = max(max_queue, len(sink._queue))
            if rate:
                ahead = number / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    sink.close(600)
    elapsed = time.perf_counter() - started
    stats = sink.stats()
    return len(lines) / elapsed, max_queue, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=default_settings().shipping.batch_size,
                        help="documents per request, for both (default: LOG_SHIP_BATCH_SIZE's)")
    parser.add_argument("--url")
    options = parser.parse_args(argv)
    node = None
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        url = options.url
        if url is None:
            from tests.harness import elasticsearch as harness

            node = harness.start(temp / "es")
            url = node.url
        try:
            client = Elasticsearch(url, request_timeout=120)
            client.indices.put_index_template(name="logs-bot", **load_template())
            lines = _lines(options.records)
            run = "%x" % int(time.time())  # fresh data streams per run (a reused --url node keeps old ones)
            baseline(client, lines[:20_000], options.batch, f"logs-bot-benchwarmup{run}")  # JIT warm-up
            base = baseline(client, lines, options.batch, f"logs-bot-benchbase{run}")
            fast, fast_queue, fast_stats = sink_run(url, lines, temp / "s1", f"benchsink{run}", None, options.batch)
            assert _count(client, f"logs-bot-benchsink{run}") == len(lines), fast_stats
            paced, paced_queue, paced_stats = sink_run(url, lines, temp / "s2", f"benchpaced{run}", 0.8 * base,
                                                       options.batch)
            assert _count(client, f"logs-bot-benchpaced{run}") == len(lines), paced_stats
            print(f"records: {len(lines)}, batch: {options.batch}")
            print(f"helpers.bulk, pre-built documents : {base:10.0f} docs/s (baseline)")
            print(f"ElasticsearchSink, unpaced        : {fast:10.0f} docs/s  ratio {fast / base:.2f}"
                  f"  (largest queue {fast_queue}, spooled {fast_stats['spooled']})")
            print(f"ElasticsearchSink, paced at 80%   : {paced:10.0f} docs/s  ratio {paced / base:.2f}"
                  f"  (largest queue {paced_queue}, spooled {paced_stats['spooled']})")
            client.close()
        finally:
            if node is not None:
                node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
