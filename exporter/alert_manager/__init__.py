"""Alerts of the bot: record, fold repeats, notify subscribers and channels, keep history.

Contract other managers rely on:
    from exporter.alert_manager import alert_manager, AlertType, AlertSeverity
    alert_manager.trigger_alert_sync(AlertType.X, AlertSeverity.Y, title, message, task_id=None, details=None)
is thread-safe, never blocks, never raises, and does nothing while the manager is disabled.

The rest of the API (see :class:`AlertManager`): ``enable(settings)`` / ``disable()``,
``subscribe(type, callback)`` / ``unsubscribe``, ``register_handler(callback)`` (sync or async
callables), ``await trigger_alert(...)`` (raises AlertError on a bad type or severity),
``resolve_alert(alert | id | fingerprint)``, ``get_alerts(limit, severity, type, since,
include_resolved)``, ``get_alert_summary()``, and for tests and the CLI ``flush(timeout)`` /
``await wait_idle(timeout)``, ``channel_stats()``, ``channel_errors()``.

Modules: ``model`` (Alert, enums, fingerprint), ``store`` (history in memory and on disk),
``delivery`` (Channel protocol, retried and rate-limited channel lanes, persisted outbox),
``callbacks`` (subscriber lanes), ``monitors`` (disk and memory), ``worker`` (the I/O thread),
``manager`` (the manager). Backends live in :mod:`exporter.channels`, imported on enable.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .manager import CHANNEL_FACTORIES, AlertManager, read_history
from .model import Alert, AlertSeverity, AlertType, fingerprint, normalise_message, parse_severity, parse_type

if TYPE_CHECKING:
    from .delivery import Channel

alert_manager = AlertManager()

# the delivery module brings asyncio: loaded when asked for
__getattr__ = lazy_attributes(__name__, {"Channel": ".delivery"})

__all__ = [
    "CHANNEL_FACTORIES", "Alert", "AlertManager", "AlertSeverity", "AlertType", "Channel", "alert_manager",
    "fingerprint", "normalise_message", "parse_severity", "parse_type", "read_history",
]
