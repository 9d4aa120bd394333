"""The recovery manager: integrity checks against a baseline, repair from verified backups,
auto-recovery of critical paths, history and periodic checks. Disabled, the history and status
are empty and the calls that need a result raise :class:`NotEnabledError`."""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .. import tracing
from .._files import make_dirs
from .._manager_base import ManagerBase
from ..config import Settings
from ..errors import BackupLockedError, BackupUnreadableError, NotEnabledError, RecoveryError
from ..metrics import Metrics, worker_failed
from ..ports import NO_ALERTS, NO_EVENTS, Alerter, BackupArchives, EventLog
from . import baseline as bl
from .state import BASELINE_FILE, STATE_FILE, read_baselines, read_integrity_state, write_json

log = logging.getLogger("exporter.recovery_manager")
DAMAGE = ("missing", "wrong_type", "changed_size", "changed_hash", "changed_mtime")
HISTORY_KEPT = 50


class RecoveryManager(ManagerBase):
    """Checks and repairs; reads the backups through ``backups``, writes its events to ``events``
    and raises alerts with ``alerts``."""

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
                 backups: BackupArchives, events: EventLog = NO_EVENTS, alerts: Alerter = NO_ALERTS) -> None:
        super().__init__(settings, metrics)
        self._backups = backups
        self._events = events
        self._alerts = alerts
        self._history: collections.deque = collections.deque(maxlen=1000)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key: bytes | None = None

    # ------------------------------------------------------------------ lifecycle
    def enable(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
               periodic: bool | None = None) -> None:
        """Turn on; ``periodic`` (default: when ``RECOVERY_CRITICAL_PATHS`` is set) starts a
        thread checking them every ``INTEGRITY_CHECK_INTERVAL`` seconds."""
        if self.enabled:
            return
        settings = self._resolve_settings(settings)
        if settings.backups.encryption_key is not None:
            self._key = self._backups.parse_key(settings.backups.encryption_key.get())
        self.settings = settings
        self.metrics = self._resolve_metrics(metrics)
        self.state_dir = Path(os.path.abspath(settings.general.state_dir))
        try:
            make_dirs(self.state_dir)
        except OSError as exc:  # a file, a read-only place: say which setting, not a traceback
            raise RecoveryError(f"cannot keep integrity state in {self.state_dir} (STATE_DIR): "
                                f"{exc.strerror}") from exc
        self._state = read_integrity_state(self.state_dir) or {
            "checks": {"success": 0, "failure": 0}, "repairs": {"success": 0, "failure": 0},
            "history": []}
        self._history.extend(self._state.get("history", []))
        self.enabled = True
        if periodic is None:
            periodic = bool(settings.recovery.critical_paths)
        if periodic:
            self._stop.clear()
            self._thread = threading.Thread(target=self._periodic, name="opsstack-integrity",
                                            daemon=True)
            self._thread.start()

    def disable(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.enabled = False

    def _require(self) -> None:
        if not self.enabled:
            raise NotEnabledError("the recovery manager is not enabled (ENABLE_RECOVERY_MANAGER)")

    def _periodic(self) -> None:
        interval = self.settings.recovery.check_interval
        waiting: set[str] = set()
        while not self._stop.wait(interval):
            try:
                paths = self._with_baseline(self.settings.recovery.critical_paths, waiting)
                if paths:
                    self.auto_recover_sync(paths)
            except Exception:  # thread boundary: report, keep checking
                worker_failed(self.metrics, "integrity_check", log, "periodic integrity check")

    def _with_baseline(self, paths: tuple[str, ...], waiting: set[str]) -> list[str]:
        """The paths the periodic check can judge. One with no baseline yet (a new bot before
        its first backup) is not damaged: it is said once in the log, not alerted as a failed
        check and a failed repair each interval."""
        ready = []
        for path in paths:
            try:
                self._baseline(Path(os.path.abspath(path)), None)
            except RecoveryError:
                if path not in waiting:
                    waiting.add(path)
                    log.info("integrity of %s not checked yet: no baseline (no backup holds it, none recorded)",
                             path)
                continue
            waiting.discard(path)
            ready.append(path)
        return ready

    # ------------------------------------------------------------------ baselines
    def record_baseline(self, paths: list[str]) -> dict[str, int]:
        """Record the current state (with hashes) of ``paths`` as their baseline."""
        self._require()
        with self._lock:
            baselines = read_baselines(self.state_dir)
            counts = {}
            for raw in paths:
                path = Path(os.path.abspath(raw))
                entries = bl.scan(path, with_hash=True)
                if not entries:
                    raise RecoveryError(f"cannot record a baseline of {path}: it does not exist")
                baselines[str(path)] = {"recorded_at": time.time(), "entries": entries}
                counts[str(path)] = len(entries)
            write_json(self.state_dir / BASELINE_FILE, baselines)
        return counts

    def _baseline(self, path: Path, backup_dir: Path | None) -> tuple[str, dict, dict | None]:
        """``(source description, entries, (catalog entry, manifest) or None)``."""
        recorded = read_baselines(self.state_dir).get(str(path))
        if recorded is not None:
            return "recorded", recorded["entries"], None
        backup_dir = backup_dir or Path(os.path.abspath(self.settings.backups.dir))
        for backup, manifest in bl.backups_covering(backup_dir, path, self._key):
            _, entries = bl.from_manifest(manifest, path)
            return f"backup:{backup['name']}", entries, (backup, manifest)
        raise RecoveryError(f"no baseline for {path}: record one or make a backup that holds it")

    # ------------------------------------------------------------------ checks
    def verify_integrity_sync(self, path: str, check_hash: bool = True, check_structure: bool = True,
                              *, backup_dir: str | None = None) -> tuple[bool, dict[str, Any]]:
        """``(is_valid, details)`` of ``path`` against its baseline; ``check_hash=False`` is the
        fast mode (size and mtime)."""
        self._require()
        target = Path(os.path.abspath(path))
        with tracing.span("integrity.check", path=str(target), full=check_hash):
            details: dict[str, Any] = {"path": str(target), "mode": "full" if check_hash else "fast",
                                       "checked_at": time.time(), "errors": []}
            try:
                source, entries, _ = self._baseline(
                    target, Path(os.path.abspath(backup_dir)) if backup_dir else None)
                current = bl.scan(target, with_hash=check_hash)
                found = bl.compare(entries, current, check_hash=check_hash,
                                   check_structure=check_structure)
                details.update(found, baseline=source, checked_files=len(current))
                for kind, rels in found.items():
                    details["errors"] += [f"{kind.replace('_', ' ')}: {rel or '.'}" for rel in rels]
            except (RecoveryError, OSError) as exc:
                details["errors"].append(str(exc))
            valid = not details["errors"]
        self._record_check(valid, details)
        return valid, details

    async def verify_integrity(self, path: str, check_hash: bool = True, check_structure: bool = True,
                               **kwargs: Any) -> tuple[bool, dict[str, Any]]:
        self._require()
        import asyncio

        return await asyncio.to_thread(self.verify_integrity_sync, path, check_hash, check_structure,
                                       **kwargs)

    def _record_check(self, valid: bool, details: dict[str, Any]) -> None:
        outcome = "success" if valid else "failure"
        m = self.metrics
        m.integrity_checks.labels(outcome).inc()
        m.integrity_last_check.set(details["checked_at"])
        m.integrity_last_ok.set(1 if valid else 0)
        summary = {"time": details["checked_at"], "action": "check", "path": details["path"],
                   "valid": valid, "baseline": details.get("baseline"),
                   "errors": details["errors"][:10]}
        with self._lock:
            self._state["checks"][outcome] = self._state["checks"].get(outcome, 0) + 1
            self._state["last_check"] = details["checked_at"]
            self._state["last_ok"] = valid
            self._state["last_report"] = summary
            self._append(summary)
        if valid:
            self._events.log_event("integrity", "success", f"integrity of {details['path']} ok",
                                   event_action="integrity-check", file_path=details["path"])
            self._alerts.resolve_alerts_sync("integrity_failed", path=details["path"])
        else:
            self._events.log_event("integrity", "failure",
                                   f"integrity of {details['path']} failed: {len(details['errors'])} "
                                   "problem(s)", level=logging.WARNING, event_action="integrity-check",
                                   file_path=details["path"])
            self._alerts.trigger_alert_sync(
                "integrity_failed", "high", "Integrity check failed",
                f"{details['path']}: {'; '.join(details['errors'][:5])}",
                details={"path": details["path"], "problems": len(details["errors"])})

    def _append(self, entry: dict[str, Any]) -> None:
        """Add to the history and save the state file (self._lock held)."""
        self._history.append(entry)
        self._state["history"] = list(self._history)[-HISTORY_KEPT:]
        try:
            write_json(self.state_dir / STATE_FILE, self._state)
        except OSError as exc:
            log.error("cannot write %s: %s", self.state_dir / STATE_FILE, exc)

    # ------------------------------------------------------------------ repair
    def _sources(self, backup_source: str | None, path: Path) -> list[tuple[Path, dict, dict]]:
        """``(backup dir, catalog entry, manifest)`` candidates, best first."""
        if backup_source:
            source = Path(os.path.abspath(backup_source))
            if source.is_dir():
                return [(source, b, m) for b, m in bl.backups_covering(source, path, self._key)]
            backup_dir = Path(os.path.abspath(self.settings.backups.dir))
            manifest = self._backups.read_manifest(backup_dir, backup_source, self._key)
            if manifest is None:
                raise RecoveryError(f"no backup or backup directory {backup_source!r}")
            if bl.covering_source(manifest, path) is None:
                raise RecoveryError(f"backup {backup_source!r} does not hold {path}")
            return [(backup_dir, {"name": backup_source}, manifest)]
        backup_dir = Path(os.path.abspath(self.settings.backups.dir))
        return [(backup_dir, b, m) for b, m in bl.backups_covering(backup_dir, path, self._key)]

    def _repair(self, target: Path, damaged: dict[str, dict[str, Any]],
                candidates: list[tuple[Path, dict, dict]]) -> dict[str, Any]:
        result = {"restored": [], "quarantined": [], "failed": dict.fromkeys(damaged, "no backup"),
                  "backup": None, "quarantine_dir": None}
        from .repair import new_quarantine_dir, restore_members

        quarantine_dir = new_quarantine_dir(self.state_dir)
        for backup_dir, backup, manifest in candidates:
            if not result["failed"]:
                break
            try:
                report = self._backups.check_archive(backup_dir, manifest, self._key)
            except BackupUnreadableError as exc:  # no key, wrong key: try the next backup
                log.warning("not repairing from backup %s: %s", backup["name"], exc)
                continue
            if not report["ok"]:
                log.warning("not repairing from backup %s: %s", backup["name"], report["errors"][0])
                continue
            prefix, entries = bl.from_manifest(manifest, target)
            wanted = {rel: damaged[rel] for rel in result["failed"]
                      if rel in entries and entries[rel]["type"] == damaged[rel]["type"]
                      and entries[rel].get("sha256") == damaged[rel].get("sha256")}
            if not wanted:
                continue
            done = restore_members(backup_dir, manifest, self._key, prefix, target, wanted,
                                   quarantine_dir)
            for rel in done["restored"]:
                result["failed"].pop(rel, None)
            result["restored"] += done["restored"]
            result["quarantined"] += done["quarantined"]
            result["backup"] = result["backup"] or backup["name"]
        if result["quarantined"]:
            result["quarantine_dir"] = str(quarantine_dir)
        return result

    def _repair_path(self, path: str, backup_source: str | None) -> dict[str, Any]:
        self._require()
        target = Path(os.path.abspath(path))
        with tracing.span("integrity.repair", path=str(target)):
            try:
                with self._backups.lock(self.state_dir / "recovery.lock", "recovery state directory"):
                    candidates = self._sources(backup_source, target)
                    recorded = read_baselines(self.state_dir).get(str(target))
                    if recorded is not None:
                        entries = recorded["entries"]
                    elif candidates:
                        entries = bl.from_manifest(candidates[0][2], target)[1]
                    else:
                        raise RecoveryError(f"no backup holds {target}")
                    current = bl.scan(target, with_hash=True)
                    found = bl.compare(entries, current, check_hash=True, check_structure=True)
                    damaged = {rel: entries[rel] for kind in DAMAGE for rel in found[kind]}
                    result = self._repair(target, damaged, candidates) if damaged else \
                        {"restored": [], "quarantined": [], "failed": {}, "backup": None,
                         "quarantine_dir": None}
            except BackupLockedError as exc:
                raise RecoveryError(str(exc)) from exc
            except (OSError, RecoveryError) as exc:
                result = {"restored": [], "quarantined": [], "failed": {"": str(exc)}, "backup": None,
                          "quarantine_dir": None}
        result["path"] = str(target)
        result["ok"] = not result["failed"]
        self._record_repair(result)
        return result

    def _record_repair(self, result: dict[str, Any]) -> None:
        if not result["restored"] and result["ok"]:
            return  # nothing was damaged: not a repair
        outcome = "success" if result["ok"] else "failure"
        self.metrics.integrity_repairs.labels(outcome).inc()
        with self._lock:
            self._state["repairs"][outcome] = self._state["repairs"].get(outcome, 0) + 1
            self._append({"time": time.time(), "action": "repair", "path": result["path"],
                          "valid": result["ok"], "baseline": result["backup"],
                          "errors": [f"{rel or '.'}: {why}" for rel, why in result["failed"].items()][:10],
                          "restored": result["restored"][:50]})
        if result["ok"]:
            self._events.log_event("integrity", "success",
                                   f"repaired {len(result['restored'])} file(s) under {result['path']} "
                                   f"from backup {result['backup']}", event_action="integrity-repair",
                                   file_path=result["path"])
            self._alerts.resolve_alerts_sync("integrity_failed", path=result["path"])
        else:
            self._events.log_event("integrity", "failure", f"repair of {result['path']} failed",
                                   level=logging.ERROR, event_action="integrity-repair",
                                   file_path=result["path"])
            self._alerts.trigger_alert_sync(
                "integrity_failed", "critical", "Repair failed",
                f"{result['path']}: {len(result['failed'])} path(s) could not be repaired",
                details={"path": result["path"]})

    async def repair_corrupted_data(self, path: str, backup_source: str | None = None) -> bool:
        """Restore the damaged files of ``path`` from ``backup_source`` (a backup name or a
        backup directory; default BACKUP_DIR). True when everything damaged was repaired."""
        self._require()
        import asyncio

        result = await asyncio.to_thread(self._repair_path, path, backup_source)
        return result["ok"]

    def repair_corrupted_data_sync(self, path: str, backup_source: str | None = None) -> dict[str, Any]:
        return self._repair_path(path, backup_source)

    # ------------------------------------------------------------------ auto-recover
    def auto_recover_sync(self, critical_paths: list[str],
                          backup_dir: str | None = None) -> dict[str, Any]:
        """Check each path; with ``ENABLE_AUTO_RECOVERY`` repair the damaged ones from the
        newest backup that verifies. Returns ``valid_paths, repaired_paths, failed_paths,
        details``."""
        self._require()
        report: dict[str, Any] = {"valid_paths": [], "repaired_paths": [], "failed_paths": [],
                                  "details": {}, "auto_recovery": self.settings.recovery.auto_recovery}
        with tracing.span("integrity.auto_recover", paths=len(critical_paths)):
            for path in critical_paths:
                valid, details = self.verify_integrity_sync(path, backup_dir=backup_dir)
                key = details["path"]
                report["details"][key] = {"check": details}
                if valid:
                    report["valid_paths"].append(key)
                elif not self.settings.recovery.auto_recovery:
                    report["failed_paths"].append(key)
                    report["details"][key]["repair"] = "not attempted: ENABLE_AUTO_RECOVERY is off"
                else:
                    result = self._repair_path(path, backup_dir)
                    report["details"][key]["repair"] = result
                    (report["repaired_paths"] if result["ok"] else report["failed_paths"]).append(key)
        return report

    async def auto_recover(self, critical_paths: list[str], backup_dir: str | None = None) -> dict[str, Any]:
        self._require()
        import asyncio

        return await asyncio.to_thread(self.auto_recover_sync, critical_paths, backup_dir)

    # ------------------------------------------------------------------ history
    def get_integrity_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` checks and repairs, newest first (empty while disabled)."""
        if not self.enabled:
            return []
        with self._lock:
            return list(reversed(self._history))[:limit]

    def get_recovery_status(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        with self._lock:
            state = dict(self._state)
        state.pop("history", None)
        return {"enabled": True, "auto_recovery": self.settings.recovery.auto_recovery,
                "critical_paths": list(self.settings.recovery.critical_paths),
                "check_interval": self.settings.recovery.check_interval,
                "periodic_checks": self._thread is not None, "state_dir": str(self.state_dir), **state}
