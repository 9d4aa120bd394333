"""Helpers shared by the channels: required settings, HTTP posting, secret masking, text."""
from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .._masking import SecretMasker
from ..errors import ChannelConfigError, DeliveryError

if TYPE_CHECKING:
    from ..config import AlertSettings, Secret

_masker = SecretMasker()
_masker_lock = threading.Lock()
MIN_MASKED_PATH = 12  # a shorter URL path ("/hook") carries no token and would mask too much


class _MaskSecrets(logging.Filter):
    """Replaces registered secrets in records of the HTTP client's loggers (URLs carry tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        masker = _masker
        if masker.values:
            record.msg, record.args = masker.mask(record.getMessage()), None
        return True


_filter = _MaskSecrets()


def mask(secret: Secret | str) -> None:
    """Never let ``secret`` reach a log line of httpx/httpcore. A URL is also masked as httpx
    writes it (scheme and host lower-cased, default port dropped, characters %-encoded) and
    by its path and query, where its token is."""
    global _masker
    value = secret if isinstance(secret, str) else secret.get()
    forms = {value}
    if "://" in value:
        import httpx

        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:  # not a URL httpx could send to either
            pass
        else:
            path = url.raw_path.decode("ascii")
            forms.update([str(url)] + ([path] if len(path) >= MIN_MASKED_PATH else []))
    with _masker_lock:  # a new masker, not changed in place: a filter running meanwhile keeps its own
        _masker = _masker.plus(forms)
        for name in ("httpx", "httpcore"):
            logger = logging.getLogger(name)
            if _filter not in logger.filters:
                logger.addFilter(_filter)


def require(alerts: AlertSettings, channel: str, key: str, attr: str, what: str) -> Any:
    """The value of a setting a channel cannot work without, else the error naming its flag."""
    value = getattr(alerts, attr)
    if value in (None, "", ()):
        raise ChannelConfigError(key, "default", None, f"the {channel} alert channel needs {what}; set {key}")
    return value


# Answers that mean "this message will never be accepted": retrying them would block the queue.
PERMANENT_STATUS = frozenset({400, 404, 405, 413, 422})


def delivery_error(message: str, permanent: bool = False, retry_after: float | None = None) -> DeliveryError:
    """A DeliveryError; ``permanent`` ones are dropped (and counted) instead of retried, and
    ``retry_after`` (seconds the receiver asked to wait) delays the next try at least that long."""
    error = DeliveryError(message)
    error.permanent = permanent
    error.retry_after = retry_after
    return error


def retry_after_header(value: str | None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` header (its seconds form), else None."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 86400 else None


SEVERITY_MARK = {"low": "ℹ️", "medium": "⚠️", "high": "🔶", "critical": "🚨"}


def plain_text(alert, resolved: bool = False) -> str:
    """A short human message used by e-mail, Slack and the log."""
    head = "RESOLVED" if resolved else alert.severity.value.upper()
    lines = [f"[{head}] {alert.title}", alert.message, f"type: {alert.type.value}"]
    if alert.task_id:
        lines.append(f"task: {alert.task_id}")
    if alert.repeat_count > 1:
        lines.append(f"repeated {alert.repeat_count} times since {alert.to_dict()['first_seen_iso']}")
    for key, value in sorted(alert.details.items()):
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities (which JSON cannot carry) written as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def one_line(text: str) -> str:
    """``text`` with its line breaks made spaces (for a header or a title)."""
    return " ".join(text.splitlines())


class HttpPoster:
    """One lazily created ``httpx.AsyncClient`` (made on the worker loop on first use)."""

    def __init__(self, channel: str, timeout: float = 10.0) -> None:
        self.channel = channel
        self.timeout = timeout
        self._client = None

    async def post(self, url: str, payload: Any, check: bool = True) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._client.post(url, json=json_safe(payload))
        except httpx.HTTPError as exc:
            # The exception text holds the URL, which may carry a token: keep only its kind.
            raise DeliveryError(f"{self.channel}: {type(exc).__name__} (receiver unreachable)") from None
        if check and response.status_code >= 400:
            raise delivery_error(f"{self.channel}: the receiver answered HTTP {response.status_code}",
                                 permanent=response.status_code in PERMANENT_STATUS,
                                 retry_after=retry_after_header(response.headers.get("Retry-After")))
        return response

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class OwnThread:
    """The blocking calls of one channel's client (smtplib, Celery's), on a thread of its own,
    made at first use. A call that hangs (a broker suspended, a server that stops answering)
    then holds up that channel alone: on the loop's default executor, the lane's retries piled
    up hung calls until they took every thread, and the other channels' blocking clients and
    DNS look-ups waited behind them. One call runs at a time; one given up before it ran is
    dropped (the lane cancels it), so at most one waits behind a hung one."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"opsstack-{self.channel}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
