"""The Celery invariants: every download the bot sent ran in the worker, beat's sends ran, and a
download's trace crosses from the bot's log line to the worker's."""
from __future__ import annotations

import collections
import json
from pathlib import Path

from .checks import _epoch, file_lines, verdict
from .celery_stack import BEAT_SECONDS
from .faults import sent_ids, tasks_done
from .stack import Stack

CELERY_FAULTS = {"celery_worker_sigkill_restart", "redis_restart"}
# Delivery is at least once (acks_late): a kill or a broker restart can run again what was in
# hand at that moment, a message or two with prefetch 1; more would be redelivery without a fault.
DUPLICATES_PER_FAULT = 2
BEAT_SENDS_GOAL = 0.8  # of the periods beat lived through, Redis's downtime excepted


def _json_lines(path: Path) -> list[dict]:
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith(b"}")]


def check_tasks(stack: Stack, faults: list[dict]) -> tuple[dict, list[dict]]:
    sent = sent_ids(stack)
    done = tasks_done(stack)
    runs = collections.Counter(task["id"] for task in done)
    lost = sorted(set(sent) - set(runs))
    duplicated = {task: count - 1 for task, count in runs.items() if count > 1}
    allowed = DUPLICATES_PER_FAULT * sum(fault["fault"] in CELERY_FAULTS for fault in faults)
    wheel = all("/site/exporter/" in task["exporter_file"] for task in done)
    figures = {"sent": len(sent), "sent_twice_by_the_bot": len(sent) - len(set(sent)), "ran": len(done),
               "distinct_ran": len(runs), "lost": len(lost), "lost_ids": lost[:20],
               "duplicated": sum(duplicated.values()), "duplicated_ids": sorted(duplicated)[:20],
               "redelivered_runs": sum(task["redelivered"] for task in done),
               # the bot killed after Redis took a task but before it wrote it down: ran, never recorded
               "ran_not_recorded_as_sent": len(set(runs) - set(sent)),
               "worker_starts": stack.celery.worker_starts}
    verdicts = [
        verdict("celery: every download the bot sent ran in the worker", sent and not lost,
                f"{len(runs) - len(set(runs) - set(sent))}/{len(set(sent))} ran, {len(lost)} lost", "0 lost"),
        verdict("celery: duplicates only from a fault (at least once: acks_late, redelivered after the visibility timeout)",
                figures["duplicated"] <= allowed, figures["duplicated"], f"<= {allowed}"),
        verdict("celery: the worker ran the installed wheel", done and wheel,
                done[-1]["exporter_file"] if done else None, "under the wheel's install directory"),
    ]
    return figures, verdicts


def _redis_down(faults: list[dict]) -> float:
    return sum(f["started_at"] - f["stopped_at"] for f in faults if f["fault"] == "redis_restart")


def check_beat(stack: Stack, faults: list[dict]) -> tuple[dict, list[dict]]:
    beat_logs, _ = stack.celery.log_dirs()[1]
    sends = [line for line in file_lines(beat_logs) if line.get("event", {}).get("action") == "celery-beat-send"]
    sent = [line["labels"]["celery_task_id"] for line in sends if line["event"]["outcome"] == "success"]
    ticks = collections.Counter(tick["id"] for tick in _json_lines(stack.celery.records / "ticks.jsonl"))
    lost = sorted(set(sent) - set(ticks))
    times = sorted(line["@timestamp"] for line in sends)
    lived = _epoch(times[-1]) - _epoch(times[0]) if times else 0.0
    expected = max(0, int((lived - _redis_down(faults)) / BEAT_SECONDS))
    figures = {"sends": len(sent), "send_failures": len(sends) - len(sent), "expected_at_least": round(expected * BEAT_SENDS_GOAL),
               "ticks_ran": sum(ticks.values()), "lost": lost[:20], "duplicated": sum(n - 1 for n in ticks.values())}
    verdicts = [
        verdict(f"beat: sent its entry every {BEAT_SECONDS:g} s but while Redis was down",
                len(sent) >= figures["expected_at_least"] > 0, len(sent), f">= {figures['expected_at_least']}"),
        verdict("beat: every send it logged ran in the worker", sent and not lost, f"{len(lost)} lost", "0 lost"),
    ]
    return figures, verdicts


def check_trace(stack: Stack) -> tuple[dict, list[dict]]:
    """The bot's "download X queued" line and the worker's task line for X: one trace."""
    bot_traces = collections.defaultdict(set)
    for line in file_lines(stack.work / "bot" / "logs"):
        message = line.get("message", "")
        if message.startswith("download dl-") and message.endswith(" queued") and "trace" in line:
            bot_traces[message.split()[1]].add(line["trace"]["id"])
    worker_logs, _ = stack.celery.log_dirs()[0]
    pairs = matched = 0
    for line in file_lines(worker_logs):
        task = line.get("labels", {}).get("celery_task_id")
        if line.get("event", {}).get("action") == "celery-task" and task in bot_traces:
            pairs += 1
            matched += line.get("trace", {}).get("id") in bot_traces[task]
    figures = {"pairs": pairs, "same_trace_id": matched}
    return figures, [verdict("trace: the worker's line of a download carries the bot's trace.id",
                             pairs and matched == pairs, f"{matched}/{pairs}", "all")]
