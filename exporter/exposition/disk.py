"""Metrics read from disk at scrape time, for ``opsstack serve`` (bots that cannot serve HTTP).

Sources are plain functions ``settings -> iterable of metric families``; :class:`DiskCollector`
runs each at every scrape (a failing source is logged and counted, the others still render).
The built-in ones read the backup catalog (``exporter.backup_manager.read_catalog``), the
integrity state file (``exporter.recovery_manager.read_integrity_state``) and the log spool
directory (``STATE_DIR/spool``). Names are the ones the bot itself exports, so dashboards and
alert rules work on either endpoint.
"""
from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from .. import __version__
from ..metrics import BACKUP_TIERS, OUTCOMES

log = logging.getLogger("exporter.exposition")

Source = Callable[[Any], Iterable[Any]]
SPOOL_DIR_NAME = "spool"


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def backup_families(settings: Any) -> Iterable[Any]:
    from ..backup_manager import read_catalog
    from ..backup_manager.scheduler import backup_interval

    catalog = read_catalog(settings.backups.dir)
    last = catalog[-1] if catalog else None
    yield _gauge("bot_backup_last_success_timestamp_seconds", "Time the last backup succeeded (0: never).",
                 float(last["created_at"]) if last else 0.0)
    yield _gauge("bot_backup_last_size_bytes", "Archive size of the last backup.",
                 float(last["size"]) if last else 0.0)
    yield _gauge("bot_backup_last_files", "Files in the last backup.", float(last["files"]) if last else 0.0)
    verified = [entry for entry in catalog if entry.get("verified") is not None]
    if verified:
        latest = max(verified, key=lambda entry: entry.get("verified_at") or 0)
        yield _gauge("bot_backup_last_verify_ok", "1 when the last verification passed, 0 when it failed.",
                     1.0 if latest["verified"] else 0.0)
    drilled = [entry for entry in catalog if entry["drilled"] is not None]  # the catalog has them
    drill = max(drilled, key=lambda entry: entry["drilled_at"]) if drilled else None
    yield _gauge("bot_backup_last_drill_timestamp_seconds", "Time the last restore drill finished (0: never).",
                 float(drill["drilled_at"]) if drill else 0.0)
    yield _gauge("bot_backup_last_drill_success",
                 "1 when the last restore drill passed, 0 when it failed or none ran.",
                 1.0 if drill and drill["drilled"] else 0.0)
    yield _gauge("bot_backup_interval_seconds",
                 "Seconds between scheduled backups (BACKUP_FREQUENCY; 0: none scheduled).",
                 backup_interval(settings))
    yield _gauge("bot_backup_drill_interval_seconds", "Seconds between scheduled restore drills (0: none).",
                 float(settings.backups.drill_interval))
    retained = GaugeMetricFamily("bot_backups_retained", "Backups kept, by retention tier.", labels=["tier"])
    for tier in BACKUP_TIERS:
        retained.add_metric([tier], float(sum(1 for entry in catalog if entry["tier"] == tier)))
    yield retained


def integrity_families(settings: Any) -> Iterable[Any]:
    from ..recovery_manager import read_integrity_state

    state = read_integrity_state(settings.general.state_dir)
    if not state:
        return
    yield _gauge("bot_integrity_last_check_timestamp_seconds", "Time of the last integrity check.",
                 float(state.get("last_check") or 0))
    yield _gauge("bot_integrity_last_check_ok", "1 when the last integrity check passed.",
                 1.0 if state.get("last_ok") else 0.0)
    for name, key, doc in (("bot_integrity_checks", "checks", "Integrity checks, by outcome."),
                           ("bot_integrity_repairs", "repairs", "Repairs, by outcome.")):
        family = CounterMetricFamily(name, doc, labels=["outcome"])
        counts = state.get(key) or {}
        for outcome in OUTCOMES:
            family.add_metric([outcome], float(counts.get(outcome, 0)))
        yield family


def spool_families(settings: Any) -> Iterable[Any]:
    spool = Path(settings.shipping.state_dir) / SPOOL_DIR_NAME
    size, oldest = 0, 0.0
    for root, _dirs, files in os.walk(spool):
        for file_name in files:
            try:
                info = os.stat(os.path.join(root, file_name))
            except OSError:
                continue  # shipped and removed meanwhile
            size += info.st_size
            oldest = info.st_mtime if oldest == 0.0 else min(oldest, info.st_mtime)
    yield _gauge("bot_log_spool_bytes", "Bytes in the on-disk log spool.", float(size))
    yield _gauge("bot_log_spool_oldest_timestamp_seconds",
                 "Time of the oldest spooled record (0 when empty).", oldest)


BUILTIN_SOURCES: tuple[Source, ...] = (backup_families, integrity_families, spool_families)


class DiskCollector(Collector):
    """Runs every source at scrape time; add more with :meth:`add_source`."""

    def __init__(self, settings: Any, sources: Iterable[Source] = BUILTIN_SOURCES) -> None:
        self.settings = settings
        self.sources: list[Source] = list(sources)
        self.failures: dict[str, int] = {}

    def add_source(self, source: Source) -> None:
        self.sources.append(source)

    def collect(self) -> Iterable[Any]:
        info = InfoMetricFamily("bot_build", "Version of opsstack and Python serving these metrics.")
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        for source in self.sources:
            name = getattr(source, "__name__", repr(source))
            try:
                families = list(source(self.settings))
            except Exception:  # one unreadable file must not blank the whole scrape
                log.exception("metrics source %s failed", name)
                self.failures[name] = self.failures.get(name, 0) + 1
                continue
            yield from families
        errors = CounterMetricFamily("bot_exporter_source_errors", "Disk metric sources that failed.",
                                     labels=["source"])
        for name, count in sorted(self.failures.items()):
            errors.add_metric([name], float(count))
        yield errors
