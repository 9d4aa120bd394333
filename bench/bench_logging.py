"""Caller-side cost per log record: plain stdlib vs ecs-logging vs logger_manager, same run.

    .venv/bin/python bench/bench_logging.py [--records 100000] [--repeat 3] [--elasticsearch-url URL]

(a) stdlib logging, ``%(message)s`` formatter, ``logging.FileHandler``          (the baseline)
(b) stdlib logging, ``ecs_logging.StdlibFormatter``, ``logging.FileHandler``
(c) ``logger_manager`` to its files (bot.json + errors.json), console off, redaction on
(c+span) the same inside an active OpenTelemetry span (trace.id / span.id on every line)
(c+es) ``logger_manager`` to its files and shipping to a real Elasticsearch node

Without ``--elasticsearch-url`` a node is started through ``tests.harness.elasticsearch``
(``--no-elasticsearch`` skips (c+es)). A node on this machine does its indexing on the same
cores as the caller, which a bot's Elasticsearch does not: when the bench starts the node and
the machine has two cores or more, the node is pinned to the last core and the bench to the
others, for every variant alike (``--no-pin`` to share them). The worker's flush after the
timed loop is not timed; each (c+es) run ships everything before the next variant starts.

Variants are entries of ``VARIANTS``: ``(directory, count) -> seconds`` spent by the caller.

Every variant logs the same records through a child logger to handlers on the root logger, the
way a bot's ``logging.getLogger(__name__)`` calls reach them. The best of ``--repeat`` runs is
printed, with the ratio to (a). Goal: (c) within 1.5x of (a).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import load_settings  # noqa: E402
from exporter.logger_manager import LoggerManager  # noqa: E402
from exporter.sinks import SINKS  # noqa: E402
from exporter.metrics import Metrics  # noqa: E402

MESSAGES = ("processed update %d from chat %s", "download progress %d%% of %s", "cache miss for key %d in %s")


def _log_records(logger: logging.Logger, count: int) -> float:
    started = time.perf_counter()
    for number in range(count):
        logger.info(MESSAGES[number % 3], number, "batch-7")
    return time.perf_counter() - started


def _with_root_handler(handler: logging.Handler, count: int) -> float:
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        return _log_records(logging.getLogger("bench.worker"), count)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        handler.close()


def plain(directory: Path, count: int) -> float:
    handler = logging.FileHandler(directory / "plain.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    return _with_root_handler(handler, count)


def ecs_logging_formatter(directory: Path, count: int) -> float:
    import ecs_logging

    handler = logging.FileHandler(directory / "ecs.json")
    handler.setFormatter(ecs_logging.StdlibFormatter())
    return _with_root_handler(handler, count)


def _manager(directory: Path, metrics: Metrics | None = None, **flags: object) -> LoggerManager:
    """A manager writing under ``directory``; ``flags`` add settings (``ELASTICSEARCH_URL=...``)."""
    settings = load_settings({"LOG_DIR": str(directory / "managed"), "LOG_CONSOLE": False,
                              "LOG_MAX_SIZE": 1024 * 1024 * 1024, **flags}, environ={})
    return LoggerManager(settings, metrics or Metrics(), sink_factories=SINKS)


def manager(directory: Path, count: int) -> float:
    lm = _manager(directory)
    lm.enable()
    try:
        return _log_records(logging.getLogger("bench.worker"), count)
    finally:
        lm.disable()


def manager_in_span(directory: Path, count: int) -> float:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("bench")
    lm = _manager(directory)
    lm.enable()
    try:
        with tracer.start_as_current_span("bench"):
            return _log_records(logging.getLogger("bench.worker"), count)
    finally:
        lm.disable()


def manager_shipping(url: str) -> Callable[[Path, int], float]:
    """(c) with Elasticsearch shipping on: the caller's cost only (the flush is not timed)."""

    def variant(directory: Path, count: int) -> float:
        metrics = Metrics()
        lm = _manager(directory, metrics, ELASTICSEARCH_URL=url, STATE_DIR=str(directory / "state"),
                      ELASTICSEARCH_NAMESPACE="bench", LOG_SHUTDOWN_TIMEOUT=120)
        lm.enable()
        try:
            return _log_records(logging.getLogger("bench.worker"), count)
        finally:
            lm.disable()
            shipped = metrics.ship_shipped._value.get()
            if shipped < count:
                raise SystemExit(f"(c+es) shipped {shipped:.0f} of {count} records")
            SPOOLED.append(int(metrics.ship_spooled._value.get()))

    return variant


SPOOLED: list[int] = []  # records each (c+es) run spooled because the node fell behind the burst


def _pin(node_pid: int) -> str:
    """Node on the last core, this process on the others; a note for the report ('' when not done)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return ""
    node_core, ours = cores[-1], set(cores[:-1])
    for task in os.listdir(f"/proc/{node_pid}/task"):  # every thread of the JVM
        os.sched_setaffinity(int(task), {node_core})
    os.sched_setaffinity(0, ours)
    return f"Elasticsearch pinned to core {node_core}, the bench to {sorted(ours)}"


VARIANTS: dict[str, Callable[[Path, int], float]] = {
    "(a) stdlib %(message)s -> file": plain,
    "(b) stdlib + ecs-logging -> file": ecs_logging_formatter,
    "(c) logger_manager -> file": manager,
    "(c+span) logger_manager, in a span": manager_in_span,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--elasticsearch-url", help="measure (c+es) against this node instead of starting one")
    parser.add_argument("--no-elasticsearch", action="store_true", help="skip (c+es)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the node the bench starts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        node, note, url = None, "", args.elasticsearch_url
        if url is None and not args.no_elasticsearch:
            from tests.harness import elasticsearch as harness

            node = harness.start(Path(work) / "es")
            url = node.url
            if not args.no_pin:
                note = _pin(node.process.pid)
        try:
            if url:
                VARIANTS["(c+es) logger_manager -> file + Elasticsearch"] = manager_shipping(url)
                VARIANTS["(c+es) logger_manager -> file + Elasticsearch"](Path(work), 20_000)  # data stream, JIT
            best = _measure(args.records, args.repeat)
        finally:
            if node is not None:
                node.stop()
    baseline = best["(a) stdlib %(message)s -> file"]
    print(f"{args.records} records, best of {args.repeat} runs, caller-side cost per record"
          + (f" ({note})" if note else ""))
    for name, seconds in best.items():
        per_record = seconds / args.records * 1e6
        print(f"  {name:47s} {per_record:7.2f} us/record  {seconds / baseline:5.2f}x of (a)")
    if SPOOLED:
        print(f"  (c+es) records spooled while the node fell behind, per run: {SPOOLED[1:]}")
    return 0


def _measure(records: int, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, variant in VARIANTS.items():
            with tempfile.TemporaryDirectory() as directory:
                seconds = variant(Path(directory), records)
            best[name] = min(best.get(name, seconds), seconds)
    return best


if __name__ == "__main__":
    raise SystemExit(main())
