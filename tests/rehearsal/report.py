"""The rehearsal's report: JSON (everything) and a Markdown table (the verdicts and the faults)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _atomic_write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def _outcome(verdicts: list[dict]) -> str:
    missed = [v["check"] for v in verdicts if not v["ok"]]
    return f"**every goal met** ({len(verdicts)})" if not missed else \
        f"**{len(verdicts) - len(missed)} of {len(verdicts)} goals met**; missed: {'; '.join(missed)}"


def markdown(report: dict) -> str:
    minutes = report["duration_s"] / 60
    lines = [f"# Production rehearsal, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(report['started']))}",
             "",
             f"{minutes:.1f} minutes, {report['load']['lines_logged']} log lines at "
             f"{report['load']['lines_per_second']:g}/s, {report['load']['boots']} bot starts, "
             f"{len(report['faults'])} faults; {_outcome(report['verdicts'])}.",
             "", "| check | figure | goal | ok |", "|---|---|---|---|"]
    lines += [f"| {_cell(v['check'])} | {_cell(v['figure'])} | {_cell(v['goal'])} | {'OK' if v['ok'] else 'MISSED'} |"
              for v in report["verdicts"]]
    lines += ["", "| fault | at (s) | took (s) |", "|---|---|---|"]
    lines += [f"| {f['fault']} | {f['offset_s']} | {f['took_s']} |" for f in report["faults"]]
    logs = report["figures"]["logs"]
    lines += ["", "Log lines lost, by window: " + (_cell(logs["lost_by_window"]) if logs["lost_by_window"] else "none"),
              "Celery downloads: " + _cell({k: report["figures"]["celery_tasks"][k] for k in
                                            ("sent", "ran", "lost", "duplicated", "redelivered_runs", "ran_not_recorded_as_sent")}),
              "Celery beat: " + _cell({k: report["figures"]["celery_beat"][k] for k in
                                       ("sends", "send_failures", "ticks_ran", "duplicated")}),
              f"Heartbeat lateness (ms buckets): {_cell(report['figures']['resources']['heartbeat_lateness_ms_buckets'])}",
              "Wake-ups over 100 ms late by time queued for a busy CPU (the machine's, not counted as stalls): "
              + _cell({k: report["figures"]["resources"][k] for k in ("late_wakeups_queued_for_cpu", "worst_queued_wakeup_s")}),
              f"/metrics scrape seconds: {_cell(report['figures']['resources']['scrape_seconds'])}", ""]
    return "\n".join(lines)


def write(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """``rehearsal-<date>-<minutes>min.json`` and ``.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"rehearsal-{time.strftime('%Y%m%dT%H%MZ', time.gmtime(report['started']))}-{round(report['duration_s'] / 60)}min"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    _atomic_write(json_path, json.dumps(report, indent=2, default=str) + "\n")
    _atomic_write(md_path, markdown(report))
    return json_path, md_path
