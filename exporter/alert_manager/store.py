"""Alert history: in memory for queries, an append-only JSONL file so it survives a restart.

Each line is a full snapshot of one alert; a later line for the same id replaces an earlier
one. The file is rewritten (temp file, fsync, replace) only when pruning or compacting.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._files import make_dirs, replace_file
from .model import Alert, AlertSeverity, AlertType, parse_severity, parse_type

log = logging.getLogger("exporter.alert_manager")

HISTORY_FILE = "alerts.jsonl"
OUTBOX_FILE = "alert_outbox.jsonl"


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Replace ``path`` with ``lines`` (see :func:`replace_file`)."""
    replace_file(path, "".join(lines).encode("utf-8"))


def ensure_state_dir(path: Path) -> Path:
    make_dirs(path)
    return path


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a JSONL file and the count of lines that did not parse (a torn tail)."""
    records, bad = [], 0
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:  # a damaged byte spoils one line
            for line in handle:
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    bad += 1
    except FileNotFoundError:
        pass
    return records, bad


class AlertStore:
    """Alerts by id, bounded to ``max_alerts`` (oldest evicted first, and counted)."""

    def __init__(self, retention_hours: float, max_alerts: int = 10_000) -> None:
        self.retention = retention_hours * 3600.0
        self.max_alerts = max_alerts
        self.alerts: dict[str, Alert] = {}  # insertion order = age order
        self.evicted = 0
        self.lock = threading.Lock()
        # Raises per minute of the last hour, by (type, severity): what "last_hour" counts (an
        # alert's repeat_count also holds repeats from before the hour).
        self.minutes: dict[int, Counter[tuple[str, str]]] = {}

    def count(self, now: float, alert_type: str, severity: str) -> None:
        """Count one raise (a new alert or a repeat) at ``now`` (the caller holds ``lock``)."""
        minute = int(now // 60)
        bucket = self.minutes.get(minute)
        if bucket is None:
            bucket = self.minutes[minute] = Counter()
            for old in [m for m in self.minutes if m <= minute - 60]:
                del self.minutes[old]
        bucket[(alert_type, severity)] += 1

    # -- changes (the caller holds ``lock``)
    def add(self, alert: Alert) -> list[Alert]:
        """Keep ``alert``; return the oldest alerts evicted to stay within ``max_alerts``."""
        self.alerts[alert.id] = alert
        evicted = []
        while len(self.alerts) > self.max_alerts:
            evicted.append(self.alerts.pop(next(iter(self.alerts))))
            self.evicted += 1
        return evicted

    def prune(self, now: float) -> list[Alert]:
        """Forget the alerts resolved and unseen for the retention; a firing one stays (its
        resolution is still to be sent)."""
        cutoff = now - self.retention
        gone = [alert for alert in self.alerts.values() if alert.last_seen < cutoff and alert.resolved]
        for alert in gone:
            del self.alerts[alert.id]
        return gone

    # -- file
    def load(self, path: Path, now: float) -> int:
        """Read the history file; returns the number of unreadable lines skipped."""
        records, bad = read_jsonl(path)
        for record in records:
            try:
                alert = Alert.from_dict(record)
            except (KeyError, TypeError, ValueError, Exception) as exc:  # one bad line != lost history
                log.warning("skipping an unreadable alert record: %s", type(exc).__name__)
                bad += 1
                continue
            self.alerts.pop(alert.id, None)
            self.add(alert)
        self.prune(now)
        if bad:
            log.warning("alert history %s: skipped %d unreadable line(s)", path, bad)
        return bad

    def compact(self, path: Path) -> None:
        with self.lock:
            lines = [json.dumps(alert.to_dict(), separators=(",", ":")) + "\n" for alert in self.alerts.values()]
        write_atomic(path, lines)

    # -- queries
    def query(self, limit: int | None = 100, severity: Any = None, alert_type: Any = None,
              since: float | None = None, include_resolved: bool = True) -> list[Alert]:
        severity = parse_severity(severity) if severity is not None else None
        alert_type = parse_type(alert_type) if alert_type is not None else None
        with self.lock:
            candidates = list(self.alerts.values())
        found = []
        for alert in sorted(candidates, key=lambda a: a.last_seen, reverse=True):
            if severity is not None and alert.severity is not severity:
                continue
            if alert_type is not None and alert.type is not alert_type:
                continue
            if since is not None and alert.last_seen < since:
                continue
            if not include_resolved and alert.resolved:
                continue
            if limit is not None and len(found) >= limit:
                break
            found.append(alert.copy())
        return found

    def summary(self, now: float, top: int = 5) -> dict[str, Any]:
        """Counts (repeats included) by type and severity, for the retention, and for the last
        hour (the raises of its minutes, this one included)."""
        first_minute = int(now // 60) - 59
        with self.lock:
            alerts = [alert.copy() for alert in self.alerts.values()]
            hour = sum((bucket for minute, bucket in self.minutes.items() if minute >= first_minute),
                       Counter())
        by_type: Counter[str] = Counter()
        by_severity: Counter[str] = Counter()
        hour_type: Counter[str] = Counter()
        hour_severity: Counter[str] = Counter()
        for (alert_type, severity), n in hour.items():
            hour_type[alert_type] += n
            hour_severity[severity] += n
        repeats: list[Alert] = []
        active = Counter({severity.value: 0 for severity in AlertSeverity})
        for alert in alerts:
            by_type[alert.type.value] += alert.repeat_count
            by_severity[alert.severity.value] += alert.repeat_count
            if not alert.resolved:
                active[alert.severity.value] += 1
            if alert.repeat_count > 1:
                repeats.append(alert)
        repeats.sort(key=lambda a: a.repeat_count, reverse=True)
        return {
            "total": sum(by_type.values()),
            "distinct": len(alerts),
            "active": sum(active.values()),
            "active_by_severity": dict(active),
            "by_type": {t.value: by_type.get(t.value, 0) for t in AlertType},
            "by_severity": {s.value: by_severity.get(s.value, 0) for s in AlertSeverity},
            "last_hour": {
                "total": sum(hour_type.values()),
                "by_type": {t.value: hour_type.get(t.value, 0) for t in AlertType},
                "by_severity": {s.value: hour_severity.get(s.value, 0) for s in AlertSeverity},
            },
            "retention_hours": self.retention / 3600.0,
            "evicted": self.evicted,
            "top_repeating": [
                {"fingerprint": a.fingerprint, "type": a.type.value, "severity": a.severity.value,
                 "title": a.title, "count": a.repeat_count, "first_seen": a.first_seen,
                 "last_seen": a.last_seen}
                for a in repeats[:top]
            ],
        }


class HistoryFile:
    """The append-only history of one store: snapshots appended, rewritten when it grows."""

    def __init__(self, path: Path, store: AlertStore, slack_lines: int = 10_000) -> None:
        self.path = path
        self.store = store
        self.slack_lines = slack_lines
        self.lines = 0
        self._handle = None

    def open(self) -> "HistoryFile":
        """Compact what :meth:`AlertStore.load` kept, then append to the new file (0600)."""
        self.store.compact(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._handle = os.fdopen(fd, "a", encoding="utf-8")
        self.lines = len(self.store.alerts)
        return self

    def append(self, records: list[dict[str, Any]]) -> None:
        if records and self._handle is not None:
            self._handle.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
            self._handle.flush()
            self.lines += len(records)

    def oversized(self) -> bool:
        """More than two lines per kept alert plus the slack: repeats have piled up snapshots."""
        return self.lines > 2 * len(self.store.alerts) + self.slack_lines

    def compact(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self.open()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
