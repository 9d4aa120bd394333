"""Disk and memory checks: gauges every interval, DISK_FULL / MEMORY_HIGH while over threshold."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ..config import Settings
from ..metrics import Metrics
from .model import AlertSeverity, AlertType

log = logging.getLogger("exporter.alert_manager")


class PsutilProbe:
    """Reads the machine through psutil (imported here, when monitoring starts)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()

    def disk_free_ratio(self, path: Path) -> float:
        usage = self._psutil.disk_usage(str(path))
        return usage.free / usage.total if usage.total else 1.0

    def memory_used_ratio(self) -> float:
        return self._psutil.virtual_memory().percent / 100.0

    def process_rss(self) -> int:
        return self._process.memory_info().rss


def watched_paths(settings: Settings) -> list[Path]:
    """The directories opsstack writes to (state, logs, backups), nearest existing parent."""
    seen: dict[str, Path] = {}
    for path in (settings.general.state_dir, settings.logging.dir, settings.backups.dir):
        path = Path(path).absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        seen.setdefault(str(path), path)
    return list(seen.values())


class ResourceMonitor:
    def __init__(self, manager: Any, settings: Settings, metrics: Metrics, probe: Any = None) -> None:
        self.manager = manager
        self.settings = settings.alerts
        self.paths = watched_paths(settings)
        self.metrics = metrics
        self.probe = probe
        self.open: dict[str, str] = {}  # condition -> alert id

    def _raise_or_resolve(self, key: str, bad: bool, kind: AlertType, severity: AlertSeverity,
                          title: str, message: str, details: dict) -> None:
        if bad and key not in self.open:
            alert = self.manager.trigger_alert_sync(kind, severity, title, message, task_id=key,
                                                    details=details)
            if alert is not None:
                self.open[key] = alert.id
        elif not bad and key in self.open:
            self.manager.resolve_alert(self.open.pop(key))

    def check(self) -> None:
        if self.probe is None:
            self.probe = PsutilProbe()
        limits = self.settings
        for path in self.paths:
            free = self.probe.disk_free_ratio(path)
            self.metrics.disk_free_ratio.labels(str(path)).set(free)
            self._raise_or_resolve(
                f"disk:{path}", free * 100 < limits.disk_free_min_percent, AlertType.DISK_FULL,
                AlertSeverity.CRITICAL, "Disk almost full",
                f"{path} has {free:.1%} free, below DISK_FREE_MIN_PERCENT={limits.disk_free_min_percent:g}%",
                {"path": str(path), "free_ratio": round(free, 4)})
        used = self.probe.memory_used_ratio()
        rss = self.probe.process_rss()
        self.metrics.memory_used_ratio.set(used)
        self.metrics.process_memory.set(rss)
        self._raise_or_resolve(
            "memory:system", used * 100 > limits.memory_max_percent, AlertType.MEMORY_HIGH,
            AlertSeverity.HIGH, "System memory high",
            f"system memory is {used:.1%} used, above MEMORY_MAX_PERCENT={limits.memory_max_percent:g}%",
            {"used_ratio": round(used, 4)})
        self._raise_or_resolve(
            "memory:process", rss > limits.process_memory_max, AlertType.MEMORY_HIGH, AlertSeverity.HIGH,
            "Bot process memory high",
            f"the bot uses {rss / 2**20:.0f} MiB, above PROCESS_MEMORY_MAX={limits.process_memory_max / 2**20:.0f} MiB",
            {"rss_bytes": rss})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self.check)
            except Exception as exc:  # a probe failure is reported, the monitor keeps going
                log.warning("resource check failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.settings.resource_check_interval)
