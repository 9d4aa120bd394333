"""Resident memory a process gains from opsstack, each figure measured in a fresh subprocess.

    .venv/bin/python bench/bench_memory.py

(a) baseline: a Python process that only reads its own RSS
(b) everything off: import ``exporter``, every manager module, ``runtime`` and ``tracing``, and
    call the disabled managers (profile_sync, span, log_event); then, for information, also
    ``runtime.start()`` with the defaults (all features off). Also measured importing the
    package from source, with no bytecode to load (its first import without write access, or
    with PYTHONDONTWRITEBYTECODE): compiling costs about 2 MiB more.
(c) everything on and shipping: logging + shipping to Elasticsearch (an unreachable URL: the
    client, queue and spool are loaded all the same), alerts, backups, profiler, recovery,
    tracing over OTLP (http/protobuf, the default; gRPC for information), /metrics served; 2000
    log lines, spans and profiled blocks and a scrape. Read once the threads have settled: the
    shipper has made its first attempt (its client is loaded) and the spans have been worked.
    Read right after the scrape it depended on how far the threads had got. Even settled it
    varies by a few MiB between runs, so (c) is the median of five fresh processes.

Goals: (b) - (a) <= 5 MiB (issue 4); (c) - (a) <= 35 MiB and, in an asyncio bot, (d) <= 28 MiB
(issue 19).

The package's bytecode is compiled first (as ``pip install`` does), so that the figures do not
depend on which ``.pyc`` files happen to be stale.
"""
from __future__ import annotations

import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5  # fresh processes measured for (c)

RSS = """
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
"""

ASYNC_BOT = """
import sys
if sys.argv[-1] == "async-bot":  # what an asyncio bot has loaded before it imports opsstack
    import asyncio, logging, ssl
"""

BASELINE = RSS + ASYNC_BOT + """
import json
print(json.dumps({"rss": rss()}))
"""

OFF = RSS + ASYNC_BOT + """
import json
import exporter
from exporter import runtime, tracing
from exporter.alert_manager import alert_manager
from exporter.backup_manager import backup_manager
from exporter.logger_manager import logger_manager
from exporter.profiler import profiler
from exporter.recovery_manager import recovery_manager
with profiler.profile_sync("x"):
    pass
with tracing.span("x"):
    pass
logger_manager.log_event("x", "success")
imported = rss()
handle = runtime.start()
print(json.dumps({"rss": imported, "started": rss(), "enabled": handle.enabled}))
handle.stop()
"""

