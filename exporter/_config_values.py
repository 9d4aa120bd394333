"""The values of the settings: the names they may take, secrets, and the parsers that turn a
raw value (a string from the environment, a Python or TOML value from a file or an argument)
into a typed one or raise ValueError with the reason. :mod:`exporter.config` declares the flags
with them; import them from there."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from .channels import CHANNELS

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


_INF = float("inf")


def _number(raw: Any, kind: type) -> int | float:
    """A finite int or float from a number or its text; NaN, infinities and 1e999 are refused."""
    if isinstance(raw, bool):
        raise ValueError(f"must be a number, not {raw!r}")
    if isinstance(raw, (int, float)):
        value = raw
    else:
        try:
            value = kind(str(raw).strip())
        except ValueError:
            raise ValueError(f"must be a{'n integer' if kind is int else ' number'}") from None
    if isinstance(value, float) and not -_INF < value < _INF:
        raise ValueError("must be a finite number")
    if kind is int and value != int(value):
        raise ValueError("must be an integer")
    try:
        return kind(value)
    except OverflowError:  # an int too large for a float
        raise ValueError("is out of range") from None


def _size(raw: Any) -> int:
    """Bytes from an integer or a string such as ``10MiB`` / ``512k``."""
    if isinstance(raw, str):
        text = raw.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits):]
        if unit not in _SIZE_UNITS or not digits:
            raise ValueError("must be a size in bytes such as 10485760 or 10MiB")
        try:
            raw = _number(digits, float) * _SIZE_UNITS[unit]
        except ValueError:
            raise ValueError("must be a size in bytes such as 10485760 or 10MiB") from None
        raw = int(raw)
    return _number(raw, int)


class Bounded:
    """A number parser with inclusive bounds, ``low <= value <= high``: every numeric flag has
    one, so no value can stop a thread later (an interval of ``inf`` or ``1e300`` ends a
    ``wait()``). ``optional`` also takes an empty value as None."""

    __slots__ = ("kind", "low", "high", "unit", "optional", "off")

    def __init__(self, kind: str, low: int | float, high: int | float, unit: str = "",
                 optional: bool = False, off: int | float | None = None) -> None:
        self.kind, self.low, self.high, self.unit = kind, low, high, unit
        self.optional, self.off = optional, off  # off: a value outside the range meaning "none"

    def __call__(self, raw: Any) -> int | float | None:
        if self.optional and (raw is None or (isinstance(raw, str) and raw.strip() == "")):
            return None
        value = _size(raw) if self.kind == "size" else _number(raw, int if self.kind == "integer" else float)
        if not (self.low <= value <= self.high or value == self.off):
            raise ValueError(f"must be {self.range_text()}")
        return value

    def range_text(self) -> str:
        """``from 0.01 to 3600 seconds``, ``from 1 KiB to 1 TiB``, ``0 (off) or from 60 to ...``:
        for error messages and the README."""
        show = self._show_size if self.kind == "size" else self._plain
        off = "" if self.off is None else f"{show(self.off)} (off) or "
        unit = f" {self.unit}" if self.unit else ""
        return f"{off}from {show(self.low)} to {show(self.high)}{unit}"

    @staticmethod
    def _plain(n: int | float) -> str:
        return str(int(n)) if n == int(n) else f"{n:f}".rstrip("0")

    @staticmethod
    def _show_size(n: int) -> str:
        for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if n >= factor and n % factor == 0:
                return f"{n // factor} {unit}"
        return f"{n} bytes"


# integer(low, high), number(low, high, unit), size(low, high): a size in bytes is an integer or a
# string such as 10MiB / 512k. (Partials: a function each would cost the import more.)
integer = partial(Bounded, "integer")
number = partial(Bounded, "number")
size = partial(Bounded, "size")


def text(raw: Any) -> str:
    if not isinstance(raw, (str, Path)):
        raise ValueError("must be a string")
    value = str(raw)
    if "\x00" in value:  # no path, address or name holds one; os and socket calls refuse it
        raise ValueError("must not contain a NUL character")
    return value


def optional_text(raw: Any) -> str | None:
    if raw is None:
        return None
    value = text(raw).strip()
    return value or None


def host(raw: Any) -> str:
    """A host name or an IP address (whether it resolves is found when binding)."""
    value = text(raw).strip()
    if not value or any(char.isspace() or char == "/" for char in value):
        raise ValueError("must be a host name or an IP address")
    return value


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
        items = [text(item).strip() for item in raw.split(",")]
        return tuple(item for item in items if item)
    if isinstance(raw, (list, tuple)) and all(isinstance(item, (str, Path)) for item in raw):
        return tuple(text(item) for item in raw)
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
            result[tier] = _RETENTION_COUNT(count)
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
    result = dict(DEFAULT_CHANNELS)
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


def redis_url(raw: Any) -> Secret | None:
    value = secret(raw)
    if value is not None and not value.get().startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


def elasticsearch_url(raw: Any) -> Secret | None:
    """The nodes of one cluster, ``http://host:port`` or ``https://host[:port]`` separated by
    commas, each may carry ``user:password@`` (then the value is a secret: see
    :func:`url_has_credentials`). Held as one :class:`Secret` of the comma-separated URLs."""
    value = secret(raw)
    if value is None:
        return None
    from urllib.parse import urlsplit  # loaded only when shipping is configured

    urls = [part.strip() for part in value.get().split(",")]
    for url in urls:
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or parts.scheme == "https")
        except ValueError:  # a port that is not a number or out of range
            valid = False
        if not valid:
            raise ValueError("expected http://host:port or https://host[:port], several separated by commas")
    return Secret(",".join(urls))


def url_has_credentials(value: Secret) -> bool:
    """Whether a URL (or comma-separated URLs) holds ``user[:password]@``."""
    return any("@" in url.partition("://")[2].partition("/")[0] for url in value.get().split(","))


def elasticsearch_credentials_clash(values: dict[str, Any]) -> tuple[str, str] | None:
    """``(flag, reason)`` when the Elasticsearch sign-in flags clash (by flag name, parsed): one
    way at a time, an API key, a user and password, or the URL's own ``user:password@``."""
    username, password = values["ELASTICSEARCH_USERNAME"], values["ELASTICSEARCH_PASSWORD"]
    if (username is None) != (password is None):
        name = "ELASTICSEARCH_PASSWORD" if username is None else "ELASTICSEARCH_USERNAME"
        return name, "ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD go together"
    api_key, url = values["ELASTICSEARCH_API_KEY"], values["ELASTICSEARCH_URL"]
    if api_key is not None and username is not None:
        return "ELASTICSEARCH_API_KEY", "set either it or ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD"
    if url is not None and (api_key is not None or username is not None) and url_has_credentials(url):
        return "ELASTICSEARCH_URL", "holds credentials as well as ELASTICSEARCH_API_KEY or ELASTICSEARCH_USERNAME"
    return None


DEFAULT_RETENTION = {"hourly": 24, "daily": 30, "weekly": 12, "manual": 20}
_RETENTION_COUNT = integer(0, 100_000)
DEFAULT_CHANNELS = {severity: ("log",) for severity in SEVERITY_NAMES}


def show_value(value: Any) -> str:
    """A typed value as ``check-config`` shows it (a Secret only when it holds none)."""
    import json  # describe() only: not loaded on import

    if isinstance(value, (Path, Secret)):  # a Secret shown is one that holds none (a URL without credentials)
        return value.get() if isinstance(value, Secret) else str(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in value.items()})
    return json.dumps(value) if not isinstance(value, str) else value
