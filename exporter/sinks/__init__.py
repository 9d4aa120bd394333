"""Log shipping backends, one module each; :data:`SINKS` is their registry.

Each module has ``from_settings(shipping, metrics) -> LogSink`` (``shipping``: the settings'
``ShippingSettings`` section, all a sink sees) (see :class:`exporter.ports.LogSink`)
returning a started sink, and imports its third-party client inside itself. A sink's module is
imported only when the settings configure it. A new sink is one module plus one line below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import plugin

if TYPE_CHECKING:
    from ..ports import SinkFactory

SINKS: dict[str, SinkFactory] = {
    "elasticsearch": plugin(f"{__name__}.elasticsearch", "shipping", when=lambda shipping: shipping.enabled),
}
