"""The backup manager's housekeeping: clean-up by age, retention (``BACKUP_RETENTION``) and the
statistics of the backup set. A part of :class:`BackupManager`, kept in its own module."""
from __future__ import annotations

import os
import time
from typing import Any

from ..errors import BackupError
from . import retention
from .catalog import LOCK_FILE, manifest_path, read_catalog, read_manifest
from .lock import DirectoryLock


class Housekeeping:
    """Mixed into :class:`BackupManager`, whose ``backup_dir``, ``settings``, ``metrics``,
    ``_events``, ``_key``, ``_scheduler``, ``_require()``, ``_catalog()`` and
    ``_catalog_changed()`` it uses."""

    # ------------------------------------------------------------------ retention
    def cleanup_old_backups(self, days: float) -> int:
        """Delete backups older than ``days`` (never the newest verified one); the count."""
        if not self.enabled:
            return 0
        return len(self.delete_old_backups(days))

    def delete_old_backups(self, days: float, *, dry_run: bool = False) -> list[str]:
        """Delete (or with ``dry_run`` only name) the backups older than ``days``, a finite
        number >= 0, except the newest verified one; the names, oldest first."""
        import math

        self._require()
        if isinstance(days, bool) or not isinstance(days, (int, float)) \
                or not math.isfinite(days) or days < 0:
            raise BackupError(f"days must be a finite number >= 0, got {days!r}")
        cutoff = time.time() - days * 86400

        def doomed(backups: list[dict[str, Any]]) -> list[str]:
            protected = (retention.newest_verified(backups) or {}).get("name")
            return [b["name"] for b in backups if b["created_at"] < cutoff and b["name"] != protected]

        return self._delete_chosen("cleanup", doomed, dry_run)

    def apply_retention(self, *, dry_run: bool = False) -> list[str]:
        """Apply ``BACKUP_RETENTION``: grandfather-father-son to scheduled backups, the newest N
        to manual ones; the names deleted (with ``dry_run``: that would be). Runs after each
        scheduled backup; never deletes the newest verified backup."""
        self._require()
        return self._delete_chosen(
            "retention", lambda backups: retention.to_delete(backups, self.settings.backups.retention)[0],
            dry_run)

    def _delete_chosen(self, why: str, choose, dry_run: bool) -> list[str]:
        if dry_run:
            return choose(self._catalog())
        with DirectoryLock(self.backup_dir / LOCK_FILE):
            doomed = choose(read_catalog(self.backup_dir))  # the files: what is there now
            try:
                for name in doomed:
                    self._delete(name)
            finally:
                if doomed:
                    self._catalog_changed()
        self._after_delete(why, doomed)
        return doomed

    def _after_delete(self, why: str, names: list[str]) -> None:
        self._update_retained(self._catalog())
        if names:
            self._events.log_event("backup", "success", f"{why} deleted {len(names)} backup(s)",
                                   event_action=f"backup-{why}", deleted=len(names))

    def _update_retained(self, backups: list[dict[str, Any]]) -> None:
        kept = retention.select(backups, self.settings.backups.retention)
        for tier in retention.TIERS:
            self.metrics.backups_retained.labels(tier).set(
                sum(1 for t in kept.values() if t == tier))

    def _delete(self, name: str) -> None:
        manifest = read_manifest(manifest_path(self.backup_dir, name))
        os.unlink(manifest_path(self.backup_dir, name))  # unlisted from here on
        if manifest is not None:
            try:
                os.unlink(self.backup_dir / manifest["archive"]["name"])
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ stats
    def get_backup_stats(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        backups = self._catalog()
        kept = retention.select(backups, self.settings.backups.retention)
        newest = backups[-1] if backups else None
        verified = retention.newest_verified([b for b in backups if b["verified"]])
        drilled = max((b for b in backups if b["drilled"]), key=lambda b: b["created_at"], default=None)
        return {
            "enabled": True, "backup_dir": str(self.backup_dir), "count": len(backups),
            "total_size": sum(b["size"] for b in backups),
            "newest": newest["name"] if newest else None,
            "newest_created_at": newest["created_at"] if newest else None,
            "oldest": backups[0]["name"] if backups else None,
            "newest_verified": verified["name"] if verified else None,
            "failed_verification": [b["name"] for b in backups if b["verified"] is False],
            "by_tier": {tier: sum(1 for t in kept.values() if t == tier) for tier in retention.TIERS},
            "frequency": self.settings.backups.frequency,
            "retention": dict(self.settings.backups.retention),
            "compression": self.settings.backups.compression,
            "encrypted": self._key is not None,
            "next_scheduled": self._scheduler.next_run("backup") if self._scheduler else None,
            "newest_drilled": drilled["name"] if drilled else None,
            "drill_interval": self.settings.backups.drill_interval,
            "next_drill": self._scheduler.next_run("drill") if self._scheduler else None,
        }
