"""One frozen, typed settings object for every manager, built in one place.

Sources, highest first: explicit arguments, a file (a ``config.py`` module as in the design
document, or TOML), the environment, the defaults below. Only this module reads the
environment. Every flag keeps the exact name of the design document (``LOG_DIR``,
``BACKUP_RETENTION``, ...); each becomes an attribute of a section (``settings.logging.dir``).

Secrets (tokens, passwords, keys, URLs that may carry credentials) are accepted from the
environment only, directly or as ``<NAME>_FILE`` pointing at a file, and are held as
:class:`Secret` so that no ``repr``, log line or ``check-config`` output shows them.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._record import Record, field
from .channels import CHANNELS
from .errors import ConfigError

FREQUENCIES = ("hourly", "daily", "weekly")
SEVERITY_NAMES = ("low", "medium", "high", "critical")
CHANNEL_NAMES = tuple(CHANNELS)  # from the channels registry: a new channel is known here too
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


class Secret:
    """A value that must never be shown. ``str()`` and ``repr()`` mask it; ``.get()`` reveals it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --------------------------------------------------------------------------- parsers
# Each parser takes a raw value (a string from the environment, or a Python/TOML value from a
# file or an argument) and returns the typed value, or raises ValueError with the reason.

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError("must be true or false")


def _number(raw: Any, kind: type) -> int | float:
    if isinstance(raw, bool):
        raise ValueError(f"must be a number, not {raw!r}")
    if isinstance(raw, (int, float)):
        value = raw
    else:
        try:
            value = kind(str(raw).strip())
        except ValueError:
            raise ValueError(f"must be a{'n integer' if kind is int else ' number'}") from None
    if kind is int and value != int(value):
        raise ValueError("must be an integer")
    return kind(value)


def non_negative_int(raw: Any) -> int:
    value = _number(raw, int)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def positive_int(raw: Any) -> int:
    value = _number(raw, int)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def positive_float(raw: Any) -> float:
    value = _number(raw, float)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def drill_interval(raw: Any) -> float:
    """Seconds between restore drills: 0 (off) or 60 s to 366 days."""
    value = _number(raw, float)
    if not (value == 0 or 60 <= value <= 366 * 86400):
        raise ValueError("must be 0 (no drills) or between 60 and 31622400 seconds")
    return value


def percent(raw: Any) -> float:
    value = _number(raw, float)
    if not 0 <= value <= 100:
        raise ValueError("must be a percentage between 0 and 100")
    return value


def ratio(raw: Any) -> float:
    value = _number(raw, float)
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def size_bytes(raw: Any) -> int:
    """A positive size: an integer of bytes or a string such as ``10MiB`` / ``512k``."""
    if isinstance(raw, str):
        text = raw.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits):]
        if unit not in _SIZE_UNITS or not digits:
            raise ValueError("must be a size in bytes such as 10485760 or 10MiB")
        try:
            value = float(digits) * _SIZE_UNITS[unit]
        except ValueError:
            raise ValueError("must be a size in bytes such as 10485760 or 10MiB") from None
        raw = int(value)
    value = _number(raw, int)
    if value <= 0:
        raise ValueError("must be a positive size in bytes")
    return value


def optional_port(raw: Any) -> int | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    value = _number(raw, int)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port between 0 and 65535")
    return value


def text(raw: Any) -> str:
    if not isinstance(raw, (str, Path)):
        raise ValueError("must be a string")
    return str(raw)


def optional_text(raw: Any) -> str | None:
    if raw is None:
        return None
    value = text(raw).strip()
    return value or None


def path(raw: Any) -> Path:
    value = text(raw).strip()
    if not value:
        raise ValueError("must be a non-empty path")
    return Path(value)


def one_of(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = text(raw).strip()
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    parse.choices = choices
    return parse


def _structured(raw: Any) -> Any:
    """Strings from the environment may hold JSON for lists and mappings."""
    if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
        import json  # only for a JSON value: not loaded on import

        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg} at column {exc.colno})") from None
    return raw


