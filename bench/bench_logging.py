"""Caller-side cost per log record: plain stdlib vs ecs-logging vs logger_manager, same run.

    .venv/bin/python bench/bench_logging.py [--records 100000] [--runs 5] [--elasticsearch-url URL]

(a) stdlib logging, ``%(message)s`` formatter, ``logging.FileHandler``          (the baseline)
(b) stdlib logging, ``ecs_logging.StdlibFormatter``, ``logging.FileHandler``
(c) ``logger_manager`` to its files (bot.json + errors.json), console off, redaction on
(c+span) the same inside an active OpenTelemetry span (trace.id / span.id on every line)
(c+es) ``logger_manager`` to its files and shipping to a real Elasticsearch node

Records come in bursts of ``BURST`` (100) with a pause of ``PAUSE`` (2 ms) between them, as a
bot logs between waits on the network: up to 50,000 lines a second, 250 times the demo's rate.
The caller-side cost is the CPU time of the thread that logs (``time.thread_time``), which is
what a bot's own thread pays: the logger manager writes lines below WARNING behind the caller
(``exporter/logger_manager/_write_behind.py``), so its writer thread's work is not in it. That
work is not hidden: the CPU of the whole process until every line is written (``flush()``) is
printed beside it, and the wall time of the loop too.

Each of ``--runs`` runs measures every variant once, in turn, and divides by (a) of that run;
the ratios' min/median/max over the runs are printed with the goals of issue 19: (c) at most
0.6x of (a), (c+es) at most 0.8x, judged on the worst run (OK/MISSED). Unless ``--no-busy``,
another process spins on one core for the whole bench (a bot's machine is not idle).

Without ``--elasticsearch-url`` a node is started through ``tests.harness.elasticsearch``
(``--no-elasticsearch`` skips (c+es)). A node on this machine does its indexing on the same
cores as the caller, which a bot's Elasticsearch does not: when the bench starts the node and
the machine has two cores or more, the node is pinned to the last core and the bench to the
others, for every variant alike (``--no-pin`` to share them). The worker's flush after the
timed loop is not timed; each (c+es) run ships everything before the next variant starts.

Variants are entries of ``VARIANTS``: ``(directory, count) -> Cost`` of the caller.

Every variant logs the same records through a child logger to handlers on the root logger, the
way a bot's ``logging.getLogger(__name__)`` calls reach them.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import load_settings  # noqa: E402
from exporter.logger_manager import LoggerManager  # noqa: E402
from exporter.sinks import SINKS  # noqa: E402
from exporter.metrics import Metrics  # noqa: E402

MESSAGES = ("processed update %d from chat %s", "download progress %d%% of %s", "cache miss for key %d in %s")


GOALS = {"(c) logger_manager -> file": 0.6, "(c+es) logger_manager -> file + Elasticsearch": 0.8}


class Cost(NamedTuple):
    caller: float  # CPU seconds of the logging thread
    process: float  # CPU seconds of the process until every line was written
    wall: float  # seconds of the loop


BURST = 100  # records logged in a row
PAUSE = 0.002  # seconds between two bursts: at most 50,000 lines/s (the demo logs 200/s)


def _log_records(logger: logging.Logger, count: int, written: Callable[[], None] = lambda: None) -> Cost:
    """Log ``count`` records in bursts; the pauses between them count in no figure."""
    process, caller, wall = time.process_time(), 0.0, 0.0
    for start in range(0, count, BURST):
        thread, began = time.thread_time(), time.perf_counter()
        for number in range(start, min(count, start + BURST)):
            logger.info(MESSAGES[number % 3], number, "batch-7")
        caller += time.thread_time() - thread
        wall += time.perf_counter() - began
        time.sleep(PAUSE)
    written()
    return Cost(caller, time.process_time() - process, wall)


def _with_root_handler(handler: logging.Handler, count: int) -> Cost:
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        return _log_records(logging.getLogger("bench.worker"), count, handler.flush)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        handler.close()


def plain(directory: Path, count: int) -> Cost:
    handler = logging.FileHandler(directory / "plain.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    return _with_root_handler(handler, count)


def ecs_logging_formatter(directory: Path, count: int) -> Cost:
    import ecs_logging

    handler = logging.FileHandler(directory / "ecs.json")
    handler.setFormatter(ecs_logging.StdlibFormatter())
    return _with_root_handler(handler, count)


def _manager(directory: Path, metrics: Metrics | None = None, **flags: object) -> LoggerManager:
    """A manager writing under ``directory``; ``flags`` add settings (``ELASTICSEARCH_URL=...``)."""
    settings = load_settings({"LOG_DIR": str(directory / "managed"), "LOG_CONSOLE": False,
                              "LOG_MAX_SIZE": 1024 * 1024 * 1024, **flags}, environ={})
    return LoggerManager(settings, metrics or Metrics(), sink_factories=SINKS)


def manager(directory: Path, count: int) -> Cost:
    lm = _manager(directory)
    lm.enable()
    try:
        return _log_records(logging.getLogger("bench.worker"), count, lm.flush)
    finally:
        lm.disable()


def manager_in_span(directory: Path, count: int) -> Cost:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("bench")
    lm = _manager(directory)
    lm.enable()
    try:
        with tracer.start_as_current_span("bench"):
            return _log_records(logging.getLogger("bench.worker"), count, lm.flush)
    finally:
        lm.disable()


def manager_shipping(url: str) -> Callable[[Path, int], Cost]:
    """(c) with Elasticsearch shipping on: the caller's cost only (the flush is not timed)."""

    def variant(directory: Path, count: int) -> Cost:
        metrics = Metrics()
        lm = _manager(directory, metrics, ELASTICSEARCH_URL=url, STATE_DIR=str(directory / "state"),
                      ELASTICSEARCH_NAMESPACE="bench", LOG_SHUTDOWN_TIMEOUT=120)
        lm.enable()
        try:
            return _log_records(logging.getLogger("bench.worker"), count, lm.flush)
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


