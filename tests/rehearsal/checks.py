"""The invariants checked at the end of a rehearsal, each returning its figures and verdicts.

A verdict is ``{"check", "ok", "figure", "goal"}``; the report lists them all and the test
asserts each ``ok``.
"""
from __future__ import annotations

import collections
import statistics
import hashlib
import json
import re
import time
import urllib.request
from pathlib import Path

from .stack import RETENTION_DAILY, RETENTION_HOURLY, RETENTION_WEEKLY, Stack

KILL_WINDOW = 10.0  # seconds before a bot SIGKILL: its lost lines, if any, are reported apart
SHIPPER_THREAD = "es-log-shipper"  # what is logged on the shipper's thread is written, never shipped (by design)
SCRAPE_GOAL = 1.0
STALL_GOAL = 0.1


def verdict(check: str, ok: bool, figure: object, goal: str, noisy: bool = False) -> dict:
    """``noisy``: a goal that a short run on a loaded shared machine can miss without a fault
    (a wake-up late by scheduling, memory still warming up); the report keeps the verdict
    against the goal, the 5-minute test fails it only past a looser bound it names."""
    return {"check": check, "ok": bool(ok), "figure": figure, "goal": goal, "noisy": noisy}


def _json(url: str, body: dict | None = None) -> dict:
    """POST ``body`` (or nothing) to ``url``; the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _canonical(document: dict) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def es_documents(es_url: str) -> dict[str, list[str]]:
    """Every shipped log document: its content (without the shipper's two fields) -> its _ids."""
    _json(f"{es_url}/logs-bot-*/_refresh")
    found: dict[str, list[str]] = collections.defaultdict(list)
    page = _json(f"{es_url}/logs-bot-*/_search?scroll=2m", {"size": 5000, "sort": ["_doc"]})
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            source = {k: v for k, v in hit["_source"].items() if k not in ("agent.ephemeral_id", "event.sequence")}
            found[_canonical(source)].append(hit["_id"])
        page = _json(f"{es_url}/_search/scroll", {"scroll": "2m", "scroll_id": page["_scroll_id"]})
    return found


def file_lines(log_dir: Path) -> list[dict]:
    lines = []
    for path in sorted(log_dir.glob("bot.json*")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def _epoch(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _window_of(moment: float, faults: list[dict]) -> str:
    for fault in faults:
        if "killed_at" in fault and fault["killed_at"] - KILL_WINDOW <= moment <= fault["killed_at"]:
            return f"{fault['fault']} (kill window)"
    for fault in faults:
        if fault["start"] - 5 <= moment <= fault["end"] + 5:
            return fault["fault"]
    return "outside every fault"


def log_dirs(stack: Stack) -> list[tuple[Path, Path]]:
    """(LOG_DIR, STATE_DIR) of every process that ships: the bot, the Celery worker and beat."""
    return [(stack.work / "bot" / "logs", stack.work / "bot" / "state"), *stack.celery.log_dirs()]


def _spooled(state: Path) -> int:
    spool = state / "spool"
    return sum(len(p.read_bytes().splitlines()) for p in spool.glob("*") if p.is_file()) if spool.is_dir() else 0


def check_logs(stack: Stack, faults: list[dict]) -> tuple[dict, list[dict]]:
    shipped = es_documents(stack.es.url)
    lines = [line for log_dir, _ in log_dirs(stack) for line in file_lines(log_dir)]
    in_file = collections.Counter(_canonical(line) for line in lines)
    by_key = {_canonical(line): line for line in lines}
    lost, by_design = collections.Counter(), 0
    for key, count in in_file.items():
        missing = count - len(shipped.get(key, ()))
        if missing <= 0:
            continue
        line = by_key[key]
        if line.get("process", {}).get("thread", {}).get("name") == SHIPPER_THREAD:
            by_design += missing
            continue
        lost[_window_of(_epoch(line["@timestamp"]), faults)] += missing
    duplicated = sum(len(ids) - in_file.get(key, 1) for key, ids in shipped.items() if len(ids) > in_file.get(key, 1))
    dead = [state / "dead-letter.ndjson" for _, state in log_dirs(stack)]
    figures = {"lines_in_files": sum(in_file.values()), "documents_in_es": sum(map(len, shipped.values())),
               "lost_by_window": dict(lost), "lost_total": sum(lost.values()), "duplicated": duplicated,
               "lines_by_process": {log_dir.parent.name: len(file_lines(log_dir)) for log_dir, _ in log_dirs(stack)},
               "dead_lettered": sum(len(path.read_text().splitlines()) for path in dead if path.exists()),
               "left_in_spool": sum(_spooled(state) for _, state in log_dirs(stack)), "shipper_lines_not_shipped_by_design": by_design,
               "in_es_not_in_files": sum(1 for key in shipped if key not in in_file)}
    # A line in the file reaches Elasticsearch after a SIGKILL too: the shipper reads the file back
    # from its checkpoint at the next start, and the line's _id (file, offset, hash) makes the
    # ones already there come back as 409s.
    verdicts = [
        verdict("logs: none lost, the SIGKILL window included", figures["lost_total"] == 0,
                figures["lost_total"], "0"),
        verdict("logs: none duplicated (by _id)", duplicated == 0, duplicated, "0"),
        verdict("logs: none dead-lettered", figures["dead_lettered"] == 0, figures["dead_lettered"], "0"),
    ]
    return figures, verdicts


_TASK = re.compile(r"task: (\S+)")


def _telegram_key(text: str) -> tuple[str, str]:
    """(state, the alert's task id, or its message when it has none: the second line)."""
    plain = text.replace("\\", "")
    lines = plain.splitlines()
    state = "resolved" if "RESOLVED" in lines[0] else "firing"
    task = _TASK.search(lines[-1])
    return state, task.group(1) if task else lines[1]


def delivered(stack: Stack) -> dict[str, collections.Counter]:
    """What each channel's receiver got: (state, alert key) -> count."""
    email = collections.Counter(
        ("resolved" if "RESOLVED" in mail.message["Subject"] else "firing", mail.message["X-Opsstack-Fingerprint"])
        for mail in stack.smtp.messages)
    webhook = collections.Counter((request["json"]["status"], request["json"]["alert"]["fingerprint"])
                                  for request in stack.webhook.requests)
    telegram = collections.Counter(_telegram_key(message["text"]) for message in stack.telegram.messages)
    return {"telegram": telegram, "email": email, "webhook": webhook}


def check_alerts(stack: Stack, final_alerts: list[dict], raised: list[dict]) -> tuple[dict, list[dict]]:
    """Each channel got, per alert key, one firing message for each alert of the history with
    that key and one resolved message for each of them resolved. (A condition that comes back
    after its alert resolved, e.g. the next full disk, is a new alert with the same fingerprint.)"""
    routed = [alert for alert in final_alerts if alert["severity"] in ("high", "critical")]
    received = delivered(stack)
    expected: dict[str, collections.Counter] = {channel: collections.Counter() for channel in received}
    for alert in routed:
        keys = {"email": alert["fingerprint"], "webhook": alert["fingerprint"],
                "telegram": alert["task_id"] or alert["message"]}
        for channel, key in keys.items():
            expected[channel][("firing", key)] += 1
            expected[channel][("resolved", key)] += bool(alert["resolved"])
    wrong = [{"channel": channel, "state": state, "key": key, "got": received[channel][(state, key)],
              "want": expected[channel][(state, key)]}
             for channel in received for state, key in sorted(set(expected[channel]) | set(received[channel]))
             if received[channel][(state, key)] != expected[channel][(state, key)]]
    in_am = stack.am.alerts()
    active = {item["labels"].get("fingerprint") for item in in_am if item["status"]["state"] == "active"}
    firing = {alert["fingerprint"] for alert in routed if not alert["resolved"]}
    am_wrong = [{"fingerprint": fp, "bot": "firing" if fp in firing else "resolved",
                 "alertmanager": "active" if fp in active else "absent"}
                for fp in sorted({alert["fingerprint"] for alert in routed}) if (fp in active) != (fp in firing)]
    known = {alert["task_id"] for alert in final_alerts}
    forgotten = sorted(entry["task_id"] for entry in raised if entry["task_id"] not in known)
    figures = {"alerts_in_history": len(final_alerts), "routed": len(routed),
               "resolved": sum(alert["resolved"] for alert in routed),
               "messages": {channel: sum(counter.values()) for channel, counter in received.items()},
               "alertmanager_alerts": len(in_am), "not_exactly_once": wrong[:20],
               "not_exactly_once_count": len(wrong), "alertmanager_mismatch": am_wrong[:20],
               "raised_but_not_in_history": forgotten}
    verdicts = [
        verdict("alerts: each routed alert reached each channel exactly once (firing, resolved)",
                not wrong, len(wrong), "0 deviations"),
        verdict("alerts: Alertmanager's active set equals the bot's firing alerts", not am_wrong,
                len(am_wrong), "0 mismatches"),
        verdict("alerts: every alert the bot raised is in its history", not forgotten, len(forgotten), "0 missing"),
    ]
    return figures, verdicts


def expected_kept(names: list[str]) -> set[str]:
    """What grandfather-father-son retention keeps of these scheduled backups (names carry their
    UTC second): the newest of each of the last N hour, day and ISO-week buckets."""
    made = {name: time.strptime(name.split("_")[1], "%Y%m%dT%H%M%SZ") for name in names}
    kept: set[str] = set()
    for count, bucket in ((RETENTION_HOURLY, lambda t: (t.tm_year, t.tm_yday, t.tm_hour)),
                          (RETENTION_DAILY, lambda t: (t.tm_year, t.tm_yday)),
                          (RETENTION_WEEKLY, lambda t: time.strftime("%G-%V", t))):
        newest: dict = {}
        for name in sorted(made, key=lambda n: made[n]):
            newest[bucket(made[name])] = name
        kept.update(newest[key] for key in sorted(newest)[-count:])
    return kept


def check_backups(stack: Stack, faults: list[dict], boots: list[dict], final_alerts: list[dict]) -> tuple[dict, list[dict]]:
    listing = stack.cli("backup", "list", "--json")
    listed = json.loads(listing.stdout) if listing.returncode == 0 else []
    bad: list[dict] = []
    for backup in listed:
        name = backup["name"]
        verify = stack.cli("backup", "verify", name, "--json")
        target = stack.work / "restored" / name
        restore = stack.cli("backup", "restore", name, str(target), "--json")
        differs = [rel for rel, content in stack.files.items()
                   if not (target / stack.data.name / rel).is_file()
                   or (target / stack.data.name / rel).read_bytes() != content]
        if verify.returncode or restore.returncode or differs:
            bad.append({"name": name, "verify": verify.returncode, "restore": restore.returncode,
                        "differs": differs, "stderr": (verify.stderr + restore.stderr)[-500:]})
    runs = [run for boot in boots for run in boot["backups"]]
    succeeded = sum(run["ok"] for run in runs)
    full = [fault for fault in faults if fault["fault"] == "backup_disk_full"]
    full_failed = all(isinstance(f["during_full"], list) and f["during_full"] and not f["during_full"][0]["ok"]
                      for f in full)
    next_ok = all(isinstance(f["next"], list) and f["next"] and f["next"][0]["ok"] for f in full)
    failure_alerts = [a for a in final_alerts if a["type"] == "backup_failed"
                      and any(f["start"] <= a["first_seen"] <= f["end"] for f in full)]
    want_kept = sorted(expected_kept([run["name"] for run in runs if run["ok"]]))
    kept = sorted(b["name"] for b in listed)
    listed_while_failed = [f["failed_listed"] for f in full if f.get("failed_listed")]
    figures = {"scheduled_runs": len(runs), "failed_backup_listed": listed_while_failed, "succeeded": succeeded, "listed": len(listed),
               "kept": kept, "expected_kept": want_kept, "not_restorable": bad,
               "disk_full": [{"during_full": f["during_full"], "next": f["next"]} for f in full],
               "failure_alerts": [{"title": a["title"], "resolved": a["resolved"]} for a in failure_alerts]}
    verdicts = [
        verdict("backups: every listed backup verifies and restores byte-for-byte", listed and not bad,
                f"{len(listed) - len(bad)}/{len(listed)}", "all"),
        verdict("backups: the one meeting a full disk failed (never listed), the next succeeded",
                full and full_failed and next_ok and not listed_while_failed,
                f"{len(full)} disk-full fault(s)", "failed then succeeded"),
        verdict("backups: the failure raised a backup_failed alert, resolved by the next success",
                failure_alerts and all(a["resolved"] for a in failure_alerts), len(failure_alerts),
                ">= 1, resolved"),
        verdict("backups: retention kept what BACKUP_RETENTION says", kept == want_kept,
                len(kept), f"{len(want_kept)} (newest of each of the last {RETENTION_HOURLY} hours, "
                           f"{RETENTION_DAILY} days, {RETENTION_WEEKLY} weeks)"),
    ]
    return figures, verdicts


def check_recovery(stack: Stack, faults: list[dict]) -> tuple[dict, list[dict]]:
    damage = [fault for fault in faults if fault["fault"] == "critical_file_corrupt_delete"]
    quarantined = {hashlib.sha256(path.read_bytes()).hexdigest()
                   for path in (stack.work / "bot" / "state" / "quarantine").rglob("*") if path.is_file()}
    figures = [{"repaired": f["repaired"], "repair_seconds": f["repair_seconds"],
                "damaged_copy_quarantined": f["damaged_sha256"] in quarantined} for f in damage]
    ok = damage and all(f["repaired"] and f["damaged_copy_quarantined"] for f in figures)
    return {"faults": figures}, [verdict("recovery: corrupted and deleted files repaired, damage quarantined",
                                         ok, figures, "repaired, quarantined")]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


LEVEL_WINDOW = 60.0  # seconds of samples whose median is the level at the checkpoint and at the end


def _level(samples: list[dict]) -> dict:
    return {what: statistics.median(sample[what] for sample in samples) for what in ("rss", "fds", "threads")}


def check_resources(boots: list[dict], warmup: float, scrapes: list[float], scrape_failures: int,
                    faults: list[dict]) -> tuple[dict, list[dict]]:
    longest = max(boots, key=lambda boot: boot["resources"][-1]["t"] - boot["resources"][0]["t"])
    samples = longest["resources"]
    start = next((s["t"] for s in samples if s["t"] >= longest["started"] + warmup), samples[0]["t"])
    # The level at the checkpoint and at the end: the median of a minute of samples each, so that
    # a backup or a repair in flight at one instant (tens of MB of buffers for a second) is not
    # taken for growth, while a leak, which raises every sample, still is.
    checkpoint = _level([s for s in samples if start <= s["t"] < start + LEVEL_WINDOW] or samples[:1])
    end = _level([s for s in samples if s["t"] > samples[-1]["t"] - LEVEL_WINDOW])
    checkpoint["t"], end["t"] = start, samples[-1]["t"]
    growth = {what: round(end[what] / checkpoint[what] - 1, 3) for what in ("rss", "fds", "threads")}
    suspended = [(f["suspended_at"], f["resumed_at"]) for f in faults if f["fault"] == "clock_jump_sigstop"]
    stalls, excused, queued = [], [], []
    for boot in boots:
        for at, late, waited in boot["stalls"]:
            if any(at - late <= b and at >= a for a, b in suspended):
                excused.append(late)
            elif late - waited > STALL_GOAL:
                stalls.append(late - waited)
            else:  # late because every core was busy: the machine's stall, not the bot's
                queued.append(late)
    lateness = collections.Counter()
    for boot in boots:
        lateness.update(boot["lateness_ms"])
    figures = {"boot_measured": longest["boot"], "checkpoint_after_s": round(checkpoint["t"] - longest["started"]),
               "measured_for_s": round(end["t"] - checkpoint["t"]),
               "checkpoint": {k: checkpoint[k] for k in ("rss", "fds", "threads")},
               "end": {k: end[k] for k in ("rss", "fds", "threads")}, "growth": growth,
               "scrapes": len(scrapes), "scrape_failures": scrape_failures,
               "scrape_seconds": {"p50": round(_percentile(scrapes, 0.5), 4), "p99": round(_percentile(scrapes, 0.99), 4),
                                  "max": round(max(scrapes, default=0.0), 4)},
               "scrapes_over_1s": sum(s > SCRAPE_GOAL for s in scrapes),
               "heartbeat_lateness_ms_buckets": dict(lateness), "stalls_over_100ms": sorted(stalls, reverse=True)[:20],
               "stalls_while_suspended_excluded": len(excused),
               "late_wakeups_queued_for_cpu": len(queued), "worst_queued_wakeup_s": round(max(queued, default=0.0), 3),
               "stall_count": len(stalls), "worst_stall_s": round(max(stalls, default=0.0), 3)}
    verdicts = [  # a leak grows; fewer threads or descriptors at the end (idle pools) is none
        verdict(f"resources: {what} at the end at most 10 % above the checkpoint", change <= 0.10,
                f"{change:+.1%}", "<= +10 %", noisy=True) for what, change in growth.items()]
    verdicts += [
        verdict("/metrics answered every scrape within 1 s", scrapes and not figures["scrapes_over_1s"]
                and not scrape_failures, f"max {figures['scrape_seconds']['max']} s, {scrape_failures} failed",
                "every scrape < 1 s"),
        verdict("the bot's loop never stalled > 100 ms (time queued for a busy CPU excluded)", not stalls,
                f"{len(stalls)} stalls, worst {max(stalls, default=0) * 1000:.0f} ms", "0 stalls", noisy=True),
    ]
    return figures, verdicts
