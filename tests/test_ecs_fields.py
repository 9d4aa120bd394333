"""Every field the logger writes is ECS 8 (Elastic's own field list) or ``labels.*`` / ``bot.*``,
and golden files pin the exact line of every custom event.

The field list comes from the npm package ``@elastic/ecs`` pinned in ``tests/ecs/package.json``;
the test installs it (``npm ci``) when ``tests/ecs/node_modules`` is missing. Set
``UPDATE_GOLDEN=1`` to rewrite ``tests/golden/*.json`` after an intended change.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.alert_manager.model import Alert, AlertSeverity, AlertType
from exporter.channels.log import LogChannel
from exporter.config import load_settings
from exporter.logger_manager import ECS_VERSION, LoggerManager
from exporter.logger_manager import _fields
from exporter.metrics import Metrics
from tests.harness.base import skip_or_fail

HERE = Path(__file__).parent
ECS_DIR = HERE / "ecs"
GOLDEN_DIR = HERE / "golden"
TOKEN = "123456789:AAHk3w-example_Token_Value_01234567"

DUMP_SCRIPT = """
const flat = require("@elastic/ecs/build/commonjs/ecs_flat.js").EcsFlat;
const version = require("@elastic/ecs").EcsVersion;
const fields = {};
for (const [name, field] of Object.entries(flat)) {
  fields[name] = {type: field.type, allowed: (field.allowed_values || []).map(v => v.name)};
}
console.log(JSON.stringify({version, fields}));
"""

STRING_TYPES = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text", "ip", "date"}
INTEGER_TYPES = {"long", "integer", "short", "byte", "unsigned_long"}
FLOAT_TYPES = {"float", "double", "scaled_float", "half_float"}


@pytest.fixture(scope="session")
def ecs() -> dict:
    module = ECS_DIR / "node_modules" / "@elastic" / "ecs" / "build" / "commonjs" / "ecs_flat.js"
    npm, node = shutil.which("npm"), shutil.which("node")
    if node is None or (not module.exists() and npm is None):
        skip_or_fail("node/npm are needed to read Elastic's ECS field list (@elastic/ecs)")
    if not module.exists():
        command = "ci" if (ECS_DIR / "package-lock.json").exists() else "install"
        subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=ECS_DIR, check=True, timeout=600,
                       capture_output=True)
    result = subprocess.run([node, "-e", DUMP_SCRIPT], cwd=ECS_DIR, check=True, capture_output=True, text=True,
                            timeout=60)
    data = json.loads(result.stdout)
    assert len(data["fields"]) > 1000
    return data


def flatten(document: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def check_value(name: str, value: object, ecs_type: str) -> str | None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if ecs_type in STRING_TYPES and not isinstance(item, str):
            return f"{name}: {item!r} is not a string ({ecs_type})"
        if ecs_type in INTEGER_TYPES and (not isinstance(item, int) or isinstance(item, bool)):
            return f"{name}: {item!r} is not an integer ({ecs_type})"
        if ecs_type in FLOAT_TYPES and (not isinstance(item, (int, float)) or isinstance(item, bool)):
            return f"{name}: {item!r} is not a number ({ecs_type})"
        if ecs_type == "boolean" and not isinstance(item, bool):
            return f"{name}: {item!r} is not a boolean"
        if ecs_type in ("object", "flattened", "nested", "geo_point"):
            return f"{name}: a leaf value at an {ecs_type} field"
    return None


def problems_of(line: dict, ecs: dict) -> list[str]:
    fields = ecs["fields"]
    found = []
    for name, value in flatten(line).items():
        if name.startswith("labels."):
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                found.append(f"{name}: labels must be keyword strings, got {value!r}")
            continue
        if name.startswith(_fields.CUSTOM_NAMESPACE + "."):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                found.append(f"{name}: bot.* holds numbers only, got {value!r}")
            continue
        field = fields.get(name)
        if field is None:
            found.append(f"{name}: not an ECS {ecs['version']} field")
            continue
        problem = check_value(name, value, field["type"])
        if problem:
            found.append(problem)
        if field["allowed"]:
            for item in value if isinstance(value, list) else [value]:
                if item not in field["allowed"]:
                    found.append(f"{name}: {item!r} is not an allowed value")
    return found


# --------------------------------------------------------------------------- the events

# What the alert manager's log channel writes for an alert (firing) and a custom one (resolved).
ALERT = Alert(type=AlertType.DOWNLOAD_FAILED, severity=AlertSeverity.HIGH, title="Download failed",
              message="video.mp4: read timed out", first_seen=1767225600.0, task_id="download_124",
              id="5f0c9a1e2b3d4c5e", repeat_count=3)
CUSTOM_ALERT = Alert(type=AlertType.CUSTOM, severity=AlertSeverity.LOW, title="Queue long",
                     message="42 files waiting", first_seen=1767225600.0, id="0a1b2c3d4e5f6a7b")

GOLDEN_EVENTS = {
    "download_completed": lambda lm: lm.log_download(
        task_id="download_123", filename="large_file.zip", size_bytes=1073741824, duration=3600.0,
        speed=298261.0, status="completed"),
    "download_failed": lambda lm: lm.log_download(
        "download_124", "video.mp4", 5242880, 12.5, 419430.4, "failed"),
    "upload_completed": lambda lm: lm.log_upload("upload_7", "report.pdf", 204800, 0.8, 256000.0, "completed"),
    "api_call_success": lambda lm: lm.log_api_call("sendMessage", 0.045, "success", 200),
    "api_call_failure": lambda lm: lm.log_api_call(
        "getFile", 1.25, "failure", 502, url=f"https://api.telegram.org/bot{TOKEN}/getFile",
        error=TimeoutError("read timed out"), task_id="download_124"),
    "event_backup": lambda lm: lm.log_event(
        "backup.create", "success", "backup pre_release created", task_id="backup_1",
        file_path="backups/pre_release.tar.zst", file_size=52428800, duration=4.2, files=120),
    "event_alert": lambda lm: lm.log_event(
        "alert.triggered", "failure", "Download failed", level=logging.WARNING, task_id="download_124",
        rule_name="DOWNLOAD_FAILED", severity="high", tags=["alert"]),
    "plain_record": lambda lm: logging.getLogger("bot.handlers").info("user %s started the bot", "alice"),
    "alert_firing": lambda lm: asyncio.run(LogChannel().send(ALERT)),
    "alert_resolved": lambda lm: asyncio.run(LogChannel().send_resolved(CUSTOM_ALERT)),
}


class PinRecord(logging.Filter):
    """Makes a record reproducible: fixed time, process, thread and origin."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.created = 1767225600.25  # 2026-01-01T00:00:00.250Z
        record.msecs = 250.0
        record.process, record.processName = 4242, "MainProcess"
        record.thread, record.threadName = 140000000000001, "MainThread"
        record.pathname, record.filename, record.module = "/srv/bot/bot.py", "bot.py", "bot"
        record.funcName, record.lineno = "handle_update", 42
        return True