def string_list(raw: Any) -> tuple[str, ...]:
    """A list: JSON, comma-separated, or a Python/TOML list of strings."""
    raw = _structured(raw)
    if isinstance(raw, str):
        items = [item.strip() for item in raw.split(",")]
        return tuple(item for item in items if item)
    if isinstance(raw, (list, tuple)) and all(isinstance(item, (str, Path)) for item in raw):
        return tuple(str(item) for item in raw)
    raise ValueError("must be a list of strings (JSON or comma-separated)")


def optional_string_list(raw: Any) -> tuple[str, ...] | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
        return None
    return string_list(raw)


def _key_values(raw: Any) -> dict[str, Any]:
    """A mapping: JSON, ``key=value,key=value``, or a Python/TOML mapping."""
    raw = _structured(raw)
    if isinstance(raw, str):
        pairs: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"entry {item!r} is not key=value")
            pairs[key.strip()] = value.strip()
        return pairs
    if isinstance(raw, Mapping):
        return dict(raw)
    raise ValueError("must be a mapping (JSON or key=value,key=value)")


def resource_attributes(raw: Any) -> dict[str, str]:
    """OpenTelemetry resource attributes: ``key=value,key=value`` with percent-encoded values (the
    specification's ``OTEL_RESOURCE_ATTRIBUTES``), JSON, or a Python/TOML mapping."""
    from urllib.parse import unquote  # only when the variable is set

    pairs = _key_values(raw)
    if not all(isinstance(key, str) and key for key in pairs):
        raise ValueError("keys must be non-empty strings")
    return {key: unquote(str(value)) for key, value in pairs.items()}


def backup_retention(raw: Any) -> dict[str, int]:
    """How many backups each tier keeps: ``{"hourly": 24, "daily": 30, "weekly": 12,
    "manual": 20}`` (tiers not given keep their default)."""
    pairs = _key_values(raw)
    unknown = sorted(set(pairs) - set(DEFAULT_RETENTION))
    if unknown:
        raise ValueError(f"unknown tier {unknown[0]!r}; tiers are {', '.join(DEFAULT_RETENTION)}")
    result = dict(DEFAULT_RETENTION)
    for tier, count in pairs.items():
        try:
            result[tier] = non_negative_int(count)
        except ValueError as exc:
            raise ValueError(f"tier {tier!r} {exc}") from None
    return result


def alert_channels(raw: Any) -> dict[str, tuple[str, ...]]:
    """Which channels each severity goes to: ``{"critical": ["telegram", "email"], ...}``."""
    raw = _structured(raw)
    if isinstance(raw, str):  # severity=chan1+chan2,severity=chan
        raw = {key: value.split("+") for key, value in _key_values(raw).items()}
    if not isinstance(raw, Mapping):
        raise ValueError("must be a mapping of severity to a list of channels")
    result = {severity: ("log",) for severity in SEVERITY_NAMES}
    for severity, channels in raw.items():
        name = str(severity).lower()
        if name not in SEVERITY_NAMES:
            raise ValueError(f"unknown severity {severity!r}; severities are {', '.join(SEVERITY_NAMES)}")
        try:
            names = string_list(channels)
        except ValueError:
            raise ValueError(f"severity {name!r} must map to a list of channel names") from None
        for channel in names:
            if channel not in CHANNEL_NAMES:
                raise ValueError(f"unknown channel {channel!r}; channels are {', '.join(CHANNEL_NAMES)}")
        result[name] = names
    return result


def secret(raw: Any) -> Secret | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, Secret):
        return raw
    return Secret(text(raw).strip())


def key_bytes(text: str) -> bytes:
    """The 32 bytes of a 256-bit key written as 64 hexadecimal characters (ValueError
    otherwise, with a message that never shows the value)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError("must be 64 hexadecimal characters (a 256-bit key)")
    return key


def aes_key(raw: Any) -> Secret | None:
    """A secret 256-bit key, checked at load time (see :func:`key_bytes`)."""
    value = secret(raw)
    if value is not None:
        key_bytes(value.get())
    return value


def elasticsearch_url(raw: Any) -> Secret | None:
    """A secret ``http(s)://[user:password@]host:port`` (the port may be left out for https)."""
    value = secret(raw)
    if value is None:
        return None
    from urllib.parse import urlsplit  # loaded only when shipping is configured

    try:
        url = urlsplit(value.get())
        valid = url.scheme in ("http", "https") and bool(url.hostname) and (url.port or url.scheme == "https")
    except ValueError:  # a port that is not a number or out of range
        valid = False
    if not valid:
        raise ValueError("expected http://host:port or https://host[:port]")
    return value


