"""Event lines from cached layouts (``logger_manager._layout``) are the general path's lines."""
from __future__ import annotations

import json
import logging
import random

import pytest

from exporter.logger_manager import _events, _layout
from exporter.logger_manager._formatter import STANDARD_ATTRIBUTES, ECSFormatter
from exporter.logger_manager._redact import Redactor, secret_literals

SECRET = "supersecretvalue123"
RESOURCE = {"host": {"name": "h"}, "service": {"name": "bot", "version": "1", "environment": "test"}}
IDS = (None, ("0" * 31 + "1", "0" * 15 + "2"), ("ab" * 16, "cd" * 8))
VALUES = ["x", "a.mp4", SECRET, "token=abc", 5, 2.5, True, None, float("nan"), ["a"], {"k": 1}, "127.0.0.1",
          "2024-01-01", "success", "weird", 0, 1e300, "%s %%", "\u00e9\n\"", ("b", "c")]
KEYS = ["labels.task_id", "event.outcome", "file.size", "file.name", "bot.speed", "password", "client.ip",
        "event.start", "tags", "event.category", "log.level", "message", "trace.id", "x.y", "ecs.version", "bot",
        "process.pid", "log.origin.file.line", "event.kind", "http.response.status_code", "service.node.name"]


def formatter(counts: list[int]) -> ECSFormatter:
    return ECSFormatter(redactor=Redactor(secret_literals([SECRET])), on_redact=counts.append, resource=RESOURCE)


def record(extra: dict, level: int = logging.INFO, line: int = 1) -> logging.LogRecord:
    made = logging.LogRecord("bot.worker", level, "/srv/bot/worker.py", line, "done %s", ("x",), None, func="run")
    made.__dict__.update(extra)
    return made


def general(fmt: ECSFormatter, made: logging.LogRecord, ids) -> str:
    extras = made.__dict__.keys() - STANDARD_ATTRIBUTES
    return fmt._general(made, fmt._redact(made.getMessage()), extras, ids)


def layouts_in_use(fmt: ECSFormatter) -> int:
    return sum(layout is not None for plan in fmt._plans.values() if plan for layout in plan.layouts.values())


def test_random_extras_match_the_general_path_and_count_the_same_redactions():
    rng = random.Random(7)
    key_sets = [rng.sample(KEYS, rng.randint(1, 6)) for _ in range(25)]
    counts: list[int] = []
    cached, plain = formatter(counts), formatter(counts)
    for _ in range(6000):
        made = record({key: rng.choice(VALUES) for key in rng.choice(key_sets)}, line=rng.randint(1, 3))
        ids = rng.choice(IDS)
        counts.clear()
        line = cached.format_captured(made, None, ids)
        by_layout = list(counts)
        counts.clear()
        assert line == general(plain, made, ids)
        assert by_layout == counts
        json.loads(line)
    assert layouts_in_use(cached) > 100  # most shapes were written from a layout


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_transfer_events_are_written_from_a_layout(direction):
    counts: list[int] = []
    fmt = formatter(counts)
    lines = []
    for number in range(3):
        level, message, fields = _events.transfer(direction, f"t{number}", f"f{number}.mp4", 1000 + number,
                                                  0.5 + number, 2000.0 / (number + 1), "completed")
        made = record(fields, level)
        made.msg, made.args = "%s", (message,)
        lines.append((fmt.format_captured(made, None, IDS[1]), general(formatter([]), made, IDS[1])))
    assert all(line == expected for line, expected in lines)
    assert layouts_in_use(fmt) == 1
    document = json.loads(lines[2][0])
    assert document["file"] == {"name": "f2.mp4", "size": 1002, "extension": "mp4"}
    assert document["trace"] == {"id": IDS[1][0]} and document["event"]["duration"] == 2_500_000_000


def test_a_secret_in_a_value_is_masked_and_counted_from_a_layout():
    counts: list[int] = []
    fmt = formatter(counts)
    fmt.format_captured(record({"labels.note": "nothing here"}), None, None)  # makes the layout
    counts.clear()
    line = fmt.format_captured(record({"labels.note": f"key {SECRET}"}), None, None)
    assert SECRET not in line and json.loads(line)["labels"]["note"] == "key [REDACTED]"
    assert counts == [1]


def test_a_secret_field_name_never_gets_a_layout():
    counts: list[int] = []
    fmt = formatter(counts)
    for value in ("hunter2", "hunter3"):
        counts.clear()
        assert json.loads(fmt.format_captured(record({"password": value}), None, None))["labels"]["password"] \
            == "[REDACTED]"
        assert counts == [1]
    assert layouts_in_use(fmt) == 0


def test_a_layout_is_kept_only_when_it_writes_the_same_line(monkeypatch):
    monkeypatch.setattr(_layout, "fill", lambda *args: "not the line")
    fmt = formatter([])
    made = record({"labels.task_id": "t1"})
    assert fmt.format_captured(made, None, None) == general(formatter([]), made, None)
    assert layouts_in_use(fmt) == 0
