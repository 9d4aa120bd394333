"""Integrity checks, repair from verified backups and auto-recovery
(``from exporter.recovery_manager import recovery_manager``). :func:`read_integrity_state`
reads the last check's result without enabling (or importing) the manager."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .state import read_integrity_state

if TYPE_CHECKING:
    from .manager import RecoveryManager


def _recovery_manager() -> RecoveryManager:
    from ..alert_manager import alert_manager
    from ..backup_manager import archives
    from ..logger_manager import logger_manager
    from .manager import RecoveryManager

    return RecoveryManager(backups=archives, events=logger_manager, alerts=alert_manager)


__getattr__ = lazy_attributes(__name__, {"RecoveryManager": ".manager", "recovery_manager": _recovery_manager})

__all__ = ["RecoveryManager", "read_integrity_state", "recovery_manager"]
