"""ECS JSON logging for the bot: files, console, shipping sinks, custom events, redaction.

    from exporter.logger_manager import logger_manager
    logger_manager.enable()                       # settings from load_settings()
    logging.getLogger("bot.downloads").info(...)  # every logger now writes ECS JSON
    logger_manager.log_download(task_id="download_123", filename="large_file.zip",
                                size_bytes=1073741824, duration=3600.0, speed=298261.0,
                                status="completed")
    logger_manager.log_event(action, outcome, message=None, *, level=logging.INFO, **fields)

Contract for other managers (the :class:`exporter.ports.EventLog` port): ``log_event`` never
raises and does nothing while disabled. ``fields`` use ECS names with underscores for dots
(``file_name=...`` -> ``file.name``), or land under ``labels.*`` (text) / ``bot.*`` (numbers).
Importing this package opens nothing. The module-level ``logger_manager`` ships to the sinks of
:mod:`exporter.sinks` that the settings configure.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from ..ports import LogSink
from .manager import ERROR_FILE, LOG_FILE, LoggerManager

if TYPE_CHECKING:
    from ._fields import ECS_VERSION
    from ._formatter import ECSFormatter
    from ._redact import Redactor


def _logger_manager() -> LoggerManager:
    from ..sinks import SINKS

    return LoggerManager(sink_factories=SINKS)


# the formatter and the ECS field table load when asked for (or on enable)
__getattr__ = lazy_attributes(__name__, {"ECS_VERSION": "._fields", "ECSFormatter": "._formatter",
                                         "Redactor": "._redact", "logger_manager": _logger_manager})

__all__ = ["ECS_VERSION", "ECSFormatter", "ERROR_FILE", "LOG_FILE", "LogSink", "LoggerManager", "Redactor",
           "logger_manager"]