DEFAULT_RETENTION = {"hourly": 24, "daily": 30, "weekly": 12, "manual": 20}


# --------------------------------------------------------------------------- the keys


class Key(Record, frozen=True):
    """One setting: its flag name, where it lands, how it parses, its default."""

    name: str
    section: str
    attr: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    secret: bool = False


def _k(name: str, section: str, attr: str, parse: Callable[[Any], Any], default: Any, doc: str,
       secret: bool = False) -> Key:
    return Key(name, section, attr, parse, default, doc, secret)


MiB = 1024 * 1024

KEYS: tuple[Key, ...] = (
    # general
    _k("STATE_DIR", "general", "state_dir", path, "state",
       "Alert history, integrity baselines, retry queues, the log spool."),
    # logging
    _k("ENABLE_ENHANCED_LOGGING", "logging", "enabled", parse_bool, False, "Turn the logger manager on."),
    _k("LOG_DIR", "logging", "dir", path, "logs", "Directory of the JSON log files."),
    _k("LOG_LEVEL", "logging", "level", one_of(LOG_LEVELS, upper=True), "INFO", "Lowest level written."),
    _k("LOG_MAX_SIZE", "logging", "max_size", size_bytes, 10 * MiB, "Bytes before a log file rotates."),
    _k("LOG_BACKUP_COUNT", "logging", "backup_count", non_negative_int, 5, "Rotated files kept."),
    _k("LOG_CONSOLE", "logging", "console", parse_bool, True, "Also write ECS lines to stderr."),
    _k("LOG_REDACT_SECRETS", "logging", "redact", parse_bool, True, "Mask tokens and passwords in logs."),
    # shipping to Elasticsearch
    _k("ELASTICSEARCH_URL", "shipping", "url", elasticsearch_url, None,
       "Ship logs to this Elasticsearch (may carry credentials).", secret=True),
    _k("ELASTICSEARCH_API_KEY", "shipping", "api_key", secret, None, "API key for Elasticsearch.", secret=True),
    _k("ELASTICSEARCH_NAMESPACE", "shipping", "namespace", text, "default",
       "Logs go to the data set logs-bot-<namespace>."),
    _k("LOG_SHIP_BATCH_SIZE", "shipping", "batch_size", positive_int, 2000, "Documents per _bulk request."),
    _k("LOG_SHIP_INTERVAL", "shipping", "interval", positive_float, 1.0, "Seconds between flushes."),
    _k("LOG_SHIP_QUEUE_SIZE", "shipping", "queue_size", positive_int, 50_000,
       "Records held in memory (about 0.5 KB each); what the node cannot take yet goes to the spool."),
    _k("LOG_SPOOL_MAX_BYTES", "shipping", "spool_max_bytes", size_bytes, 256 * MiB,
       "On-disk spool limit while Elasticsearch is down."),
    # Within 2 s of a bot without opsstack, with the slack the sink allows past it; what is not
    # sent by then waits in the spool for the next start.
    _k("LOG_SHUTDOWN_TIMEOUT", "shipping", "shutdown_timeout", positive_float, 1.0,
       "Seconds the exit waits to flush logs."),
    # alerts
    _k("ENABLE_ALERT_SYSTEM", "alerts", "enabled", parse_bool, False, "Turn the alert manager on."),
    _k("ALERT_RETENTION_HOURS", "alerts", "retention_hours", positive_float, 24.0, "Hours alerts are kept."),
    _k("ALERT_CHANNELS", "alerts", "channels", alert_channels,
       {severity: ("log",) for severity in SEVERITY_NAMES}, "Channels per severity."),
    _k("ALERT_DEDUP_WINDOW", "alerts", "dedup_window", positive_float, 300.0,
       "Seconds in which a repeated alert is counted, not re-sent."),
    _k("ALERT_RATE_LIMIT", "alerts", "rate_limit_per_minute", positive_int, 20,
       "Messages per channel per minute."),
    _k("ALERT_WEBHOOK_URL", "alerts", "webhook_url", secret, None, "Webhook channel URL.", secret=True),
    _k("TELEGRAM_BOT_TOKEN", "alerts", "telegram_token", secret, None, "Telegram bot token.", secret=True),
    _k("TELEGRAM_CHAT_ID", "alerts", "telegram_chat_id", optional_text, None, "Telegram chat for alerts."),
    _k("TELEGRAM_API_URL", "alerts", "telegram_api_url", text, "https://api.telegram.org",
       "Bot API base URL."),
    _k("SMTP_HOST", "alerts", "smtp_host", optional_text, None, "SMTP server for the e-mail channel."),
    _k("SMTP_PORT", "alerts", "smtp_port", positive_int, 587, "SMTP port."),
    _k("SMTP_STARTTLS", "alerts", "smtp_starttls", parse_bool, True, "Use STARTTLS."),
    _k("SMTP_USERNAME", "alerts", "smtp_username", optional_text, None, "SMTP login."),
    _k("SMTP_PASSWORD", "alerts", "smtp_password", secret, None, "SMTP password.", secret=True),
    _k("ALERT_EMAIL_FROM", "alerts", "email_from", optional_text, None, "Sender address."),
    _k("ALERT_EMAIL_TO", "alerts", "email_to", string_list, (), "Recipient addresses."),
    _k("SLACK_WEBHOOK_URL", "alerts", "slack_webhook_url", secret, None, "Slack incoming webhook.",
       secret=True),
    _k("ALERTMANAGER_URL", "alerts", "alertmanager_url", secret, None, "Alertmanager base URL.",
       secret=True),
    _k("DISK_FREE_MIN_PERCENT", "alerts", "disk_free_min_percent", percent, 10.0,
       "DISK_FULL below this free space."),
    _k("MEMORY_MAX_PERCENT", "alerts", "memory_max_percent", percent, 90.0,
       "MEMORY_HIGH above this system memory use."),
    _k("PROCESS_MEMORY_MAX", "alerts", "process_memory_max", size_bytes, 2048 * MiB,
       "MEMORY_HIGH above this process RSS."),
    _k("RESOURCE_CHECK_INTERVAL", "alerts", "resource_check_interval", positive_float, 60.0,
       "Seconds between disk and memory checks."),
    # backups
    _k("ENABLE_BACKUP_SYSTEM", "backups", "enabled", parse_bool, False, "Turn the backup manager on."),
    _k("BACKUP_DIR", "backups", "dir", path, "backups", "Where archives and manifests go."),
    _k("BACKUP_FREQUENCY", "backups", "frequency", one_of(FREQUENCIES), "daily", "Scheduled backups."),
    _k("CRITICAL_BACKUP_PATHS", "backups", "critical_paths", string_list, (), "What scheduled backups save."),
    _k("BACKUP_RETENTION", "backups", "retention", backup_retention, DEFAULT_RETENTION,
       "Backups kept per tier (grandfather-father-son)."),
    _k("BACKUP_COMPRESSION", "backups", "compression", one_of(("zstd", "gzip", "none")), "zstd",
       "Archive compression."),
    _k("BACKUP_ENCRYPTION_KEY", "backups", "encryption_key", aes_key, None,
       "AES-256-GCM key (64 hex characters) to encrypt backups.", secret=True),
    _k("BACKUP_DRILL_INTERVAL", "backups", "drill_interval", drill_interval, 7 * 86400.0,
       "Seconds between restore drills of the newest backup while backups are scheduled (0: none)."),
    # profiler
    _k("ENABLE_PROFILER", "profiler", "enabled", parse_bool, False, "Turn the profiler on."),
    _k("PROFILE_THRESHOLD", "profiler", "threshold", positive_float, 1.0, "Seconds above which it is slow."),
    _k("PROFILED_OPERATIONS", "profiler", "operations", optional_string_list, None,
       "Only these operations are measured (empty: all)."),
    _k("PROFILER_RETENTION_HOURS", "profiler", "retention_hours", positive_float, 24.0,
       "Hours samples stay in the statistics."),
    _k("PROFILER_WINDOW", "profiler", "window", positive_int, 2048, "Samples kept per operation."),
    # recovery
    _k("ENABLE_RECOVERY_MANAGER", "recovery", "enabled", parse_bool, False, "Turn the recovery manager on."),
    _k("ENABLE_AUTO_RECOVERY", "recovery", "auto_recovery", parse_bool, False,
       "Repair damaged critical paths from verified backups."),
    _k("RECOVERY_CRITICAL_PATHS", "recovery", "critical_paths", string_list, (), "Paths checked."),
    _k("INTEGRITY_CHECK_INTERVAL", "recovery", "check_interval", positive_float, 3600.0,
       "Seconds between periodic integrity checks."),
    # metrics
    _k("METRICS_PORT", "metrics", "port", optional_port, None,
       "Serve /metrics from the bot on this port (unset: not served)."),
    _k("METRICS_ADDR", "metrics", "addr", text, "127.0.0.1", "Address /metrics binds to."),
    _k("METRICS_AUTH_USERNAME", "metrics", "auth_username", optional_text, None, "Basic auth user."),
    _k("METRICS_AUTH_PASSWORD", "metrics", "auth_password", secret, None, "Basic auth password.",
       secret=True),
    # tracing (standard OpenTelemetry variables)
    _k("ENABLE_TRACING", "tracing", "enabled", parse_bool, False, "Export OpenTelemetry spans over OTLP."),
    _k("OTEL_SERVICE_NAME", "tracing", "service_name", text, "telegram-bot",
       "service.name of spans and log lines (over service.name in OTEL_RESOURCE_ATTRIBUTES)."),
    _k("OTEL_RESOURCE_ATTRIBUTES", "tracing", "resource_attributes", resource_attributes, {},
       "Attributes of spans and log lines, e.g. deployment.environment.name=production,host.name=bot-1."),
    _k("OTEL_EXPORTER_OTLP_ENDPOINT", "tracing", "endpoint", optional_text, None,
       "OTLP endpoint (default of the SDK: localhost:4317 / :4318)."),
    _k("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "tracing", "traces_endpoint", optional_text, None,
       "OTLP endpoint for spans, used as is (over OTEL_EXPORTER_OTLP_ENDPOINT)."),
    # Milliseconds, as the specification says. 1 s rather than the SDK's 10 s keeps the bot's
    # exit bounded when the Collector is away (tracing.shutdown waits 1.5 s at most).
    _k("OTEL_EXPORTER_OTLP_TIMEOUT", "tracing", "timeout_ms", positive_int, 1000,
       "Milliseconds for one OTLP export."),
    _k("OTEL_SDK_DISABLED", "tracing", "sdk_disabled", parse_bool, False,
       "Tracing off whatever ENABLE_TRACING says (the specification's kill switch)."),
    # http/protobuf is the OpenTelemetry specification's default, and it spares the bot the
    # ~11 MiB that loading gRPC costs.
    _k("OTEL_EXPORTER_OTLP_PROTOCOL", "tracing", "protocol", one_of(OTLP_PROTOCOLS), "http/protobuf",
       "OTLP protocol."),
    _k("OTEL_TRACES_SAMPLER", "tracing", "sampler", one_of(SAMPLERS), "parentbased_always_on", "Sampler."),
    _k("OTEL_TRACES_SAMPLER_ARG", "tracing", "sampler_arg", ratio, 1.0, "Sampler ratio."),
    # The SDK's default; queued spans are kept compact (about 1 KB each, see tracing._compacting).
    _k("OTEL_BSP_MAX_QUEUE_SIZE", "tracing", "max_queue_size", positive_int, 2048,
       "Ended spans waiting for export; past it new spans are dropped."),
    # 1 s rather than the SDK's 5 s: fewer spans wait when the bot exits.
    _k("OTEL_BSP_SCHEDULE_DELAY", "tracing", "schedule_delay_ms", positive_int, 1000,
       "Milliseconds between two span exports."),
    _k("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "tracing", "max_export_batch_size", positive_int, 512,
       "Spans per OTLP request (at most OTEL_BSP_MAX_QUEUE_SIZE)."),
)