VARIANTS: dict[str, Callable[[Path, int], Cost]] = {
    "(a) stdlib %(message)s -> file": plain,
    "(b) stdlib + ecs-logging -> file": ecs_logging_formatter,
    "(c) logger_manager -> file": manager,
    "(c+span) logger_manager, in a span": manager_in_span,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--elasticsearch-url", help="measure (c+es) against this node instead of starting one")
    parser.add_argument("--no-elasticsearch", action="store_true", help="skip (c+es)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the node the bench starts")
    parser.add_argument("--no-busy", action="store_true", help="no other process spinning on a core")
    args = parser.parse_args(argv)
    busy = None if args.no_busy else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs, note = _bench(args)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    _report(runs, args.records, note + ("" if args.no_busy else "; another process spinning on a core"))
    return 0


def _bench(args: argparse.Namespace) -> tuple[list[dict[str, Cost]], str]:
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
            return _measure(args.records, args.runs), note
        finally:
            if node is not None:
                node.stop()


def _report(runs: list[dict[str, Cost]], records: int, note: str) -> None:
    baseline = "(a) stdlib %(message)s -> file"
    print(f"{records} records a variant, {len(runs)} runs ({note.lstrip('; ')}). Per record, the median run: "
          "CPU of the logging thread, CPU of the process until written, wall time of the loop; then the "
          "logging thread's CPU as a ratio to (a) of the same run: min / median / max")
    for name in runs[0]:
        costs = [run[name] for run in runs]
        ratios = sorted(run[name].caller / run[baseline].caller for run in runs)
        per = {field: statistics.median(getattr(cost, field) for cost in costs) / records * 1e6
               for field in Cost._fields}
        line = (f"  {name:47s} {per['caller']:6.2f} / {per['process']:6.2f} / {per['wall']:6.2f} us   "
                f"{ratios[0]:5.2f} / {statistics.median(ratios):5.2f} / {ratios[-1]:5.2f}x")
        goal = GOALS.get(name)
        if goal is not None:
            line += f"  goal <= {goal}x (every run): {'OK' if ratios[-1] <= goal else 'MISSED'}"
        print(line)
    if SPOOLED:
        print(f"  (c+es) records spooled while the node fell behind, per run: {SPOOLED[1:]}")


def _measure(records: int, runs: int) -> list[dict[str, Cost]]:
    measured = []
    for _ in range(runs):
        run = {}
        for name, variant in VARIANTS.items():
            with tempfile.TemporaryDirectory() as directory:
                run[name] = variant(Path(directory), records)
        measured.append(run)
    return measured


if __name__ == "__main__":
    raise SystemExit(main())
