"""What the managers share about the settings and metrics they may be given.

A manager is built with optional :class:`Settings` and :class:`Metrics` (a test passes its own,
the module-level managers pass none) and works out the ones to use when it is enabled:

- settings: the argument of ``enable()``, else the constructor's, else :func:`load_settings`;
- metrics: the argument of ``enable()`` (``runtime.start`` passes its own), else the
  constructor's, else the process-wide :func:`default_metrics` (built then, not on import, so
  that a manager left off never loads prometheus_client).
"""
from __future__ import annotations

from .config import Settings, load_settings
from .metrics import Metrics, default_metrics


class ManagerBase:
    """Off, with the given settings and metrics kept aside; :attr:`settings` and :attr:`metrics`
    are the ones in use, set by the subclass's ``enable()``."""

    def __init__(self, settings: Settings | None = None, metrics: Metrics | None = None) -> None:
        self.enabled = False
        self._settings_arg = settings
        self._metrics_arg = metrics
        self.settings: Settings | None = None
        self.metrics: Metrics | None = None

    def _resolve_settings(self, settings: Settings | None = None) -> Settings:
        """The settings to enable with: ``settings``, the constructor's, or :func:`load_settings`."""
        return settings or self._settings_arg or load_settings()

    def _resolve_metrics(self, metrics: Metrics | None = None) -> Metrics:
        """The metrics to enable with: ``metrics``, the constructor's, or :func:`default_metrics`."""
        return metrics or self._metrics_arg or default_metrics()