KEYS_BY_NAME = {key.name: key for key in KEYS}
SECRET_KEYS = frozenset(key.name for key in KEYS if key.secret)


# --------------------------------------------------------------------------- sections


class GeneralSettings(Record, frozen=True):
    state_dir: Path


class LoggingSettings(Record, frozen=True):
    enabled: bool
    dir: Path
    level: str
    max_size: int
    backup_count: int
    console: bool
    redact: bool


class ShippingSettings(Record, frozen=True):
    url: Secret | None
    api_key: Secret | None
    namespace: str
    batch_size: int
    interval: float
    queue_size: int
    spool_max_bytes: int
    shutdown_timeout: float


class AlertSettings(Record, frozen=True):
    enabled: bool
    retention_hours: float
    channels: dict[str, tuple[str, ...]]
    dedup_window: float
    rate_limit_per_minute: int
    webhook_url: Secret | None
    telegram_token: Secret | None
    telegram_chat_id: str | None
    telegram_api_url: str
    smtp_host: str | None
    smtp_port: int
    smtp_starttls: bool
    smtp_username: str | None
    smtp_password: Secret | None
    email_from: str | None
    email_to: tuple[str, ...]
    slack_webhook_url: Secret | None
    alertmanager_url: Secret | None
    disk_free_min_percent: float
    memory_max_percent: float
    process_memory_max: int
    resource_check_interval: float


