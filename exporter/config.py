"""One frozen, typed settings object for every manager, built in one place.

Sources, highest first: explicit arguments, the environment (12-factor: over the file), a file
(a ``config.py`` module as in the design document, or TOML), the defaults below. Only this module
reads the environment. Every flag keeps the exact name of the design document (``LOG_DIR``,
``BACKUP_RETENTION``, ...) and is declared once, as the field of its section that it sets
(``settings.logging.dir``), with its parser, default and help; :data:`KEYS` is read from them.

Secrets (tokens, passwords, keys, URLs that may carry credentials) are accepted from the
environment only, directly or as ``<NAME>_FILE`` pointing at a file, and are held as
:class:`Secret` so that no ``repr``, log line or ``check-config`` output shows them.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._config_values import (  # noqa: F401 - the values, parsers and secrets, re-exported
    CHANNEL_NAMES, DEFAULT_CHANNELS, DEFAULT_RETENTION, FREQUENCIES, LOG_LEVELS, OTLP_PROTOCOLS,
    SAMPLERS, SEVERITY_NAMES, Bounded, Secret, aes_key, alert_channels, backup_retention,
    elasticsearch_credentials_clash, elasticsearch_url, host, integer, key_bytes, number, one_of,
    optional_string_list, optional_text, parse_bool, path, redis_url, resource_attributes, secret,
    show_value, size, string_list, text, url_has_credentials)
from ._config_schema import SECTIONS as _SECTIONS
from ._config_schema import Key, Section, flag
from ._extras import check_extras
from ._record import Record, field
from .errors import ConfigError


# --------------------------------------------------------------------------- the sections


def _scrape_instance(values: dict[str, Any]) -> str:
    port = values["METRICS_PORT"]  # the host name as socket.gethostname() gives it, without loading socket
    return os.uname().nodename + (f":{port}" if port else "")


DEFAULT_ELASTICSEARCH_URL = "http://localhost:9200"  # the design document's


def _default_elasticsearch_url(values: dict[str, Any]) -> Secret | None:
    return Secret(DEFAULT_ELASTICSEARCH_URL) if values["ENABLE_ELK_INTEGRATION"] else None


KiB, MiB, TiB = 1024, 1024**2, 1024**4
DAY = 86_400  # seconds


class GeneralSettings(Section, section="general"):
    state_dir: Path = flag("STATE_DIR", path, "state",
                           "Alert history, integrity baselines, retry queues, the log spool.")
    redis_url: Secret | None = flag("REDIS_URL", redis_url, None,
                                    "Redis shared by the bot's processes and hosts (locks); "
                                    "redis://, rediss:// or unix://.", secret=True)
    lock_ttl: float = flag("SHARED_LOCK_TTL", number(5, 3600, "seconds"), 60.0,
                           "Seconds a shared lock outlives its holder's last renewal (a killed "
                           "holder's lock then expires).")


class LoggingSettings(Section, section="logging"):
    enabled: bool = flag("ENABLE_ENHANCED_LOGGING", parse_bool, False, "Turn the logger manager on.")
    dir: Path = flag("LOG_DIR", path, "logs", "Directory of the JSON log files.")
    level: str = flag("LOG_LEVEL", one_of(LOG_LEVELS, upper=True), "INFO", "Lowest level written.")
    max_size: int = flag("LOG_MAX_SIZE", size(KiB, TiB), 10 * MiB, "Bytes before a log file rotates.")
    backup_count: int = flag("LOG_BACKUP_COUNT", integer(0, 10_000), 5, "Rotated files kept.")
    console: bool = flag("LOG_CONSOLE", parse_bool, True, "Also write ECS lines to stderr.")
    redact: bool = flag("LOG_REDACT_SECRETS", parse_bool, True, "Mask tokens and passwords in logs.")


class ShippingSettings(Section, section="shipping"):
    state_dir: Path = flag("LOG_SHIP_STATE_DIR", path, None,
                           "Where log shipping keeps its spool and dead letters (default: STATE_DIR).",
                           derive=lambda values: values["STATE_DIR"])
    enabled: bool = flag("ENABLE_ELK_INTEGRATION", parse_bool, None,
                         "Ship the logger manager's lines to Elasticsearch (default: on when "
                         "ELASTICSEARCH_URL is set).",
                         derive=lambda values: values["ELASTICSEARCH_URL"] is not None)
    url: Secret | None = flag("ELASTICSEARCH_URL", elasticsearch_url, None,
                              "Elasticsearch nodes of one cluster, comma-separated (default with "
                              f"ENABLE_ELK_INTEGRATION: {DEFAULT_ELASTICSEARCH_URL}); credentials in "
                              "it make it a secret, read from the environment only.",
                              secret=url_has_credentials, derive=_default_elasticsearch_url)
    api_key: Secret | None = flag("ELASTICSEARCH_API_KEY", secret, None,
                                  "API key for Elasticsearch (the base64 form Kibana shows).", secret=True)
    username: str | None = flag("ELASTICSEARCH_USERNAME", optional_text, None,
                                "User for Elasticsearch (basic authentication, with ELASTICSEARCH_PASSWORD).")
    password: Secret | None = flag("ELASTICSEARCH_PASSWORD", secret, None,
                                   "Password of ELASTICSEARCH_USERNAME.", secret=True)
    ca_certs: Path | None = flag("ELASTICSEARCH_CA_CERTS", path, None,
                                 "PEM file of the certificate authorities an https node's certificate is "
                                 "checked against (default: the system's).")
    namespace: str = flag("ELASTICSEARCH_NAMESPACE", text, "default",
                          "Logs go to the data set logs-bot-<namespace>.")
    batch_size: int = flag("LOG_SHIP_BATCH_SIZE", integer(1, 100_000), 2000, "Documents per _bulk request.")
    interval: float = flag("LOG_SHIP_INTERVAL", number(0.01, 3600, "seconds"), 1.0,
                           "Seconds between flushes.")
    queue_size: int = flag("LOG_SHIP_QUEUE_SIZE", integer(1, 10_000_000), 50_000,
                           "Records held in memory (about 0.5 KB each); what the node cannot take "
                           "yet goes to the spool.")
    spool_max_bytes: int = flag("LOG_SPOOL_MAX_BYTES", size(KiB, TiB), 256 * MiB,
                                "On-disk spool limit while Elasticsearch is down.")
    # Within 2 s of a bot without opsstack, with the slack the sink allows past it; what is not
    # sent by then waits in the spool for the next start.
    shutdown_timeout: float = flag("LOG_SHUTDOWN_TIMEOUT", number(0.01, 3600, "seconds"), 1.0,
                                   "Seconds the exit waits to flush logs.")


class AlertSettings(Section, section="alerts"):
    enabled: bool = flag("ENABLE_ALERT_SYSTEM", parse_bool, False, "Turn the alert manager on.")
    retention_hours: float = flag("ALERT_RETENTION_HOURS", number(0.01, 87_600, "hours"), 24.0,
                                  "Hours alerts are kept.")
    channels: dict[str, tuple[str, ...]] = flag("ALERT_CHANNELS", alert_channels, DEFAULT_CHANNELS,
                                                "Channels per severity.")
    dedup_window: float = flag("ALERT_DEDUP_WINDOW", number(0.01, 30 * DAY, "seconds"), 300.0,
                               "Seconds in which a repeated alert is counted, not re-sent.")
    shared_gather: float = flag("ALERT_SHARED_GATHER", number(0.01, 60, "seconds"), 2.0,
                                "With REDIS_URL: seconds the first worker raising an alert waits "
                                "for the others raising it, so that one notification carries their "
                                "count.")
    rate_limit_per_minute: int = flag("ALERT_RATE_LIMIT", integer(1, 100_000), 20,
                                      "Messages per channel per minute.")
    webhook_url: Secret | None = flag("ALERT_WEBHOOK_URL", secret, None, "Webhook channel URL.", secret=True)
    telegram_token: Secret | None = flag("TELEGRAM_BOT_TOKEN", secret, None,
                                         "Telegram bot token.", secret=True)
    telegram_chat_id: str | None = flag("TELEGRAM_CHAT_ID", optional_text, None, "Telegram chat for alerts.")
    telegram_api_url: str = flag("TELEGRAM_API_URL", text, "https://api.telegram.org", "Bot API base URL.")
    smtp_host: str | None = flag("SMTP_HOST", optional_text, None, "SMTP server for the e-mail channel.")
    smtp_port: int = flag("SMTP_PORT", integer(1, 65_535), 587, "SMTP port.")
    smtp_starttls: bool = flag("SMTP_STARTTLS", parse_bool, True, "Use STARTTLS.")
    smtp_username: str | None = flag("SMTP_USERNAME", optional_text, None, "SMTP login.")
    smtp_password: Secret | None = flag("SMTP_PASSWORD", secret, None, "SMTP password.", secret=True)
    email_from: str | None = flag("ALERT_EMAIL_FROM", optional_text, None, "Sender address.")
    email_to: tuple[str, ...] = flag("ALERT_EMAIL_TO", string_list, (), "Recipient addresses.")
    slack_webhook_url: Secret | None = flag("SLACK_WEBHOOK_URL", secret, None,
                                            "Slack incoming webhook.", secret=True)
    discord_webhook_url: Secret | None = flag("DISCORD_WEBHOOK_URL", secret, None,
                                              "Discord channel webhook.", secret=True)
    alertmanager_url: Secret | None = flag("ALERTMANAGER_URL", secret, None, "Alertmanager base URLs, "
                                           "comma-separated (each of a cluster gets every alert).",
                                           secret=True)
    alertmanager_resend_interval: float = flag("ALERTMANAGER_RESEND_INTERVAL", number(0.1, 3600, "seconds"),
                                               60.0, "Seconds between two sends of a firing alert.")
    alertmanager_instance: str = flag("ALERTMANAGER_INSTANCE", text, None,
                                      "The instance label of alerts sent to Alertmanager: the bot's "
                                      "scrape target (default: <host name>:<METRICS_PORT>).",
                                      derive=_scrape_instance)
    celery_broker_url: Secret | None = flag("CELERY_BROKER_URL", secret, None,
                                            "Celery broker of the celery alert channel (it may hold "
                                            "a password).", secret=True)
    celery_task: str | None = flag("ALERT_CELERY_TASK", optional_text, None,
                                   "Task the celery alert channel sends each alert to (keyword "
                                   "arguments status, alert).")
    disk_free_min_percent: float = flag("DISK_FREE_MIN_PERCENT", number(0, 100, "percent"), 10.0,
                                        "DISK_FULL below this free space.")
    memory_max_percent: float = flag("MEMORY_MAX_PERCENT", number(0, 100, "percent"), 90.0,
                                     "MEMORY_HIGH above this system memory use.")
    process_memory_max: int = flag("PROCESS_MEMORY_MAX", size(MiB, 64 * TiB), 2048 * MiB,
                                   "MEMORY_HIGH above this process RSS.")
    resource_check_interval: float = flag("RESOURCE_CHECK_INTERVAL", number(0.01, DAY, "seconds"), 60.0,
                                          "Seconds between disk and memory checks.")


class BackupSettings(Section, section="backups"):
    enabled: bool = flag("ENABLE_BACKUP_SYSTEM", parse_bool, False, "Turn the backup manager on.")
    dir: Path = flag("BACKUP_DIR", path, "backups", "Where archives and manifests go.")
    frequency: str = flag("BACKUP_FREQUENCY", one_of(FREQUENCIES), "daily", "Scheduled backups.")
    critical_paths: tuple[str, ...] = flag("CRITICAL_BACKUP_PATHS", string_list, (),
                                           "What scheduled backups save.")
    retention: dict[str, int] = flag("BACKUP_RETENTION", backup_retention, DEFAULT_RETENTION,
                                     "Backups kept per tier (grandfather-father-son).")
    compression: str = flag("BACKUP_COMPRESSION", one_of(("zstd", "gzip", "none")), "zstd",
                            "Archive compression.")
    encryption_key: Secret | None = flag("BACKUP_ENCRYPTION_KEY", aes_key, None,
                                         "AES-256-GCM key (64 hex characters) to encrypt backups.",
                                         secret=True)
    scheduler: str = flag("BACKUP_SCHEDULER", one_of(("in-process", "celery")), "in-process",
                          "Who runs scheduled backups: the in-process scheduler, or Celery beat "
                          "(then enable() starts none).")
    drill_interval: float = flag("BACKUP_DRILL_INTERVAL", Bounded("number", 60, 366 * DAY, "seconds", off=0),
                                 7 * DAY, "Seconds between restore drills of the newest backup "
                                 "while backups are scheduled (0: none).")


class ProfilerSettings(Section, section="profiler"):
    enabled: bool = flag("ENABLE_PROFILER", parse_bool, False, "Turn the profiler on.")
    threshold: float = flag("PROFILE_THRESHOLD", number(0.000_001, DAY, "seconds"), 1.0,
                            "Seconds above which it is slow.")
    operations: tuple[str, ...] | None = flag("PROFILED_OPERATIONS", optional_string_list, None,
                                              "Only these operations are measured (empty: all).")
    retention_hours: float = flag("PROFILER_RETENTION_HOURS", number(0.01, 87_600, "hours"), 24.0,
                                  "Hours samples stay in the statistics.")
    window: int = flag("PROFILER_WINDOW", integer(1, 1_000_000), 2048, "Samples kept per operation.")
    max_operations: int = flag("PROFILER_MAX_OPERATIONS", integer(1, 10_000), 200,
                               "Distinct operations measured; the ones past it are recorded as "
                               "operation=\"other\".")


class RecoverySettings(Section, section="recovery"):
    enabled: bool = flag("ENABLE_RECOVERY_MANAGER", parse_bool, False, "Turn the recovery manager on.")
    auto_recovery: bool = flag("ENABLE_AUTO_RECOVERY", parse_bool, False,
                               "Repair damaged critical paths from verified backups.")
    critical_paths: tuple[str, ...] = flag("RECOVERY_CRITICAL_PATHS", string_list, (), "Paths checked.")
    check_interval: float = flag("INTEGRITY_CHECK_INTERVAL", number(0.01, 30 * DAY, "seconds"), 3600.0,
                                 "Seconds between periodic integrity checks.")


class MetricsSettings(Section, section="metrics"):
    port: int | None = flag("METRICS_PORT", Bounded("integer", 0, 65_535, optional=True), None,
                            "Serve /metrics from the bot on this port (unset: not served).")
    addr: str = flag("METRICS_ADDR", host, "127.0.0.1", "Address /metrics binds to.")
    auth_username: str | None = flag("METRICS_AUTH_USERNAME", optional_text, None, "Basic auth user.")
    auth_password: Secret | None = flag("METRICS_AUTH_PASSWORD", secret, None,
                                        "Basic auth password.", secret=True)


class TracingSettings(Section, section="tracing"):
    enabled: bool = flag("ENABLE_TRACING", parse_bool, False, "Export OpenTelemetry spans over OTLP.")
    service_name: str = flag("OTEL_SERVICE_NAME", text, "telegram-bot",
                             "service.name of spans and log lines (over service.name in "
                             "OTEL_RESOURCE_ATTRIBUTES).")
    resource_attributes: dict[str, str] = flag(
        "OTEL_RESOURCE_ATTRIBUTES", resource_attributes, {},
        "Attributes of spans and log lines, e.g. deployment.environment.name=production,host.name=bot-1.")
    endpoint: str | None = flag("OTEL_EXPORTER_OTLP_ENDPOINT", optional_text, None,
                                "OTLP endpoint (default of the SDK: localhost:4317 / :4318).")
    traces_endpoint: str | None = flag("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", optional_text, None,
                                       "OTLP endpoint for spans, used as is (over OTEL_EXPORTER_OTLP_ENDPOINT).")
    # Milliseconds, as the specification says. 1 s rather than the SDK's 10 s keeps the bot's
    # exit bounded when the Collector is away (tracing.shutdown waits 1.5 s at most).
    timeout_ms: int = flag("OTEL_EXPORTER_OTLP_TIMEOUT", integer(1, 600_000, "milliseconds"), 1000,
                           "Milliseconds for one OTLP export.")
    sdk_disabled: bool = flag("OTEL_SDK_DISABLED", parse_bool, False,
                              "Tracing off whatever ENABLE_TRACING says (the specification's kill switch).")
    # http/protobuf is the OpenTelemetry specification's default, and it spares the bot the
    # ~11 MiB that loading gRPC costs.
    protocol: str = flag("OTEL_EXPORTER_OTLP_PROTOCOL", one_of(OTLP_PROTOCOLS), "http/protobuf",
                         "OTLP protocol.")
    sampler: str = flag("OTEL_TRACES_SAMPLER", one_of(SAMPLERS), "parentbased_always_on", "Sampler.")
    sampler_arg: float = flag("OTEL_TRACES_SAMPLER_ARG", number(0, 1), 1.0, "Sampler ratio.")
    # The SDK's default; queued spans are kept compact (about 1 KB each, see tracing._compacting).
    max_queue_size: int = flag("OTEL_BSP_MAX_QUEUE_SIZE", integer(1, 1_000_000), 2048,
                               "Ended spans waiting for export; past it new spans are dropped.")
    # 1 s rather than the SDK's 5 s: fewer spans wait when the bot exits.
    schedule_delay_ms: int = flag("OTEL_BSP_SCHEDULE_DELAY", integer(1, 3_600_000, "milliseconds"), 1000,
                                  "Milliseconds between two span exports.")
    max_export_batch_size: int = flag("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", integer(1, 1_000_000), 512,
                                      "Spans per OTLP request (at most OTEL_BSP_MAX_QUEUE_SIZE).")
    # TLS and credentials of OTLP over HTTP, the specification's names, each signal's own over the
    # general one as the SDK reads them: the exporter is given its transport (tracing._http_transport),
    # so the SDK no longer reads these itself.
    certificate: str | None = flag("OTEL_EXPORTER_OTLP_CERTIFICATE", optional_text, None,
                                   "CA bundle that verifies the Collector's TLS certificate.")
    client_key: str | None = flag("OTEL_EXPORTER_OTLP_CLIENT_KEY", optional_text, None,
                                  "Client private key for mutual TLS to the Collector.")
    client_certificate: str | None = flag("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", optional_text, None,
                                          "Client certificate for mutual TLS to the Collector.")
    traces_certificate: str | None = flag(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", optional_text, None, "CA bundle for spans.",
        derive=lambda values: values["OTEL_EXPORTER_OTLP_CERTIFICATE"])
    traces_client_key: str | None = flag(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", optional_text, None, "Client key for spans.",
        derive=lambda values: values["OTEL_EXPORTER_OTLP_CLIENT_KEY"])
    traces_client_certificate: str | None = flag(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", optional_text, None, "Client certificate for spans.",
        derive=lambda values: values["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"])
    credential_provider: str | None = flag(
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER", optional_text, None,
        "Entry point of a requests session for OTLP over HTTP (the SDK's own; requests is then loaded).",
        derive=lambda values: values["OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER"])
    any_credential_provider: str | None = flag(
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", optional_text, None,
        "The same for every signal.")


KEYS: tuple[Key, ...] = tuple(key for section in _SECTIONS.values() for key in section.keys)
KEYS_BY_NAME = {key.name: key for key in KEYS}
SECRET_KEYS = frozenset(key.name for key in KEYS if key.secret)


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
        sources = dict(self.sources)
        values = {key.name: None if key.derive and sources.get(key.name, "default") == "default"
                  else self.value(key.name) for key in KEYS}
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
            shown = "****" if key.hides(value) else show_value(value)
            rows.append((key.name, shown, self.sources.get(key.name, "default")))
        return rows

    def secret_values(self) -> tuple[str, ...]:
        """The plain text of every secret setting that is set, for the secret maskers."""
        values = ((KEYS_BY_NAME[name], self.value(name)) for name in sorted(SECRET_KEYS))
        return tuple(value.get() for key, value in values if key.hides(value))


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
    _check_elasticsearch_credentials(values, sources)
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key in KEYS:
        value = values[key.name]
        if value is None and key.derive is not None:
            value = key.derive(values)
        sections[key.section][key.attr] = value
    built = {name: cls(**sections[name]) for name, cls in _SECTIONS.items()}
    settings = Settings(**built, sources=sources)
    check_extras(settings)  # a missing client of an enabled feature names its extra
    return settings


def _check_elasticsearch_credentials(values: dict[str, Any], sources: dict[str, str]) -> None:
    clash = elasticsearch_credentials_clash(values)
    if clash is not None:
        name, reason = clash
        shown = "****" if KEYS_BY_NAME[name].secret else values[name]
        raise ConfigError(name, sources.get(name, "default"), shown, reason)


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


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: ``overrides`` > environment > ``config_file`` > defaults.

    ``config_file`` defaults to ``OPSSTACK_CONFIG`` from the environment when set.
    Raises :class:`ConfigError` naming the key, its source and its value, or naming the extra
    to install when an enabled feature's client is missing.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {}
    file_name = config_file if config_file is not None else environ.get("OPSSTACK_CONFIG")
    if file_name:
        from ._config_file import file_values  # only with a config file

        raw.update(file_values(Path(file_name), KEYS_BY_NAME))
    raw.update(_environment_values(environ))
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
