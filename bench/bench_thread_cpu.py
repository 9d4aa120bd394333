"""The CPU of the alert worker per alert and of the span export thread per span, in this process.

    .venv/bin/python bench/bench_thread_cpu.py [--what alerts,spans] [--seconds 20] [--rate 2.5] [--spans-rate 75]

``bench_cpu_share.py`` measures the whole bot, where a thread's share of a few hundredths of a
CPU second is lost in the noise of the rest. This one runs only the feature: ``alerts`` (the
alert system with logging to files on, as in the ``on`` mode: each alert raised from an asyncio
loop at ``--rate`` a second, a new one each time, through the default ``log`` channel) and
``spans`` (tracing to a real OpenTelemetry Collector started by ``tests.harness``: profiled
operations and transfer spans as the profiler and ``record_span`` make them, ``--spans-rate`` a
second). It reads the CPU of the ``opsstack-alerts`` and ``OtelBatchSpanRecordProcessor``
threads (Linux ``schedstat``) over an idle window and a busy window of the same length, and
prints the busy CPU, the idle CPU and (busy - idle) per item: what one more alert or span costs
the thread, apart from its timers. Each measurement runs in a fresh child process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_cpu_share import thread_cpu  # noqa: E402 - this folder is on the path of a script run from it

THREADS = {"alerts": "opsstack-alerts", "spans": "OtelBatchSpanRecordProcessor"}


async def _paced(rate: float, seconds: float, step: Any) -> int:
    """Call ``step(count)`` (it returns how many items it made) ``rate`` times a second for
    ``seconds`` of the loop's clock; the items made."""
    loop, count = asyncio.get_running_loop(), 0
    due = loop.time()
    until = due + seconds
    while due < until:
        await asyncio.sleep(max(0.0, due - loop.time()))
        count += await step(count)
        due += 1.0 / rate
    return count


async def _alerts(rate: float, seconds: float) -> int:
    from exporter.alert_manager import AlertSeverity, AlertType, alert_manager

    async def one(count: int) -> int:
        await alert_manager.trigger_alert(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "Download failed",
                                          "peer reset the connection during download", task_id=f"download_{count}")
        return 1

    return await _paced(rate, seconds, one)


async def _spans(rate: float, seconds: float) -> int:
    from exporter import tracing

    async def one(count: int) -> int:
        started = tracing.start_operation_span("download")
        made = 1
        if count % 2:  # a transfer's own span inside its operation, as log_download records it
            tracing.record_span("download", 0.03, file_name=f"{count}.mp4", size_bytes=123456, task_id=f"d{count}")
            made = 2
        tracing.end_operation_span(started, None)
        return made

    return await _paced(rate, seconds, one)


def _child(what: str, rate: float, seconds: float) -> dict:
    from exporter import runtime

    handle = runtime.start()
    name = THREADS[what]
    time.sleep(2.0)  # warm-up: the first alert loads hashlib, the first export connects
    asyncio.run((_alerts if what == "alerts" else _spans)(rate, 2.0))
    time.sleep(1.5)
    idle = thread_cpu().get(name, 0.0)
    time.sleep(seconds)
    idle = thread_cpu().get(name, 0.0) - idle
    busy = thread_cpu().get(name, 0.0)
    count = asyncio.run((_alerts if what == "alerts" else _spans)(rate, seconds))
    time.sleep(1.5)  # the last export or persist tick of the window
    busy = thread_cpu().get(name, 0.0) - busy
    handle.stop()
    return {"what": what, "count": count, "busy": busy, "idle": idle}


def _environment(what: str, work: Path, otlp_url: str | None) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("ENABLE_", "OTEL_", "LOG_", "ELASTICSEARCH_", "ALERT", "METRICS_", "OPSSTACK_"))}
    features = ({"ENABLE_ALERT_SYSTEM": "1", "ENABLE_ENHANCED_LOGGING": "1", "LOG_CONSOLE": "0"} if what == "alerts"
                else {"ENABLE_PROFILER": "1", "ENABLE_TRACING": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url or ""})
    return {**clean, "PYTHONPATH": str(ROOT), "LOG_DIR": str(work / "logs"), "STATE_DIR": str(work / "state"),
            "BACKUP_DIR": str(work / "backups"), **features}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="alerts,spans")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=2.5, help="alerts a second")
    parser.add_argument("--spans-rate", type=float, default=50.0, help="operations a second (1.5 spans each)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        rate = options.rate if options.child == "alerts" else options.spans_rate
        print(json.dumps(_child(options.child, rate, options.seconds)), flush=True)
        return 0
    extra = dict(pair.split("=", 1) for pair in options.env)
    whats = [what.strip() for what in options.what.split(",")]
    with tempfile.TemporaryDirectory(prefix="opsstack-threadcpu-") as temp:
        collector = None
        if "spans" in whats:
            from tests.harness import otelcol

            collector = otelcol.start(Path(temp) / "otelcol")
        try:
            for what in whats:
                for _ in range(options.rounds):
                    with tempfile.TemporaryDirectory(prefix="run-", dir=temp) as work:
                        env = {**_environment(what, Path(work), collector and collector.http_endpoint), **extra}
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", what, "--rate", str(options.rate),
                             "--spans-rate", str(options.spans_rate), "--seconds", str(options.seconds)],
                            cwd=work, env=env, capture_output=True, text=True, check=True).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    per = (result["busy"] - result["idle"]) / max(1, result["count"])
                    print(f"{what}: {result['count']} in {options.seconds:.0f} s: {THREADS[what]} busy "
                          f"{result['busy']:.4f} s, idle {result['idle']:.4f} s, {per * 1e6:.1f} us per "
                          f"{what[:-1]} beyond idle, {result['busy'] / max(1, result['count']) * 1e6:.1f} us "
                          f"all in", flush=True)
        finally:
            if collector is not None:
                collector.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