@pytest.fixture
def pinned_manager(tmp_path: Path):
    # host.name pinned (the default is the machine's name); the rest are the defaults
    settings = load_settings({"LOG_DIR": str(tmp_path / "logs"), "LOG_CONSOLE": False,
                              "OTEL_RESOURCE_ATTRIBUTES": "host.name=bot-host-1"}, environ={})
    lm = LoggerManager(settings, Metrics())
    lm.enable()
    lm._handler.addFilter(PinRecord())
    yield lm, tmp_path / "logs" / "bot.json"
    lm.disable()


@pytest.mark.parametrize("name", sorted(GOLDEN_EVENTS))
def test_golden_output_of_every_custom_event(pinned_manager, name):
    lm, path = pinned_manager
    GOLDEN_EVENTS[name](lm)
    lm.flush()
    line = path.read_text()
    golden = GOLDEN_DIR / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(line)
    assert line == golden.read_text()


@pytest.fixture
def every_kind_of_line(tmp_path: Path) -> list[dict]:
    """Lines of every shape the project writes: events, plain, exception, stack, span, extras."""
    from opentelemetry.sdk.trace import TracerProvider

    settings = load_settings({"LOG_DIR": str(tmp_path / "logs"), "LOG_CONSOLE": False, "LOG_LEVEL": "DEBUG",
                              "SMTP_PASSWORD": "correct-horse"}, environ={})
    lm = LoggerManager(settings, Metrics())
    lm.enable()
    try:
        for emit in GOLDEN_EVENTS.values():
            emit(lm)
        log = logging.getLogger("bot.validation")
        log.debug("debug %d", 1)
        log.info("token %s and password=correct-horse", TOKEN)
        try:
            raise KeyError("missing")
        except KeyError:
            log.exception("with exception")
        log.critical("with stack", stack_info=True)
        with TracerProvider().get_tracer("t").start_as_current_span("span"):
            log.info("in a span")
            lm.log_upload("upload_8", "x", 1, 0.1, 10.0, "weird-status")
        log.info("extras", extra={"customer": "acme", "retries": 3, "user": "bob", "file.size": "big",
                                  "http": {"request": {"method": "GET"}}, "labels.n": 5,
                                  "bot.ratio": 0.5, "bot.word": "x", "event.duration": "long",
                                  "headers": {"Authorization": "Bearer x"}, "tags": "one",
                                  "event.foo": "not ecs", "process.parent": "leaf at an object",
                                  "geo.name": "nested-only field set", "trace.id": "abc"})
        lm.log_event("odd", "ok", weird=object(), count=3, flag=True, when="now", event_severity=3,
                     http_response_status_code="not a number", url_port=8080)
    finally:
        lm.disable()
    text = (tmp_path / "logs" / "bot.json").read_text() + (tmp_path / "logs" / "errors.json").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_every_field_written_is_ecs_or_labels_or_bot(ecs, every_kind_of_line):
    assert len(every_kind_of_line) >= 17
    problems = [problem for line in every_kind_of_line for problem in problems_of(line, ecs)]
    assert problems == []