class BackupSettings(Record, frozen=True):
    enabled: bool
    dir: Path
    frequency: str
    critical_paths: tuple[str, ...]
    retention: dict[str, int]
    compression: str
    encryption_key: Secret | None
    drill_interval: float


class ProfilerSettings(Record, frozen=True):
    enabled: bool
    threshold: float
    operations: tuple[str, ...] | None
    retention_hours: float
    window: int


class RecoverySettings(Record, frozen=True):
    enabled: bool
    auto_recovery: bool
    critical_paths: tuple[str, ...]
    check_interval: float


class MetricsSettings(Record, frozen=True):
    port: int | None
    addr: str
    auth_username: str | None
    auth_password: Secret | None


class TracingSettings(Record, frozen=True):
    enabled: bool
    service_name: str
    resource_attributes: dict[str, str]
    endpoint: str | None
    protocol: str
    sampler: str
    sampler_arg: float
    max_queue_size: int
    traces_endpoint: str | None
    timeout_ms: int
    sdk_disabled: bool
    schedule_delay_ms: int
    max_export_batch_size: int


_SECTIONS: dict[str, type] = {
    "general": GeneralSettings,
    "logging": LoggingSettings,
    "shipping": ShippingSettings,
    "alerts": AlertSettings,
    "backups": BackupSettings,
    "profiler": ProfilerSettings,
    "recovery": RecoverySettings,
    "metrics": MetricsSettings,
    "tracing": TracingSettings,
}


