"""Turn on, from the settings, every manager whose flag is set, and stop them again.

    from exporter import runtime
    handle = runtime.start()          # reads the environment / OPSSTACK_CONFIG
    ...
    handle.stop()                     # bounded: flushes logs, spans and alerts with deadlines

Each manager can also be enabled on its own with ``<manager>.enable()``; this module only
saves the bot from writing the same six lines.
"""
from __future__ import annotations

import logging

from ._record import Record, field
from .config import Settings, load_settings
from .metrics import Metrics, default_metrics

log = logging.getLogger("exporter.runtime")


class Runtime(Record):
    """What :func:`start` turned on, so that :meth:`stop` turns off exactly that."""

    settings: Settings
    _given_metrics: Metrics | None = None
    enabled: list[str] = field(factory=list)
    metrics_server: object | None = None
    _managers: list[object] = field(factory=list)

    @property
    def metrics(self) -> Metrics:
        """The metrics given to :func:`start`, else the process-wide ones (built on first use:
        that imports prometheus_client, which :func:`start` with every feature off does not)."""
        return self._given_metrics if self._given_metrics is not None else default_metrics()

    def stop(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        from . import tracing

        # Reverse order: the logger goes last so the others can still log while stopping.
        for manager in reversed(self._managers):
            manager.disable()
        self._managers.clear()
        tracing.shutdown()
        self.enabled.clear()


def _managers_by_flag(settings: Settings) -> list[tuple[str, bool, object]]:
    from .alert_manager import alert_manager
    from .backup_manager import backup_manager
    from .logger_manager import logger_manager
    from .profiler import profiler
    from .recovery_manager import recovery_manager

    return [
        ("logging", settings.logging.enabled, logger_manager),
        ("alerts", settings.alerts.enabled, alert_manager),
        ("profiler", settings.profiler.enabled, profiler),
        ("backups", settings.backups.enabled, backup_manager),
        ("recovery", settings.recovery.enabled, recovery_manager),
    ]


def _serve_metrics(runtime: Runtime) -> None:
    """Mark the enabled features in the metrics; serve them when ``METRICS_PORT`` is set."""
    settings, metrics = runtime.settings, runtime.metrics
    for feature in runtime.enabled:
        metrics.feature_enabled.labels(feature).set(1)
    if settings.shipping.enabled and settings.logging.enabled:
        metrics.feature_enabled.labels("shipping").set(1)
    if settings.metrics.port is not None:
        from .exposition import start_metrics_server

        runtime.metrics_server = start_metrics_server(settings, metrics)


def start(settings: Settings | None = None, metrics: Metrics | None = None) -> Runtime:
    """Enable the managers whose flags are on; serve /metrics when ``METRICS_PORT`` is set."""
    from . import tracing

    settings = settings if settings is not None else load_settings()
    runtime = Runtime(settings=settings, _given_metrics=metrics)
    try:
        if settings.tracing.enabled and tracing.setup(settings) is not None:  # None: OTEL_SDK_DISABLED
            runtime.enabled.append("tracing")
        for name, wanted, manager in _managers_by_flag(settings):
            if wanted:
                manager.enable(settings, metrics)
                runtime._managers.append(manager)
                runtime.enabled.append(name)
        if runtime.enabled:  # with every feature off, the metrics are not even built
            _serve_metrics(runtime)
    except BaseException:
        runtime.stop()
        raise
    log.info("opsstack started: %s", ", ".join(runtime.enabled) or "nothing enabled")
    return runtime