def test_every_line_names_its_service_and_host(every_kind_of_line):
    import socket

    from exporter import __version__

    expected = {"service.name": "telegram-bot", "service.version": __version__,
                "service.environment": "production", "host.name": socket.gethostname()}
    for line in every_kind_of_line:
        flat = flatten(line)
        assert {name: flat.get(name) for name in expected} == expected, line


@pytest.mark.parametrize("environ,expected", [
    ({"OTEL_SERVICE_NAME": "files-bot",
      "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment.name=staging,host.name=bot-1"},
     {"name": "files-bot", "environment": "staging", "host": "bot-1", "version": "2.0"}),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,deployment.environment=qa%20lab"},
     {"name": "from-attributes", "environment": "qa lab", "host": None, "version": "2.0"}),
])
def test_service_fields_follow_the_otel_variables_like_the_spans(tmp_path, environ, expected):
    """OTEL_SERVICE_NAME wins over service.name of OTEL_RESOURCE_ATTRIBUTES; values are percent-decoded."""
    import socket

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from exporter import tracing

    environ = {**environ, "OTEL_RESOURCE_ATTRIBUTES": environ["OTEL_RESOURCE_ATTRIBUTES"] + ",service.version=2.0",
               "ENABLE_TRACING": "true", "LOG_DIR": str(tmp_path / "logs"), "LOG_CONSOLE": "false"}
    settings = load_settings(environ=environ)
    lm = LoggerManager(settings, Metrics())
    exported = InMemorySpanExporter()
    tracing.setup(settings, span_exporter=exported)
    lm.enable()
    try:
        with tracing.span("work"):
            logging.getLogger("bot").info("one line")
    finally:
        lm.disable()
        tracing.shutdown()
    (line,) = [json.loads(text) for text in (tmp_path / "logs" / "bot.json").read_text().splitlines()
               if '"one line"' in text]
    host = expected["host"] or socket.gethostname()
    assert line["service"] == {"name": expected["name"], "environment": expected["environment"],
                               "version": expected["version"]}
    assert line["host"] == {"name": host}
    (span,) = exported.get_finished_spans()
    resource = span.resource.attributes
    assert (resource["service.name"], resource["deployment.environment.name"], resource["host.name"],
            resource["service.version"]) == (expected["name"], expected["environment"], host, expected["version"])


def test_golden_files_are_valid_ecs(ecs):
    files = sorted(GOLDEN_DIR.glob("*.json"))
    assert {path.stem for path in files} == set(GOLDEN_EVENTS)
    for path in files:
        assert problems_of(json.loads(path.read_text()), ecs) == [], path.name


