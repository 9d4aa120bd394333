"""Integrity checks, repair from verified backups and auto-recovery
(``from exporter.recovery_manager import recovery_manager``). :func:`read_integrity_state`
reads the last check's result without enabling (or importing) the manager."""
from __future__ import annotations

from typing import Any

from .state import read_integrity_state

__all__ = ["RecoveryManager", "read_integrity_state", "recovery_manager"]


def __getattr__(name: str) -> Any:
    if name in ("RecoveryManager", "recovery_manager"):
        from .manager import RecoveryManager

        globals().setdefault("RecoveryManager", RecoveryManager)
        globals().setdefault("recovery_manager", RecoveryManager())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