class Settings(Record, frozen=True):
    """Everything opsstack reads, typed and checked. Build it with :func:`load_settings`."""

    general: GeneralSettings
    logging: LoggingSettings
    shipping: ShippingSettings
    alerts: AlertSettings
    backups: BackupSettings
    profiler: ProfilerSettings
    recovery: RecoverySettings
    metrics: MetricsSettings
    tracing: TracingSettings
    sources: dict[str, str] = field(factory=dict, compare=False, repr=False)

    def value(self, name: str) -> Any:
        """The typed value of a flag by its name, e.g. ``settings.value("LOG_DIR")``."""
        key = KEYS_BY_NAME[name]
        return getattr(getattr(self, key.section), key.attr)

    def replace(self, **flags: Any) -> "Settings":
        """A copy with some flags changed (by flag name), checked like any other source."""
        values = {key.name: self.value(key.name) for key in KEYS}
        sources = dict(self.sources)
        for name, raw in flags.items():
            key = _known_key(name, "argument")
            values[name] = _parse(key, raw, "argument")
            sources[name] = "argument"
        return _build(values, sources)

    def describe(self) -> list[tuple[str, str, str]]:
        """``(flag, shown value, source)`` for every flag; secrets are masked."""
        rows = []
        for key in KEYS:
            value = self.value(key.name)
            shown = "****" if (key.secret and value is not None) else _show(value)
            rows.append((key.name, shown, self.sources.get(key.name, "default")))
        return rows

    def secret_values(self) -> tuple[str, ...]:
        """The plain text of every secret setting that is set, for the secret maskers."""
        values = (self.value(name) for name in sorted(SECRET_KEYS))
        return tuple(value.get() for value in values if value is not None)


