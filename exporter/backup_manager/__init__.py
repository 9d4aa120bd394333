"""Verified, atomic, optionally encrypted backups (``from exporter.backup_manager import
backup_manager``). :func:`read_catalog` lists backups without enabling anything.

The manager's modules load on first use of ``BackupManager``/``backup_manager``, so that
``opsstack serve`` importing :mod:`.catalog` pulls in nothing but the standard library.
"""
from __future__ import annotations

from typing import Any

from .catalog import read_catalog

__all__ = ["BackupManager", "backup_manager", "read_catalog", "scheduled_backup"]


def __getattr__(name: str) -> Any:
    if name in ("BackupManager", "backup_manager"):
        from .manager import BackupManager

        globals().setdefault("BackupManager", BackupManager)
        globals().setdefault("backup_manager", BackupManager())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scheduled_backup() -> dict:
    """The Celery beat task of ``BackupManager.create_backup_schedule`` (register it with
    ``shared_task(name="exporter.backup_manager.scheduled_backup")(scheduled_backup)``)."""
    manager = __getattr__("backup_manager")
    if not manager.enabled:
        manager.enable(schedule=False)
    return manager.run_scheduled_backup()
