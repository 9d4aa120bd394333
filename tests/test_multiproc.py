"""One /metrics over many worker processes: real processes write prometheus_client's files,
some exit, some are killed; the folding collector reports the same totals as
MultiProcessCollector, before and after folding, and leaves one file per type for the dead."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from exporter.exposition.multiproc import FoldingCollector, fold_dead

WORKER = textwrap.dedent("""
    import os, sys, time
    from prometheus_client import Counter, Gauge, Histogram
    done = Counter("bot_tasks_total", "Tasks.", ["outcome"])
    busy = Gauge("bot_busy", "Busy.")
    took = Histogram("bot_task_seconds", "Time.", buckets=(0.1, 1.0))
    for n in range(int(sys.argv[1])):
        done.labels("success" if n % 3 else "failure").inc()
        took.observe(0.05 if n % 2 else 0.5)
    busy.set(1)
    print("ready", flush=True)
    if sys.argv[2] == "stay":
        time.sleep(600)
""")


def start_worker(directory, tasks: int, stay: bool) -> subprocess.Popen:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    child = subprocess.Popen([sys.executable, "-c", WORKER, str(tasks), "stay" if stay else "exit"],
                             env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def samples(collector_cls, directory) -> dict:
    registry = CollectorRegistry()
    collector_cls(str(directory), registry=registry) if collector_cls is FoldingCollector \
        else collector_cls(registry, path=str(directory))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() for s in metric.samples
            if not s.name.startswith("bot_busy")}


def test_dead_workers_are_folded_into_the_same_totals(tmp_path):
    directory = tmp_path / "multiproc"
    directory.mkdir()
    live = start_worker(directory, 7, stay=True)
    try:
        for tasks in (10, 20, 30):
            start_worker(directory, tasks, stay=False).wait(30)
        killed = start_worker(directory, 40, stay=True)
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)

        copy = tmp_path / "copy"
        shutil.copytree(directory, copy)
        expected = samples(MultiProcessCollector, copy)
        assert expected[("bot_tasks_total", (("outcome", "success"),))] == 69  # 4+6+13+20+26
        assert len(list(directory.glob("counter_*.db"))) == 5

        assert samples(FoldingCollector, directory) == expected
        names = sorted(p.name for p in directory.glob("*.db"))
        assert names == sorted(["counter_folded.db", "histogram_folded.db", f"counter_{live.pid}.db",
                                f"histogram_{live.pid}.db", f"gauge_all_{live.pid}.db"])
        assert samples(FoldingCollector, directory) == expected  # folded again: nothing moves
        assert fold_dead(str(directory)) == 0

        start_worker(directory, 3, stay=False).wait(30)  # one more comes and goes
        after = samples(FoldingCollector, directory)
        assert after[("bot_tasks_total", (("outcome", "success"),))] == 71
        assert len(list(directory.glob("counter_*.db"))) == 2
    finally:
        live.kill()
        live.wait(30)
