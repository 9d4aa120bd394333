"""Notification backends of the alert manager, one module each; :data:`CHANNELS` is their registry.

Each module has ``from_settings(alerts) -> Channel`` (``alerts``: the settings' ``AlertSettings``
section, all a channel sees) (see :class:`exporter.ports.Channel`): it
raises :class:`~exporter.errors.ChannelConfigError` naming the missing key, and its
``send``/``send_resolved`` raise :class:`~exporter.errors.DeliveryError` (retried) with a
message that never contains a token, password or webhook URL. A module is imported only when
``ALERT_CHANNELS`` names its channel. A new channel is one module plus one line below; the
settings learn its name from here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import plugin

if TYPE_CHECKING:
    from ..ports import ChannelFactory

CHANNELS: dict[str, ChannelFactory] = {
    "log": plugin(f"{__name__}.log", "alerts"),
    "webhook": plugin(f"{__name__}.webhook", "alerts"),
    "telegram": plugin(f"{__name__}.telegram", "alerts"),
    "email": plugin(f"{__name__}.email", "alerts"),
    "slack": plugin(f"{__name__}.slack", "alerts"),
    "discord": plugin(f"{__name__}.discord", "alerts"),
    "alertmanager": plugin(f"{__name__}.alertmanager", "alerts"),
    "celery": plugin(f"{__name__}.celery", "alerts"),
}
