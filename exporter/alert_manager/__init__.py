"""Alerts of the bot: record, fold repeats, notify subscribers and channels, keep history.

Contract other managers rely on (the :class:`exporter.ports.Alerter` port):
    from exporter.alert_manager import alert_manager, AlertType, AlertSeverity
    alert_manager.trigger_alert_sync(AlertType.X, AlertSeverity.Y, title, message, task_id=None, details=None)
is thread-safe, never blocks, never raises, and does nothing while the manager is disabled.

The rest of the API (see :class:`AlertManager`): ``enable(settings, metrics)`` / ``disable()``,
``subscribe(type, callback)`` / ``unsubscribe``, ``register_handler(callback)`` (sync or async
callables), ``await trigger_alert(...)`` (raises AlertError on a bad type or severity),
``resolve_alert(alert | id | fingerprint)``, ``resolve_alerts_sync(type, **details)`` (and the
async ``resolve_alerts``), ``get_alerts(limit, severity, type, since,
include_resolved)``, ``get_alert_summary()``, and for tests and the CLI ``flush(timeout)`` /
``await wait_idle(timeout)``, ``channel_stats()``, ``channel_errors()``.

Modules: ``model`` (Alert, enums, fingerprint), ``intake`` (recording, masking, folding repeats),
``routing`` (alerts to subscriber and channel lanes), ``shared`` (one notification for all workers
through the shared marks, asked off the delivery loop), ``persistence`` (the history and outbox, the
loop writing them), ``store`` (history in memory and on disk), ``delivery`` (retried and
rate-limited channel lanes, persisted outbox), ``callbacks`` (subscriber lanes), ``monitors`` (disk
and memory), ``control`` (requests from another process: ``opsstack alerts resolve``), ``worker``
(the I/O thread), ``manager`` (lifecycle, subscriptions, queries). Backends live in :mod:`exporter.channels`; the module-level ``alert_manager`` is given
its registry and imports a channel's module only when ``ALERT_CHANNELS`` names it.
"""
from __future__ import annotations

from .._lazy import lazy_attributes
from ..ports import Channel
from .manager import AlertManager, read_history
from .model import Alert, AlertSeverity, AlertType, fingerprint, normalise_message, parse_severity, parse_type


def _alert_manager() -> AlertManager:
    from ..channels import CHANNELS
    from ..shared_state import shared_locks

    return AlertManager(channel_factories=CHANNELS, shared_marks=shared_locks)


__getattr__ = lazy_attributes(__name__, {"alert_manager": _alert_manager})

__all__ = [
    "Alert", "AlertManager", "AlertSeverity", "AlertType", "Channel", "alert_manager",
    "fingerprint", "normalise_message", "parse_severity", "parse_type", "read_history",
]
