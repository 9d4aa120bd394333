"""Optional clients and the extras that install them: ``pip install 'opsstack[elk]'``.

The base install carries none of the heavy clients. A feature whose client is missing is one
:class:`MissingExtraError` naming the setting that turned it on and the extra to install, raised
when the settings load (:func:`check_extras`) and, for code that builds a backend without them,
when the backend imports its client (:func:`require_extra`).
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import ConfigError, OpsError

if TYPE_CHECKING:
    from .config import Settings

# extra -> (the module that proves it is installed, what a person calls it)
EXTRAS: dict[str, tuple[str, str]] = {
    "elk": ("urllib3", "urllib3 (the log shipper's HTTP client)"),
    "otel": ("opentelemetry.sdk", "the OpenTelemetry SDK"),
    "celery": ("celery", "Celery"),
    "redis": ("redis", "the Redis client"),
}


class MissingExtraError(ConfigError):
    """A feature is on but the extra holding its client is not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        self.extra = extra
        # ConfigError's fields, without the value (the feature's setting may be a secret URL).
        self.key, self.source, self.value = feature.split(" ", 1)[0], "settings", None
        self.reason = f"{EXTRAS[extra][1]} is not installed: pip install 'opsstack[{extra}]'"
        OpsError.__init__(self, f"{feature} but {self.reason}")


def installed(extra: str) -> bool:
    """Whether the extra's client can be imported (found on the path, not imported)."""
    module = EXTRAS[extra][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):  # a missing parent package; a module set to None
        return False


def require_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for a backend, or raise :class:`MissingExtraError` naming ``extra``.

    ``feature`` says what turned it on and starts with that flag's name (the error's key), e.g.
    ``"ELASTICSEARCH_URL is set"``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtraError(feature, extra) from exc


def wanted_extras(settings: Settings) -> list[tuple[str, str]]:
    """``(feature, extra)`` for every enabled feature that needs an extra."""
    wanted = []
    if settings.shipping.enabled:
        by_flag = settings.sources.get("ENABLE_ELK_INTEGRATION", "default") != "default"
        wanted.append(("ENABLE_ELK_INTEGRATION is on" if by_flag else "ELASTICSEARCH_URL is set", "elk"))
    if settings.tracing.enabled and not settings.tracing.sdk_disabled:
        wanted.append(("ENABLE_TRACING is on", "otel"))
    if any("celery" in names for names in settings.alerts.channels.values()):
        wanted.append(("ALERT_CHANNELS names the celery channel", "celery"))
    if settings.backups.scheduler == "celery":
        wanted.append(("BACKUP_SCHEDULER is celery", "celery"))
    if settings.general.redis_url is not None:
        wanted.append(("REDIS_URL is set", "redis"))
    return wanted


def check_extras(settings: Settings) -> None:
    """Raise :class:`MissingExtraError` for the first enabled feature whose extra is missing."""
    for feature, extra in wanted_extras(settings):
        if not installed(extra):
            raise MissingExtraError(feature, extra)
