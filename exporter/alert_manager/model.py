"""The alert value, its type and severity, and the fingerprint that folds repeats."""
from __future__ import annotations

import enum
import os
import re
from typing import TYPE_CHECKING, Any

from .._record import Record, field
from ..errors import AlertError

if TYPE_CHECKING:  # datetime (a C extension, ~0.5 MiB) loads with the first timestamp shown
    from datetime import datetime

FIRING, RESOLVED = "firing", "resolved"  # what a notification says of an alert


class AlertSeverity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {AlertSeverity.LOW: 0, AlertSeverity.MEDIUM: 1, AlertSeverity.HIGH: 2, AlertSeverity.CRITICAL: 3}


class AlertType(str, enum.Enum):
    DOWNLOAD_FAILED = "download_failed"
    UPLOAD_FAILED = "upload_failed"
    DISK_FULL = "disk_full"
    MEMORY_HIGH = "memory_high"
    API_ERROR = "api_error"
    RATE_LIMITED = "rate_limited"
    BACKUP_FAILED = "backup_failed"
    INTEGRITY_FAILED = "integrity_failed"
    SLOW_OPERATION = "slow_operation"
    CUSTOM = "custom"


def _parse(enum_cls: type[enum.Enum], value: Any, what: str) -> Any:
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        name = value.strip()
        for member in enum_cls:
            if name.lower() in (member.value, member.name.lower()):
                return member
    choices = ", ".join(member.value for member in enum_cls)
    raise AlertError(f"unknown alert {what} {value!r}; {what}s are {choices}")


def parse_type(value: Any) -> AlertType:
    """An :class:`AlertType` from a member or its name/value (any case); AlertError otherwise."""
    return _parse(AlertType, value, "type")


def parse_severity(value: Any) -> AlertSeverity:
    return _parse(AlertSeverity, value, "severity")


_HEX_OR_UUID = re.compile(r"\b(?:[0-9a-f]{8,}|[0-9a-f]{8}-[0-9a-f-]{27})\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")


def normalise_message(message: str) -> str:
    """Lower case, ids and numbers replaced, spaces collapsed: "retry after 3 s" == "... 5 s"."""
    text = _HEX_OR_UUID.sub("<id>", message.lower())
    text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip()


def fingerprint(alert_type: AlertType, message: str, task_id: str | None = None,
                labels: dict[str, str] | None = None) -> str:
    """Stable identity of "the same problem": type, task (or labels) and normalised message."""
    parts = [alert_type.value, task_id or ""]
    if labels:
        parts.extend(f"{key}={labels[key]}" for key in sorted(labels))
    parts.append(normalise_message(message))
    import hashlib  # OpenSSL (~3.5 MiB): loaded with the first alert, not on import

    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    return os.urandom(8).hex()


class Alert(Record):
    """One alert. ``first_seen``/``last_seen`` and ``repeat_count`` record folded repeats."""

    type: AlertType
    severity: AlertSeverity
    title: str
    message: str
    first_seen: float
    task_id: str | None = None
    details: dict[str, Any] = field(factory=dict)
    fingerprint: str = ""
    id: str = field(factory=_new_id)
    last_seen: float = 0.0
    repeat_count: int = 1
    resolved_at: float | None = None
    notified_at: float | None = None

    def __post_init__(self) -> None:
        if not self.last_seen:
            self.last_seen = self.first_seen
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.type, self.message, self.task_id)

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def timestamp(self) -> datetime:
        from datetime import datetime, timezone

        return datetime.fromtimestamp(self.first_seen, timezone.utc)

    def to_dict(self) -> dict[str, Any]:
        import copy

        data = self._asdict()
        data["details"] = copy.deepcopy(self.details)
        data["type"] = self.type.value
        data["severity"] = self.severity.value
        data["resolved"] = self.resolved
        data["first_seen_iso"] = _iso(self.first_seen)
        data["last_seen_iso"] = _iso(self.last_seen)
        data["resolved_at_iso"] = _iso(self.resolved_at)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Alert":
        return cls(
            type=parse_type(data["type"]), severity=parse_severity(data["severity"]),
            title=str(data["title"]), message=str(data["message"]),
            first_seen=float(data["first_seen"]), task_id=data.get("task_id"),
            details=dict(data.get("details") or {}), fingerprint=str(data.get("fingerprint") or ""),
            id=str(data["id"]), last_seen=float(data.get("last_seen") or data["first_seen"]),
            repeat_count=int(data.get("repeat_count") or 1), resolved_at=data.get("resolved_at"),
            notified_at=data.get("notified_at"),
        )

    def copy(self) -> "Alert":
        return Alert(**{**self._asdict(), "details": dict(self.details)})
