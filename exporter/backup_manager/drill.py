"""Restore drills: a backup is restored into a scratch directory the way a person would restore
it, and what landed on disk is compared with the manifest, file by file; SQLite databases must
also pass ``PRAGMA integrity_check``. A backup counts as proven only once a drill passed.

This module restores into scratch space and checks the tree; the backup manager verifies first
and records the result (``.drill-state.json`` beside the backups, metrics, log event, alert).
"""
from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from .. import tracing
from .._files import file_sha256
from ..errors import BackupNotFoundError, BackupUnreadableError, IntegrityError
from .catalog import DRILL_STATE_FILE, last_drill, read_drill_state

SQLITE_HEADER = b"SQLite format 3\x00"


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def sqlite_problem(path: Path) -> str | None:
    """None when the database at ``path`` passes ``PRAGMA integrity_check``, else what it said."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        return f"cannot be opened: {exc}"
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        connection.close()
    messages = [str(row[0]) for row in rows]
    if messages == ["ok"]:
        return None
    text = "; ".join(" ".join(message.split()) for message in messages[:5])
    return text if len(text) <= 300 else text[:297] + "..."


def _entry_problem(root: Path, entry: dict[str, Any]) -> str | None:
    path = root / entry["path"]
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing after the restore"
    kind = entry["type"]
    if kind == "dir":
        return None if stat.S_ISDIR(info.st_mode) else "is not a directory"
    if kind == "symlink":
        if not stat.S_ISLNK(info.st_mode):
            return "is not a symbolic link"
        return None if os.readlink(path) == entry.get("link") else "points elsewhere"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size != entry.get("size"):
        return f"has {info.st_size} bytes, the manifest {entry.get('size')}"
    if file_sha256(path) != entry.get("sha256"):
        return "differs from the manifest (SHA-256)"
    return None


def check_restored(root: Path, manifest: dict[str, Any], skipped: set[str] = frozenset()) -> dict[str, Any]:
    """Compare the tree restored at ``root`` with ``manifest`` (less the ``skipped`` paths: links
    leaving the root): ``files_checked``, ``sqlite_checked`` and ``errors`` (one line per path
    that is wrong)."""
    errors, files, databases = [], 0, 0
    for entry in manifest.get("files", []):
        if entry["path"] in skipped:
            continue
        problem = _entry_problem(root, entry)
        if problem is None and entry["type"] == "file":
            files += 1
            path = root / entry["path"]
            if entry.get("size", 0) >= len(SQLITE_HEADER) and _is_sqlite(path):
                databases += 1
                found = sqlite_problem(path)
                problem = None if found is None else f"SQLite integrity_check: {found}"
        if problem is not None:
            errors.append(f"{entry['path']}: {problem}")
    return {"files_checked": files, "sqlite_checked": databases, "errors": errors}


def restore_and_check(backup_dir: Path, manifest: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """Restore the backup of ``manifest`` into scratch space in ``backup_dir`` (through the
    same code as any restore), check it with :func:`check_restored`, remove it."""
    import shutil

    from .catalog import TEMP_MARKER
    from .restore import extract

    scratch = backup_dir / f".drill{TEMP_MARKER}{os.getpid()}-{threading.get_ident()}"
    try:
        restored = extract(backup_dir, manifest, key, scratch, protected_dirs={}, overwrite=False)
        return check_restored(scratch, manifest, {change["path"] for change in restored["skipped"]})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Drills:
    """The backup manager's restore drills: run one, record it (``.drill-state.json``), export
    it. Mixed into :class:`BackupManager`, whose ``backup_dir``, ``settings``, ``metrics``,
    ``_key``, ``_catalog()``, ``_manifest()``, ``_record()``, ``_fail()``, ``_succeeded()`` and
    ``verify_backup_report()`` it uses."""

    def drill_backup_sync(self, backup_name: str | None = None) -> dict[str, Any]:
        """Restore ``backup_name`` (default: the newest backup) into a scratch directory, compare
        every file with the manifest and run SQLite's integrity check; record and export the
        result. A report with ``ok`` and ``errors``; raises (recording nothing) when the drill
        cannot run: no backup, no key, no space."""
        from .verify import raise_for_report

        self._require()
        if backup_name is None:
            backups = self._catalog()
            if not backups:
                raise BackupNotFoundError(f"no backup to drill in {self.backup_dir}")
            backup_name = backups[-1]["name"]
        manifest = self._manifest(backup_name)
        started = time.time()
        with tracing.span("backup.drill", backup_name=backup_name):
            try:
                raise_for_report(self.verify_backup_report(backup_name))
                report = restore_and_check(self.backup_dir, manifest, self._key)
            except BackupUnreadableError as exc:  # no key, the wrong one: no verdict on the backup
                self._fail("drill", backup_name, exc)
                raise
            except IntegrityError as exc:
                report = {"files_checked": 0, "sqlite_checked": 0, "errors": [str(exc)]}
            except Exception as exc:
                self._fail("drill", backup_name, exc)
                raise
        report.update(backup_name=backup_name, ok=not report["errors"],
                      duration_seconds=round(time.time() - started, 3))
        self._record(DRILL_STATE_FILE, read_drill_state, backup_name, report["ok"])
        self.metrics.backup_drills.labels("success" if report["ok"] else "failure").inc()
        self._show_drill({"ok": report["ok"], "at": time.time()})
        if report["ok"]:
            self._succeeded("drill", backup_name, f"restore drill of {backup_name} passed: "
                            f"{report['files_checked']} files, {report['sqlite_checked']} SQLite databases")
        else:
            self._fail("drill", backup_name, "; ".join(report["errors"][:3]))
        return report

    async def drill_backup(self, backup_name: str | None = None) -> dict[str, Any]:
        import asyncio

        self._require()
        return await asyncio.to_thread(self.drill_backup_sync, backup_name)

    def run_scheduled_drill(self) -> dict[str, Any] | None:
        """What the scheduler runs every ``BACKUP_DRILL_INTERVAL``: drill the newest backup
        (None while there is none yet)."""
        backups = self._catalog()
        return self.drill_backup_sync(backups[-1]["name"]) if backups else None

    def _show_drill(self, drill: dict[str, Any] | None) -> None:
        self.metrics.backup_drill_interval.set(self.settings.backups.drill_interval)
        if drill is not None:
            self.metrics.backup_last_drill.set(drill["at"])
            self.metrics.backup_last_drill_success.set(1 if drill["ok"] else 0)

    def _last_drill_time(self) -> float | None:
        drill = last_drill(self.backup_dir)
        return drill["at"] if drill else None
