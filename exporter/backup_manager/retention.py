"""Grandfather-father-son retention: keep one backup of each of the last N hours, days and weeks
(``BACKUP_RETENTION``), the newest whose verification did not fail. Pure functions over
catalog entries."""
from __future__ import annotations

import time
from typing import Any

TIERS = ("hourly", "daily", "weekly")


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
    """``{name: tier}`` of the scheduled backups that the retention keeps (first tier wins)."""
    scheduled = sorted((b for b in backups if b.get("tier") in TIERS),
                       key=lambda b: b["created_at"], reverse=True)
    keep: dict[str, str] = {}
    for tier in TIERS:
        best: dict[tuple, dict[str, Any]] = {}  # newest bucket first
        for backup in scheduled:
            bucket = _bucket(tier, backup["created_at"])
            if bucket not in best or _preferred(backup) > _preferred(best[bucket]):
                best[bucket] = backup
        for backup in list(best.values())[:retention.get(tier, 0)]:
            keep.setdefault(backup["name"], tier)
    return keep


def _preferred(backup: dict[str, Any]) -> tuple[bool, float]:
    """Which backup of a bucket to keep: one whose last verification did not fail, then the newest."""
    return backup.get("verified") is not False, backup["created_at"]


def to_delete(backups: list[dict[str, Any]], retention: dict[str, int]) -> tuple[list[str], dict[str, str]]:
    """Scheduled backups the retention drops (never the newest verified one), and the kept map."""
    keep = select(backups, retention)
    protected = newest_verified(backups)
    drop = [b["name"] for b in backups
            if b.get("tier") in TIERS and b["name"] not in keep
            and (protected is None or b["name"] != protected["name"])]
    return drop, keep