ON = RSS + ASYNC_BOT + """
import json, logging, os, time, urllib.request
from exporter import runtime, tracing
from exporter.logger_manager import logger_manager
from exporter.profiler import profiler
handle = runtime.start()
log = logging.getLogger("bench.bot")
for index in range(2000):
    with profiler.profile_sync("work"):
        with tracing.span("work.step", index=index):
            log.info("step %d done", index)
logger_manager.log_event("bench", "success", "done")
with urllib.request.urlopen(f"http://127.0.0.1:{handle.settings.metrics.port}/metrics") as response:
    response.read()
before_settled = rss()
# Settled: the shipper has tried the (unreachable) node once, so its client is loaded, and the
# span queue has been worked; the figure must not depend on how far the threads got.
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    shipping = logger_manager.get_log_stats()["shipping"]
    if shipping["spooled"] or shipping["shipped"]:
        break
    time.sleep(0.05)
else:
    raise SystemExit("the shipper made no attempt within 30 s")
tracing.force_flush()
time.sleep(1.0)
print(json.dumps({"rss": rss(), "before_settled": before_settled, "enabled": handle.enabled}))
handle.stop()
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(script: str, env: dict[str, str], cwd: str, *argv: str) -> dict:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("ENABLE_", "OTEL_", "LOG_", "ELASTICSEARCH_", "ALERT", "METRICS_",
                                    "BACKUP_", "PROFIL", "RECOVERY_", "PROMETHEUS_MULTIPROC_DIR"))}
    result = subprocess.run([sys.executable, "-c", script, *argv], cwd=cwd, capture_output=True, text=True,
                            env={**clean, "PYTHONPATH": str(ROOT), **env}, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    compileall.compile_dir(ROOT / "exporter", quiet=1)
    with tempfile.TemporaryDirectory() as work:
        base = Path(work)
        source_only = base / "source-only"  # a copy without bytecode, never written any
        shutil.copytree(ROOT / "exporter", source_only / "exporter",
                        ignore=shutil.ignore_patterns("__pycache__"))
        dead = free_port()  # nothing listens: Elasticsearch, Collector unreachable
        on_env = {
            "ENABLE_ENHANCED_LOGGING": "1", "LOG_DIR": str(base / "logs"), "LOG_CONSOLE": "0",
            "ELASTICSEARCH_URL": f"http://127.0.0.1:{dead}", "ENABLE_ALERT_SYSTEM": "1",
            "ENABLE_BACKUP_SYSTEM": "1", "BACKUP_DIR": str(base / "backups"), "ENABLE_PROFILER": "1",
            "ENABLE_RECOVERY_MANAGER": "1", "STATE_DIR": str(base / "state"), "ENABLE_TRACING": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead}", "METRICS_PORT": str(free_port()),
        }
        baseline = min(measure(BASELINE, {}, work)["rss"] for _ in range(3))
        async_bot = min(measure(BASELINE, {}, work, "async-bot")["rss"] for _ in range(3))
        off = measure(OFF, {"STATE_DIR": str(base / "state-off")}, work)
        no_bytecode = {"STATE_DIR": str(base / "state-src"), "PYTHONPATH": str(source_only),
                       "PYTHONDONTWRITEBYTECODE": "1"}
        off_source = measure(OFF, no_bytecode, work)
        # (c) varies by 2-4 MiB from run to run (how far the exporter's and the shipper's retries
        # got when it is read): the median of RUNS fresh processes, the range printed beside it.
        on_runs = sorted((measure(ON, {**on_env, "STATE_DIR": str(base / f"state-{run}"),
                                       "LOG_DIR": str(base / f"logs-{run}"), "BACKUP_DIR": str(base / f"backups-{run}"),
                                       "METRICS_PORT": str(free_port())}, work) for run in range(RUNS)),
                         key=lambda reading: reading["rss"])
        on = on_runs[len(on_runs) // 2]
        off_async = measure(OFF, {"STATE_DIR": str(base / "state-off-async")}, work, "async-bot")
        on_async = measure(ON, {**on_env, "STATE_DIR": str(base / "state-async"), "LOG_DIR": str(base / "logs-async"),
                                "BACKUP_DIR": str(base / "backups-async"), "METRICS_PORT": str(free_port())},
                           work, "async-bot")
        on_grpc = measure(ON, {**on_env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                               "OTEL_EXPORTER_OTLP_ENDPOINT": f"127.0.0.1:{dead}",
                               "STATE_DIR": str(base / "state-grpc"), "LOG_DIR": str(base / "logs-grpc"),
                               "BACKUP_DIR": str(base / "backups-grpc"), "METRICS_PORT": str(free_port())},
                          work)
    mib = 1024 * 1024
    print(f"(a) baseline Python process        {baseline / mib:7.1f} MiB")
    print(f"(b) everything off  {off['rss'] / mib:7.1f} MiB  gained {(off['rss'] - baseline) / mib:6.1f} MiB"
          f"  goal <= 5 MiB   {'OK' if off['rss'] - baseline <= 5 * mib else 'MISSED'}"
          f"  (imports and disabled calls)")
    print(f"    from source, no bytecode: {off_source['rss'] / mib:7.1f} MiB"
          f"  gained {(off_source['rss'] - baseline) / mib:6.1f} MiB"
          f"  {'OK' if off_source['rss'] - baseline <= 5 * mib else 'MISSED'}")
    print(f"    + runtime.start() with nothing on: {off['started'] / mib:7.1f} MiB"
          f"  gained {(off['started'] - baseline) / mib:6.1f} MiB (nothing on: nothing more is loaded)")
    print(f"(c) everything on   {on['rss'] / mib:7.1f} MiB  gained {(on['rss'] - baseline) / mib:6.1f} MiB"
          f"  goal <= 35 MiB  {'OK' if on['rss'] - baseline <= 35 * mib else 'MISSED'}"
          f"  (median of {RUNS}; enabled: {', '.join(on['enabled'])}; OTLP http/protobuf; shipping)")
    print(f"    the {RUNS} runs gained: "
          + ", ".join(f"{(reading['rss'] - baseline) / mib:.1f}" for reading in on_runs) + " MiB")
    print(f"    read before the threads settled:  {on['before_settled'] / mib:7.1f} MiB"
          f"  gained {(on['before_settled'] - baseline) / mib:6.1f} MiB (how this bench read it before)")
    print(f"    same with OTLP gRPC:            {on_grpc['rss'] / mib:7.1f} MiB"
          f"  gained {(on_grpc['rss'] - baseline) / mib:6.1f} MiB (gRPC loads ~14 MiB more)")
    gained_async = on_async["rss"] - async_bot
    print(f"(d) asyncio bot baseline (asyncio, logging, ssl loaded) {async_bot / mib:.1f} MiB: gains over it "
          f"off {(off_async['rss'] - async_bot) / mib:.1f} MiB, on {gained_async / mib:.1f} MiB"
          f"  goal on <= 28 MiB  {'OK' if gained_async <= 28 * mib else 'MISSED'}")


if __name__ == "__main__":
    main()
