"""Listing a large backup set, as every scrape of ``opsstack serve`` does.

    python bench/bench_catalog.py --backups 66 --files 5000

Writes ``--backups`` manifests of ``--files`` entries each (with empty archives beside them),
then times ``read_catalog`` (median of ``--runs``): the first read parses every manifest, the
next ones only stat them (manifests are parsed again only when they change). Baseline: parsing
every manifest, as each scrape did before. Goal: at most 20 ms a scrape on the 66 x 5,000 set.

Then the catalog mirrored in Redis (a ``redis-server`` started through ``tests.harness.redis``,
or ``--redis-url``): the first read of a process that has parsed nothing yet (a new CLI run, a
fresh Celery worker), from the mirror against parsing the manifests. Goal: at most 0.1x.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.backup_manager import catalog  # noqa: E402


def write_set(directory: Path, backups: int, files: int) -> None:
    entries = [{"path": f"data/media/file_{n:05d}.bin", "type": "file", "size": 1000 + n,
                "sha256": f"{n:064x}", "mtime": 1.8e9 + n, "mode": 0o644} for n in range(files)]
    for b in range(backups):
        name = f"backup_{b:03d}"
        (directory / f"{name}.tar.zst").write_bytes(b"")
        manifest = {"format": "opsstack-backup", "format_version": 2, "name": name,
                    "created_at": 1.8e9 + b * 3600, "tier": "hourly", "description": "",
                    "settings": {"compression": "zstd", "encrypted": False},
                    "sources": [{"path": "/srv/bot/data", "arcname": "data", "type": "dir"}],
                    "archive": {"name": f"{name}.tar.zst", "size": 0, "sha256": "0" * 64},
                    "file_count": files, "total_bytes": sum(e["size"] for e in entries), "files": entries}
        (directory / f"{name}.manifest.json").write_text(json.dumps(manifest))


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def bench_mirror(work: Path, args: argparse.Namespace) -> None:
    """A process's first read: parsing every manifest, against the copy mirrored in Redis."""
    from exporter.config import Secret
    from exporter.shared_state.catalog import RedisCatalog

    server, data = None, Path(tempfile.mkdtemp(prefix="opsstack-redis-"))
    if args.redis_url is None:
        from tests.harness import redis as harness

        server = harness.start(data)
    try:
        mirror = RedisCatalog(Secret((args.redis_url or server.url) + "/15"))

        def fresh(read):
            catalog._lean_manifests.clear()  # a process that has parsed nothing yet
            return read()

        catalog.read_catalog(work, mirror)  # the first process mirrors it
        files = median_ms(lambda: fresh(lambda: catalog.read_catalog(work)), args.runs)
        mirrored = median_ms(lambda: fresh(lambda: catalog.read_catalog(work, mirror)), args.runs)
        assert fresh(lambda: catalog.read_catalog(work, mirror)) == fresh(lambda: catalog.read_catalog(work))
        print(f"first read of a process, files    {files:8.1f} ms")
        print(f"first read of a process, Redis    {mirrored:8.1f} ms  ratio {mirrored / files:.3f}x  "
              f"goal <= 0.1x: {'OK' if mirrored <= 0.1 * files else 'MISSED'}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=66)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--redis-url", help="a Redis to use (default: start redis-server)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsstack-catalog-"))
    try:
        write_set(work, args.backups, args.files)
        paths = sorted(work.glob("*.manifest.json"))
        baseline = median_ms(lambda: [catalog.read_manifest(p) for p in paths], args.runs)
        catalog.read_catalog(work)  # the first scrape parses them all
        ours = median_ms(lambda: catalog.read_catalog(work), args.runs)
        print(f"{args.backups} backups of {args.files} files")
        print(f"baseline (parse every manifest)   {baseline:8.1f} ms")
        print(f"read_catalog, unchanged manifests {ours:8.1f} ms  ratio {ours / baseline:.3f}x  "
              f"goal <= 20 ms: {'OK' if ours <= 20 else 'MISSED'}")
        bench_mirror(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
