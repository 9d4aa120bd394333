"""Scrape time of one /metrics over many worker processes' files.

    python bench/bench_multiproc.py --live 16 --dead 1000

One real worker process writes a realistic set of prometheus_client multiprocess files (the
project's Metrics plus a profiled operation per task kind); they are copied under the names of
``--live`` running processes (``sleep``) and ``--dead`` finished ones. Then, in one run:

* baseline: ``MultiProcessCollector`` + ``generate_latest`` on a copy of the directory (it reads
  every file at every scrape);
* ours: ``FoldingCollector`` (exporter/exposition/multiproc.py), which folds the dead files once
  and reads the live ones plus one folded file per type; its first scrape (which folds) is
  printed apart, the ratio uses the scrapes after it.

Each figure is the median of ``--scrapes`` scrapes; the samples of both are compared (same
totals). Goal: at most 0.2x the baseline's time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKER = textwrap.dedent("""
    from exporter.metrics import Metrics
    from exporter.profiler import Profiler
    metrics = Metrics()
    profiler = Profiler(metrics=metrics)
    profiler.enable()
    for n in range(200):
        for name in ("download", "upload", "api_call", "celery.bot.finish_download"):
            with profiler.profile_sync(name):
                pass
        metrics.downloads.labels("success").inc()
        metrics.log_records.inc("info", 3)
""")


def dead_pids(count: int) -> list[int]:
    pids, candidate = [], 4_000_000
    while len(pids) < count:
        candidate += 1
        try:
            os.kill(candidate, 0)
        except ProcessLookupError:
            pids.append(candidate)
    return pids


def scrape_times(make_registry, scrapes: int) -> tuple[list[float], bytes]:
    from prometheus_client import generate_latest

    registry = make_registry()
    times, body = [], b""
    for _ in range(scrapes):
        started = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - started)
    return times, body


def totals(body: bytes) -> dict[str, float]:
    found = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#") and "pid=" not in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=16)
    parser.add_argument("--dead", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=7)
    args = parser.parse_args()

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from exporter.exposition.multiproc import FoldingCollector

    work = Path(tempfile.mkdtemp(prefix="opsstack-multiproc-"))
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(args.live)]
    try:
        template = work / "template"
        template.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(template)}
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True,
                       cwd=Path(__file__).resolve().parents[1])
        files = list(template.glob("*.db"))
        ours_dir, base_dir = work / "ours", work / "baseline"
        ours_dir.mkdir()
        for pid in [p.pid for p in sleepers] + dead_pids(args.dead):
            for path in files:
                kind = path.name[:-3].rsplit("_", 1)[0]
                shutil.copyfile(path, ours_dir / f"{kind}_{pid}.db")
        shutil.copytree(ours_dir, base_dir)
        print(f"{len(files)} files per worker, {args.live} live and {args.dead} dead workers: "
              f"{len(list(ours_dir.glob('*.db')))} files")

        def baseline():
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(base_dir))
            return registry

        def ours():
            registry = CollectorRegistry()
            FoldingCollector(str(ours_dir), registry, fold_interval=0.0)
            return registry

        base_times, base_body = scrape_times(baseline, args.scrapes)
        first, _ = scrape_times(ours, 1)
        our_times, our_body = scrape_times(ours, args.scrapes)
        left = len(list(ours_dir.glob("*.db")))
        base, mine = statistics.median(base_times), statistics.median(our_times)
        live_totals = {k: v for k, v in totals(base_body).items() if "bot_busy" not in k}
        same = live_totals == {k: v for k, v in totals(our_body).items() if k in live_totals}
        print(f"baseline MultiProcessCollector  median {base * 1000:8.1f} ms")
        print(f"FoldingCollector, first scrape  {first[0] * 1000:8.1f} ms (folds {args.dead} dead workers' files)")
        print(f"FoldingCollector, after         median {mine * 1000:8.1f} ms ({left} files left)")
        print(f"ratio {mine / base:.3f}x (goal <= 0.2: {'OK' if mine / base <= 0.2 else 'MISSED'}); "
              f"same totals: {same}")
        return 0 if same else 1
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
