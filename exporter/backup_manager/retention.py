"""Grandfather-father-son retention: keep one backup of each of the last N hours, days and weeks
(``BACKUP_RETENTION``), the newest whose verification did not fail, and the newest N backups
made by hand (``manual``). Pure functions over catalog entries."""
from __future__ import annotations

import time
from typing import Any

SCHEDULED = ("hourly", "daily", "weekly")
MANUAL = "manual"
TIERS = (*SCHEDULED, MANUAL)


def _bucket(tier: str, created_at: float) -> tuple:
    t = time.gmtime(created_at)
    if tier == "hourly":
        return (t.tm_year, t.tm_yday, t.tm_hour)
    if tier == "daily":
        return (t.tm_year, t.tm_yday)
    year, week, _ = time.strftime("%G %V %u", t).split()
    return (int(year), int(week))


def newest_verified(backups: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest backup whose last verification passed (else the newest backup at all)."""
    verified = [b for b in backups if b.get("verified")]
    pool = verified or backups
    return max(pool, key=lambda b: b["created_at"]) if pool else None


def select(backups: list[dict[str, Any]], retention: dict[str, int]) -> dict[str, str]:
    """``{name: tier}`` of the backups that the retention keeps (first tier wins)."""
    scheduled = sorted((b for b in backups if b.get("tier") in SCHEDULED),
                       key=lambda b: b["created_at"], reverse=True)
    keep: dict[str, str] = {}
    for tier in SCHEDULED:
        best: dict[tuple, dict[str, Any]] = {}  # newest bucket first
        for backup in scheduled:
            bucket = _bucket(tier, backup["created_at"])
            if bucket not in best or _preferred(backup) > _preferred(best[bucket]):
                best[bucket] = backup
        for backup in list(best.values())[:retention.get(tier, 0)]:
            keep.setdefault(backup["name"], tier)
    manual = sorted((b for b in backups if b.get("tier", MANUAL) == MANUAL), key=_preferred, reverse=True)
    for backup in manual[:retention.get(MANUAL, len(manual))]:
        keep[backup["name"]] = MANUAL
    return keep


def _preferred(backup: dict[str, Any]) -> tuple[bool, float]:
    """Which backup of a bucket to keep: one whose last verification did not fail, then the newest."""
    return backup.get("verified") is not False, backup["created_at"]


def to_delete(backups: list[dict[str, Any]], retention: dict[str, int]) -> tuple[list[str], dict[str, str]]:
    """Backups the retention drops (never the newest verified one), and the kept map. Manual
    backups are dropped only when ``retention`` has a ``manual`` count."""
    keep = select(backups, retention)
    protected = newest_verified(backups)
    tiers = TIERS if MANUAL in retention else SCHEDULED
    drop = [b["name"] for b in backups
            if b.get("tier", MANUAL) in tiers and b["name"] not in keep
            and (protected is None or b["name"] != protected["name"])]
    return drop, keep
