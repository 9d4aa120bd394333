"""Verified, atomic, optionally encrypted backups (``from exporter.backup_manager import
backup_manager``). :func:`read_catalog` lists backups without enabling anything.

The manager's modules load on first use of ``BackupManager``/``backup_manager``, so that
``opsstack serve`` importing :mod:`.catalog` pulls in nothing but the standard library.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .catalog import read_catalog

if TYPE_CHECKING:
    from .manager import BackupManager

__all__ = ["BackupManager", "backup_manager", "read_catalog", "scheduled_backup"]


def _backup_manager() -> BackupManager:
    from ..alert_manager import alert_manager
    from ..logger_manager import logger_manager
    from ..shared_state import catalog_mirror, shared_locks
    from .manager import BackupManager

    return BackupManager(events=logger_manager, alerts=alert_manager, shared_locks=shared_locks,
                         catalog_mirror=catalog_mirror)


__getattr__ = lazy_attributes(__name__, {"BackupManager": ".manager", "backup_manager": _backup_manager})


def scheduled_backup() -> dict:
    """The Celery beat task of ``BackupManager.create_backup_schedule``: create, verify and apply
    retention in this process (``exporter.integrations.celery.install(app)`` registers it)."""
    manager = __getattr__("backup_manager")
    if not manager.enabled:
        manager.enable(schedule=False)
    return manager.run_scheduled_backup()
