"""The backup manager: create, list, verify, restore and clean up backups, with metrics, ECS
log events, spans and alerts for each. Disabled, ``list_backups``/``get_backup_stats`` return
empty results and ``cleanup_old_backups`` returns 0; calls that need a result
(create, verify, restore) raise :class:`NotEnabledError`."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import tracing
from .._files import make_dirs
from .._manager_base import ManagerBase
from ..config import Settings
from ..errors import (BackupError, BackupLockedError, BackupNotFoundError, BackupUnreadableError,
                      DecryptionError, LockHeldError, NotEnabledError, OpsError)
from ..metrics import Metrics
from ..ports import (LOCAL_ONLY, NO_ALERTS, NO_EVENTS, NO_MIRROR, Alerter, CatalogMirror, EventLog,
                     SharedHold, SharedLocks)
from .catalog import (LOCK_FILE, NAME_PATTERN, VERIFY_STATE_FILE, last_drill, manifest_path,
                      open_manifest, read_catalog, read_manifest, read_verify_state, set_name)
from .drill import Drills
from .housekeeping import Housekeeping
from .leftovers import clean_leftovers
from .lock import DirectoryLock
from .scheduler import PERIODS, Job, Scheduler, backup_interval

if TYPE_CHECKING:  # tarfile, sqlite3 and the archive code (~6 MiB) load on first use
    from .writer import Progress

log = logging.getLogger("exporter.backup_manager")
CELERY_TASK = "exporter.backup_manager.scheduled_backup"
TIMESTAMP_SAFE = str.maketrans(":+", "--")  # f"backup_{datetime.now().isoformat()}" is a fine name


class BackupManager(Drills, Housekeeping, ManagerBase):
    """Backups in ``BACKUP_DIR``; writes its events to ``events`` and raises alerts with ``alerts``."""

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
                 events: EventLog = NO_EVENTS, alerts: Alerter = NO_ALERTS,
                 shared_locks: Callable[[Settings], SharedLocks] = lambda settings: LOCAL_ONLY,
                 catalog_mirror: Callable[[Settings], CatalogMirror] = lambda settings: NO_MIRROR) -> None:
        super().__init__(settings, metrics)
        self._events = events
        self._alerts = alerts
        self._shared_locks = shared_locks  # settings -> the locks shared across hosts (Redis)
        self._locks: SharedLocks = LOCAL_ONLY
        self._catalog_mirror = catalog_mirror  # settings -> the catalog's copy for every host (Redis)
        self._mirror: CatalogMirror = NO_MIRROR
        self.backup_dir: Path | None = None
        self._key: bytes | None = None
        self._scheduler: Scheduler | None = None
        self._state_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def enable(self, settings: Settings | None = None, metrics: Metrics | None = None, *,
               schedule: bool | None = None) -> None:
        """Turn on. ``schedule`` (default: when ``CRITICAL_BACKUP_PATHS`` is set and
        ``BACKUP_SCHEDULER`` is ``in-process``) starts the in-process scheduler of
        ``BACKUP_FREQUENCY`` backups and ``BACKUP_DRILL_INTERVAL`` drills."""
        if self.enabled:
            return
        settings = self._resolve_settings(settings)
        key = None
        if settings.backups.encryption_key is not None:
            from .crypto import parse_key

            key = parse_key(settings.backups.encryption_key.get())
        self.settings, self._key = settings, key
        self.metrics = self._resolve_metrics(metrics)
        self.backup_dir = Path(os.path.abspath(settings.backups.dir))
        try:
            make_dirs(self.backup_dir)
        except OSError as exc:
            raise BackupError(f"cannot create BACKUP_DIR {self.backup_dir}: {exc.strerror}") from exc
        self._locks = self._shared_locks(settings)
        self._mirror = self._catalog_mirror(settings)
        self.enabled = True
        try:
            with DirectoryLock(self.backup_dir / LOCK_FILE):
                clean_leftovers(self.backup_dir)
        except BackupError:
            pass  # another process is busy in the directory; it cleans up after itself
        except OSError as exc:  # a full disk: listing and the bot's start go on; backups will say it
            log.warning("could not clean up leftovers in %s: %s", self.backup_dir, exc.strerror or exc)
        self._update_retained(self._catalog())
        self._show_drill(last_drill(self.backup_dir))
        self.metrics.backup_interval.set(backup_interval(settings))
        if schedule is None:  # Celery beat, when it owns the schedule, runs the backups instead
            schedule = bool(settings.backups.critical_paths) and settings.backups.scheduler == "in-process"
        if schedule:
            jobs = [Job("backup", PERIODS[settings.backups.frequency], self._last_scheduled,
                        self.run_scheduled_backup)]
            if settings.backups.drill_interval:
                jobs.append(Job("drill", settings.backups.drill_interval, self._last_drill_time,
                                self.run_scheduled_drill))
            self._scheduler = Scheduler(jobs, self.metrics)
            self._scheduler.start()

    def disable(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        self.enabled = False

    def _require(self) -> None:
        if not self.enabled:
            raise NotEnabledError("the backup manager is not enabled (ENABLE_BACKUP_SYSTEM)")

    # ------------------------------------------------------------------ helpers
    def _manifest(self, name: str) -> dict[str, Any]:
        if not NAME_PATTERN.match(name or ""):
            raise BackupNotFoundError(f"no backup named {name!r} in {self.backup_dir}")
        manifest = read_manifest(manifest_path(self.backup_dir, name))
        if manifest is None or not (self.backup_dir / manifest["archive"]["name"]).is_file():
            raise BackupNotFoundError(f"no backup named {name!r} in {self.backup_dir}")
        return open_manifest(manifest, self._key)

    def _catalog(self) -> list[dict[str, Any]]:
        """The backups, oldest first (from the mirror every process shares while it is current)."""
        return read_catalog(self.backup_dir, None if self._mirror is NO_MIRROR else self._mirror)

    def _catalog_changed(self) -> None:
        """After a backup was made, deleted, verified or drilled: the mirror is stale."""
        if self._mirror is not NO_MIRROR:
            self._mirror.changed(set_name(self.backup_dir))

    @contextlib.contextmanager
    def _hold_set(self) -> Iterator[SharedHold]:
        """The lock of this backup set shared by every process and host (``REDIS_URL``); the
        set is named by the real path of ``BACKUP_DIR``, so hosts sharing one mount it alike."""
        try:
            with self._locks.hold(set_name(self.backup_dir)) as shared:
                yield shared
        except LockHeldError as exc:
            if isinstance(exc, BackupLockedError):
                raise
            raise BackupLockedError(f"backup set {self.backup_dir} is busy on another process or "
                                    f"host: {exc}") from exc

    def _new_name(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name, n = f"backup_{stamp}", 2
        while manifest_path(self.backup_dir, name).exists():
            name, n = f"backup_{stamp}_{n}", n + 1
        return name

    def _fail(self, action: str, name: str, exc: BaseException) -> None:
        self._events.log_event("backup", "failure", f"backup {action} of {name} failed: {exc}",
                               level=logging.ERROR, event_action=f"backup-{action}",
                               backup_name=name, error_message=str(exc))
        self._alerts.trigger_alert_sync(
            "backup_failed", "high", f"Backup {action} failed",
            f"Backup {action} of {name!r} failed: {exc}", details={"backup_name": name,
                                                                    "action": action})

    def _succeeded(self, action: str, name: str, message: str, **fields) -> None:
        """Log the success of ``action`` on backup ``name``, and resolve the alerts of that
        action's earlier failures: the condition they reported has cleared."""
        self._events.log_event("backup", "success", message, event_action=f"backup-{action}",
                               backup_name=name, **fields)
        self._alerts.resolve_alerts_sync("backup_failed", action=action)

    def _record(self, state_file: str, read_state, name: str, ok: bool) -> None:
        """Note the outcome for ``name`` in ``state_file``; backups that are gone leave it."""
        from .writer import write_json_atomic

        with self._state_lock:
            state = read_state(self.backup_dir)
            state[name] = {"ok": ok, "at": time.time()}
            known = {b["name"] for b in read_catalog(self.backup_dir)} | {name}
            write_json_atomic(self.backup_dir / state_file,
                              {k: v for k, v in state.items() if k in known})
            self._catalog_changed()

    def _last_scheduled(self) -> float | None:
        times = [b["created_at"] for b in self._catalog() if b["tier"] in PERIODS]
        return max(times) if times else None

    # ------------------------------------------------------------------ create
    def create_backup_sync(self, source_paths: list[str], backup_name: str | None = None,
                           description: str = "", *, tier: str = "manual",
                           progress: Progress | None = None,
                           cancel: threading.Event | None = None) -> dict[str, Any]:
        """Create a backup of ``source_paths``; return its metadata (``backup_name``, ``size``,
        ``files``, ``sha256``, ``skipped``: sockets, FIFOs and devices left out, ...). A name
        made from an ISO timestamp is accepted: its ``:`` and ``+`` become ``-``. Raises
        BackupError (BackupLockedError when busy)."""
        self._require()
        started = time.time()
        self.metrics.backup_last_attempt.set(started)
        name = backup_name.translate(TIMESTAMP_SAFE) if backup_name else self._new_name()
        with tracing.span("backup.create", backup_name=name, tier=tier) as span:
            try:
                manifest = self._write(name, source_paths, description, tier, progress, cancel)
            except Exception as exc:
                self.metrics.backups.labels("failure").inc()
                self._fail("create", name, exc)
                if isinstance(exc, OpsError):
                    raise
                raise BackupError(f"backup {name!r} failed: {exc}") from exc
            except BaseException:
                self.metrics.backups.labels("failure").inc()
                raise
            duration = time.time() - started
            if span is not None:
                span.set_attribute("backup.size_bytes", manifest["archive"]["size"])
        return self._created(manifest, duration)

    def _write(self, name: str, source_paths: list[str], description: str, tier: str,
               progress: Progress | None, cancel: threading.Event | None) -> dict[str, Any]:
        """Write backup ``name`` holding the set's locks (this host's and the shared one)."""
        from .writer import write_backup

        if not NAME_PATTERN.match(name):
            raise BackupError(f"invalid backup name {name!r}: use letters, digits, '.', '_' "
                              "and '-' (at most 128, not starting with '.' or '-')")
        with self._hold_set() as shared, DirectoryLock(self.backup_dir / LOCK_FILE):
            clean_leftovers(self.backup_dir)
            if manifest_path(self.backup_dir, name).exists():
                raise BackupError(f"a backup named {name!r} already exists")
            try:
                return write_backup(
                    backup_dir=self.backup_dir, name=name, source_paths=source_paths,
                    description=description, tier=tier, compression=self.settings.backups.compression,
                    key=self._key, threads=min(4, os.cpu_count() or 1), progress=progress,
                    cancel=cancel, before_publish=shared.check)
            finally:
                self._catalog_changed()

    def _created(self, manifest: dict[str, Any], duration: float) -> dict[str, Any]:
        """Count, log and describe a backup just created."""
        name, archive, m = manifest["name"], manifest["archive"], self.metrics
        m.backups.labels("success").inc()
        m.backup_last_success.set(time.time())
        m.backup_duration.observe(duration)
        m.backup_size.set(archive["size"])
        m.backup_files.set(manifest["file_count"])
        self._succeeded("create", name, f"backup {name} created: {manifest['file_count']} files, "
                        f"{archive['size']} bytes in {duration:.2f}s",
                        event_duration=int(duration * 1e9), file_size=archive["size"])
        return {
            "backup_name": name, "name": name, "created_at": manifest["created_at"],
            "tier": manifest["tier"], "description": manifest["description"],
            "archive": str(self.backup_dir / archive["name"]),
            "manifest": str(manifest_path(self.backup_dir, name)), "size": archive["size"],
            "sha256": archive["sha256"], "files": manifest["file_count"],
            "total_bytes": manifest["total_bytes"], "duration_seconds": round(duration, 3),
            "compression": manifest["settings"]["compression"], "encrypted": self._key is not None,
            "source_paths": [s["path"] for s in manifest["sources"]],
            "skipped": list(manifest.get("skipped", [])),
        }

    async def create_backup(self, source_paths: list[str], backup_name: str | None = None,
                            description: str = "", **kwargs: Any) -> dict[str, Any]:
        """Async twin of :meth:`create_backup_sync`; cancelling it removes the partial backup."""
        import asyncio

        self._require()
        cancel = threading.Event()
        future = asyncio.ensure_future(asyncio.to_thread(
            self.create_backup_sync, source_paths, backup_name, description, cancel=cancel, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait({future})
            raise

    # ------------------------------------------------------------------ list, verify
    def list_backups(self) -> list[dict[str, Any]]:
        """Complete backups, newest first (empty while disabled)."""
        if not self.enabled:
            return []
        return list(reversed(self._catalog()))

    def verify_backup_report(self, backup_name: str,
                             progress: Progress | None = None) -> dict[str, Any]:
        """Read every byte back and check every hash; the report names the archive on failure
        and the failure is recorded. A backup that cannot be read at all (no key, the wrong
        key, its archive gone) raises BackupUnreadableError (BackupNotFoundError when the
        archive is missing) and records nothing: that is not a backup found bad."""
        from .verify import check_archive

        self._require()
        started = time.time()
        with tracing.span("backup.verify", backup_name=backup_name):
            try:
                manifest = self._manifest(backup_name)
                report = check_archive(self.backup_dir, manifest, self._key, progress)
            except BackupUnreadableError as exc:
                self._fail("verify", backup_name, exc)
                raise
            except DecryptionError as exc:  # a sealed manifest changed: the backup is bad
                report = {"ok": False, "name": backup_name, "errors": [str(exc)], "error_type":
                          "DecryptionError", "files_checked": 0, "bytes_checked": 0, "outside_links": []}
        report["duration_seconds"] = round(time.time() - started, 3)
        self._record(VERIFY_STATE_FILE, read_verify_state, backup_name, report["ok"])
        outcome = "success" if report["ok"] else "failure"
        self.metrics.backup_verifications.labels(outcome).inc()
        self.metrics.backup_last_verify_ok.set(1 if report["ok"] else 0)
        if report["ok"]:
            self._succeeded("verify", backup_name, f"backup {backup_name} verified")
        else:
            self._fail("verify", backup_name, "; ".join(report["errors"][:3]))
        return report

    def verify_backup(self, backup_name: str) -> bool:
        """True when the archive and every file in it match the manifest."""
        return self.verify_backup_report(backup_name)["ok"]

    # ------------------------------------------------------------------ restore
    def protected_dirs(self) -> dict[str, Path]:
        """The project's own directories, which a restore never writes or removes."""
        settings = self.settings
        dirs = {"BACKUP_DIR": self.backup_dir, "STATE_DIR": Path(settings.general.state_dir),
                "LOG_DIR": Path(settings.logging.dir)}
        if settings.shipping.state_dir != settings.general.state_dir:  # the log spool elsewhere
            dirs["LOG_SHIP_STATE_DIR"] = Path(settings.shipping.state_dir)
        return dirs

    def restore_backup_sync(self, backup_name: str, restore_path: str | os.PathLike, *,
                            overwrite: bool = False, delete: bool = False, dry_run: bool = False,
                            outside_links: bool = False,
                            progress: Progress | None = None) -> dict[str, Any]:
        """Verify, then restore into ``restore_path``; a report of what changed per path.

        A non-empty target needs ``overwrite`` (the paths the backup holds are replaced);
        paths the backup does not hold are removed only with ``delete``. BACKUP_DIR, STATE_DIR
        and LOG_DIR are never touched, and a target inside one is refused. Symlinks pointing
        outside the target are skipped (``skipped`` in the report) unless ``outside_links``. Raises
        IntegrityError (DecryptionError, UnsafeArchiveError) or BackupError, and then the target
        is as it was."""
        from .verify import raise_for_report
        from .restore import extract, plan_changes

        self._require()
        target = Path(os.path.realpath(restore_path))
        with tracing.span("backup.restore", backup_name=backup_name, dry_run=dry_run):
            try:
                manifest = self._manifest(backup_name)
                report = self.verify_backup_report(backup_name, progress)
                raise_for_report(report)
                if dry_run:
                    result = plan_changes(manifest, target, self.protected_dirs(), delete=delete,
                                          outside_links=outside_links)
                else:
                    try:
                        result = extract(self.backup_dir, manifest, self._key, target,
                                         protected_dirs=self.protected_dirs(),
                                         overwrite=overwrite, delete=delete,
                                         outside_links=outside_links)
                    except OSError as exc:  # the target: a file in the way, no permission, disk full
                        raise BackupError(f"cannot restore to {target}: {exc.strerror or exc}") from exc
            except Exception as exc:
                if not dry_run:
                    self.metrics.backup_restores.labels("failure").inc()
                self._fail("restore", backup_name, exc)
                raise
        result["backup_name"] = backup_name
        if result["skipped"]:
            log.warning("restore of %s %s %d symlink(s) pointing outside %s: %s", backup_name,
                        "would skip" if dry_run else "skipped", len(result["skipped"]), target,
                        ", ".join(c["path"] for c in result["skipped"][:10]))
        if not dry_run:
            self.metrics.backup_restores.labels("success").inc()
            self._succeeded("restore", backup_name, f"backup {backup_name} restored to {target}",
                            file_path=str(target))
        return result

    async def restore_backup(self, backup_name: str, restore_path: str | os.PathLike,
                             **kwargs: Any) -> dict[str, Any]:
        import asyncio

        self._require()
        return await asyncio.to_thread(self.restore_backup_sync, backup_name, restore_path, **kwargs)

    def run_scheduled_backup(self) -> dict[str, Any]:
        """What the scheduler (or a Celery beat task) runs: create, verify, apply retention."""
        self._require()
        settings = self.settings.backups
        result = self.create_backup_sync(list(settings.critical_paths),
                                         description=f"scheduled {settings.frequency} backup",
                                         tier=settings.frequency)
        result["verified"] = self.verify_backup(result["backup_name"])
        result["deleted"] = self.apply_retention()
        return result

    def create_backup_schedule(self) -> dict[str, Any]:
        """The Celery beat entry for scheduled backups (Celery itself is not imported)."""
        settings = self.settings if self.settings is not None else self._resolve_settings()
        return {"opsstack-scheduled-backup": {
            "task": CELERY_TASK, "schedule": PERIODS[settings.backups.frequency],
            "args": (), "options": {"expires": PERIODS[settings.backups.frequency]}}}