def _show(value: Any) -> str:
    import json  # describe() only: not loaded on import

    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in value.items()})
    return json.dumps(value) if not isinstance(value, str) else value


def _known_key(name: str, source: str) -> Key:
    try:
        return KEYS_BY_NAME[name]
    except KeyError:
        raise ConfigError(name, source, None, "unknown setting") from None


def _parse(key: Key, raw: Any, source: str) -> Any:
    try:
        return key.parse(raw)
    except ValueError as exc:
        shown = "****" if key.secret else raw
        raise ConfigError(key.name, source, shown, str(exc)) from None


def _build(values: dict[str, Any], sources: dict[str, str]) -> Settings:
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key in KEYS:
        sections[key.section][key.attr] = values[key.name]
    built = {name: cls(**sections[name]) for name, cls in _SECTIONS.items()}
    return Settings(**built, sources=sources)


# --------------------------------------------------------------------------- sources


def _environment_values(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    for key in KEYS:
        if key.name in environ:
            found[key.name] = (environ[key.name], "environment")
        elif key.secret and f"{key.name}_FILE" in environ:
            file_name = environ[f"{key.name}_FILE"]
            source = f"file {file_name} (via {key.name}_FILE)"
            try:
                found[key.name] = (Path(file_name).read_text().strip(), source)
            except OSError as exc:
                raise ConfigError(f"{key.name}_FILE", "environment", file_name,
                                  f"cannot read the file: {exc.strerror}") from exc
    return found


def _file_values(config_file: Path) -> dict[str, tuple[Any, str]]:
    source = f"file {config_file}"
    if not config_file.is_file():
        raise ConfigError("config file", "argument", str(config_file), "no such file")
    if config_file.suffix == ".toml":
        import tomllib  # only for a TOML file

        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("config file", "argument", str(config_file), f"cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config file", "argument", str(config_file), f"invalid TOML: {exc}") from exc
        values = {}
        for name, raw in data.items():
            key = _known_key(name.upper(), source)
            values[key.name] = (raw, source)
    elif config_file.suffix == ".py":
        try:
            import runpy  # only for a config.py file

            namespace = runpy.run_path(str(config_file))
        except Exception as exc:  # a user's config module may raise anything; report it as config
            raise ConfigError("config file", "argument", str(config_file),
                              f"running it failed: {type(exc).__name__}: {exc}") from exc
        # A bot's config.py holds much else besides; only the flags opsstack knows are taken.
        values = {name: (raw, source) for name, raw in namespace.items() if name in KEYS_BY_NAME}
    else:
        raise ConfigError("config file", "argument", str(config_file), "must end in .py or .toml")
    for name in values:
        if KEYS_BY_NAME[name].secret:
            raise ConfigError(name, source, "****", "secrets are read from the environment only "
                              f"(set {name} or {name}_FILE)")
    return values


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: ``overrides`` > ``config_file`` > environment > defaults.

    ``config_file`` defaults to ``OPSSTACK_CONFIG`` from the environment when set.
    Raises :class:`ConfigError` naming the key, its source and its value.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {}
    raw.update(_environment_values(environ))
    file_name = config_file if config_file is not None else environ.get("OPSSTACK_CONFIG")
    if file_name:
        raw.update(_file_values(Path(file_name)))
    for name, value in (overrides or {}).items():
        raw[_known_key(name, "argument").name] = (value, "argument")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        if key.name in raw:
            value, source = raw[key.name]
            values[key.name] = _parse(key, value, source)
            sources[key.name] = source
        else:
            values[key.name] = key.parse(key.default) if key.default is not None else None
            sources[key.name] = "default"
    return _build(values, sources)


def default_settings() -> Settings:
    """Defaults only: no environment, no file. What a manager uses before it is configured."""
    return load_settings(environ={})
