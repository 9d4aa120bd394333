"""Notification backends of the alert manager, one module each, imported only when configured.

Each module has ``from_settings(settings) -> Channel`` (see :class:`exporter.alert_manager.Channel`):
it raises :class:`~exporter.errors.ChannelConfigError` naming the missing key, and its
``send``/``send_resolved`` raise :class:`~exporter.errors.DeliveryError` (retried) with a
message that never contains a token, password or webhook URL.
"""
