"""One ``/metrics`` over many worker processes (``PROMETHEUS_MULTIPROC_DIR``) that stays fast
however many workers have come and gone.

prometheus_client's ``MultiProcessCollector`` reads every ``*.db`` file of the directory at each
scrape, and a dead worker's counter and histogram files stay there for good: a bot whose Celery
workers restart keeps slowing its own scrapes down. :class:`FoldingCollector` first folds the
files of dead processes into one file per type (``counter_folded.db``, ``histogram_folded.db``,
``summary_folded.db``: their values added up, as the collector would add them) and removes them,
with the gauges of dead processes; then it collects like ``MultiProcessCollector``.

Totals never move backwards or twice: folding holds an exclusive ``flock`` on
``.opsstack-fold.lock`` while it replaces the folded file and removes what it folded, and a scrape
reads the files under a shared one. Live workers never take the lock (they only write their
own files).
"""
from __future__ import annotations

import fcntl
import glob
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any

from ..backup_manager.lock import pid_alive

log = logging.getLogger("exporter.exposition")
FOLDED_TYPES = ("counter", "histogram", "summary")
LOCK_NAME = ".opsstack-fold.lock"


def _pid(path: str) -> int | None:
    """The pid in ``<type>_<pid>.db`` or ``gauge_<mode>_<pid>.db``; None for folded files."""
    digits = os.path.basename(path)[:-3].rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else None


@contextmanager
def _locked(directory: str, mode: int):
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _sum_values(paths: Iterable[str]) -> dict[str, float]:
    from prometheus_client.mmap_dict import MmapedDict

    totals: dict[str, float] = defaultdict(float)
    for path in paths:
        for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(path):
            totals[key] += value
    return totals


def _write(path: str, values: dict[str, float]) -> None:
    """``values`` into a new mmap file at ``path``, in one rename."""
    from prometheus_client.mmap_dict import MmapedDict

    temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    table = MmapedDict(temp)
    try:
        for key, value in values.items():
            table.write_value(key, value, 0.0)
    finally:
        table.close()
    os.replace(temp, path)


def fold_dead(directory: str) -> int:
    """Fold the counter, histogram and summary files of dead processes into the folded files
    and remove them and dead processes' gauge files; the number of files removed."""
    with _locked(directory, fcntl.LOCK_EX):
        dead = {path for path in glob.glob(os.path.join(directory, "*.db"))
                if (pid := _pid(path)) is not None and not pid_alive(pid)}
        for kind in FOLDED_TYPES:
            mine = sorted(p for p in dead if os.path.basename(p).startswith(f"{kind}_"))
            if not mine:
                continue
            folded = os.path.join(directory, f"{kind}_folded.db")
            sources = ([folded] if os.path.exists(folded) else []) + mine
            _write(folded, _sum_values(sources))
        for path in dead:
            os.unlink(path)
    if dead:
        log.info("folded the metrics files of %d dead process file(s) in %s", len(dead), directory)
    return len(dead)


class FoldingCollector:
    """Collects every process's metrics from ``directory`` like ``MultiProcessCollector``,
    folding dead processes' files first (at most every ``fold_interval`` seconds)."""

    def __init__(self, directory: str, registry: Any = None, fold_interval: float = 10.0) -> None:
        if not os.path.isdir(directory):
            raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not a directory")
        self.directory = directory
        self.fold_interval = fold_interval
        self._folded_at = 0.0
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        now = time.monotonic()
        if now - self._folded_at >= self.fold_interval:
            self._folded_at = now
            fold_dead(self.directory)
        with _locked(self.directory, fcntl.LOCK_SH):
            files = glob.glob(os.path.join(self.directory, "*.db"))
            metrics = MultiProcessCollector.merge(files, accumulate=True)
        return metrics
