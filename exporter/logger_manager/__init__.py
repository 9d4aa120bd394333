"""PLACEHOLDER owned by the logger-manager work: replaced by the real manager.

Contract other managers rely on (keep it):
    from exporter.logger_manager import logger_manager
    logger_manager.log_event(action, outcome, message=None, *, level=logging.INFO, **fields)
never raises and does nothing while the manager is disabled. ``fields`` use ECS dotted names
given with underscores replaced (``file_name=...`` -> ``file.name``) or land under labels.
Plain ``logging.getLogger("exporter.<module>")`` calls come out as ECS once it is enabled.
"""
from __future__ import annotations


class _Placeholder:
    enabled = False

    def log_event(self, action, outcome, message=None, **fields):
        return None


logger_manager = _Placeholder()