def test_validator_rejects_what_is_not_ecs(ecs):
    line = {"@timestamp": "x", "log.level": "info", "message": "m", "ecs.version": "8.11.0",
            "log": {"original": "m"}, "file": {"size": "big"}, "event": {"outcome": "ok"},
            "labels": {"n": 1}, "bot": {"s": "text"}, "customer": "acme"}
    problems = problems_of(line, ecs)
    assert len(problems) == 6, problems


def test_generated_field_table_matches_elastic_field_list(ecs):
    # a version bump of tests/ecs/package.json needs tests/ecs/generate_fields.py run again
    assert ECS_VERSION == ecs["version"] == "8.11.0"
    assert _fields.ECS_FIELDS == {name: field["type"] for name, field in ecs["fields"].items()}
    assert _fields.ALLOWED_VALUES == {name: frozenset(field["allowed"])
                                      for name, field in ecs["fields"].items() if field["allowed"]}
    assert _fields.CUSTOM_NAMESPACE not in {name.split(".")[0] for name in ecs["fields"]}
    assert ecs["fields"]["labels"]["type"] == "object"
    assert "log.original" not in ecs["fields"]
    for name in _fields.ARRAY_FIELDS:
        assert ecs["fields"][name]["type"] in ("keyword", "ip"), name


def test_keyword_arguments_name_ecs_fields():
    assert _fields.field_for_argument("file_name") == "file.name"
    assert _fields.field_for_argument("http_response_status_code") == "http.response.status_code"
    assert _fields.field_for_argument("task_id") == "task_id"
    assert _fields.place("event.foo", "x") == ("labels.event_foo", "x")
    assert _fields.place("user.id", 42) == ("user.id", "42")
    assert _fields.place("file", "x") == ("labels.file", "x")
    assert _fields.place("file.size", 1.5) == ("bot.file_size", 1.5)
    # Celery's "Task ... succeeded" record: extra data={"runtime": ...}; one level under bot.*,
    # which the index template maps as double (a nested bot.data object was rejected by ES)
    assert _fields.place("data.runtime", 0.2) == ("bot.data_runtime", 0.2)
    assert _fields.place("bot.queue.depth", 3) == ("bot.queue_depth", 3)
    assert _fields.place("bot.rss", 3) == ("bot.rss", 3)
    assert _fields.place("event.start", "2026-01-01T00:00:00Z") == ("event.start", "2026-01-01T00:00:00Z")
    assert _fields.place("event.start", "yesterday") == ("labels.event_start", "yesterday")
    assert _fields.place("source.ip", "10.0.0.1") == ("source.ip", "10.0.0.1")
    assert _fields.place("source.ip", "localhost") == ("labels.source_ip", "localhost")
    assert _fields.place("event.outcome", "success") == ("event.outcome", "success")
    assert _fields.place("event.outcome", "ok") == ("labels.event_outcome", "ok")
    assert _fields.place("event.type", "info") == ("event.type", ["info"])


def test_any_extra_whatsoever_gives_an_ecs_line(ecs):
    """Random extras (ECS names of every type, unknown names, nested dicts, odd values) -> valid ECS."""
    import random

    from exporter.logger_manager import ECSFormatter
    from exporter.logger_manager._formatter import STANDARD_ATTRIBUTES

    rng = random.Random(20261128)
    names = sorted(ecs["fields"])
    values = [None, "text", "", 0, 7, -3, 2.5, float("nan"), True, False, ["a", "b"], [1, 2], [], {},
              {"nested": "x"}, {"nested": {"deeper": 1}}, b"bytes", {1, 2}, object(), ("t", 1),
              "2026-01-01T00:00:00Z", "10.0.0.1", "::1", "not-a-date"]
    made = 0
    for _ in range(300):
        record = logging.LogRecord("fuzz", logging.INFO, "/f.py", 1, "fuzz %s", ("x",), None, func="f")
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.6:
                key = rng.choice(names)
            elif kind < 0.8:
                key = rng.choice(["customer", "retries", "labels.x", "bot.y", "event.foo", "user", "log",
                                  "trace", "message.x", "labels", "bot"])
            else:
                key = rng.choice(names).rsplit(".", 1)[0]  # an object field with a leaf value
            if key not in STANDARD_ATTRIBUTES:  # logging refuses extras that clobber its own
                record.__dict__[key] = rng.choice(values)
        line = ECSFormatter().format(record)
        assert problems_of(json.loads(line), ecs) == [], line
        made += 1
    assert made == 300
