"""The logger manager against real files: ECS lines, rotation, errors, faults, redaction, traces."""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import ecs_logging
import pytest

from exporter.cli import main as cli_main
from exporter.config import load_settings
from exporter.errors import LoggingSetupError
from exporter.logger_manager import ECS_VERSION, ECSFormatter, LoggerManager
from exporter.logger_manager._redact import MASK
from exporter.metrics import Metrics
from exporter.sinks import SINKS
from tests.probes import AUDIT_SIDE_EFFECTS

ROOT = Path(__file__).resolve().parent.parent

TOKEN = "123456789:AAHk3w-example_Token_Value_01234567"  # the shape of a Telegram bot token
assert len(TOKEN.split(":")[1]) == 35


def read_lines(path: Path) -> list[dict]:
    for handler in logging.getLogger().handlers:  # lines below WARNING are written behind the caller
        handler.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


def make_settings(log_dir: Path, **flags):
    values = {"LOG_DIR": str(log_dir), "LOG_CONSOLE": False, **flags}
    return load_settings(values, environ={})


@pytest.fixture
def manager(log_dir: Path, metrics: Metrics):
    lm = LoggerManager(make_settings(log_dir), metrics)
    lm.enable()
    yield lm
    lm.disable()


# --------------------------------------------------------------------------- basics


def test_any_logger_comes_out_as_ecs_in_bot_json(manager, log_dir):
    logging.getLogger("bot.handlers").info("user %s joined chat %d", "alice", 42)
    logging.getLogger("bot.handlers").debug("not written: below LOG_LEVEL INFO")
    [line] = read_lines(log_dir / "bot.json")
    assert line["message"] == "user alice joined chat 42"
    assert line["log.level"] == "info"
    assert line["ecs.version"] == ECS_VERSION == "8.11.0"
    assert line["log"]["logger"] == "bot.handlers"
    assert line["log"]["origin"]["file"]["name"] == "test_logger_manager.py"
    assert line["log"]["origin"]["function"] == "test_any_logger_comes_out_as_ecs_in_bot_json"
    assert line["process"]["pid"] == os.getpid()
    assert "original" not in line["log"]
    assert "trace" not in line and "span" not in line


def test_files_are_0600_and_directory_0700(manager, log_dir):
    logging.getLogger("bot").error("written to both files")
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    for name in ("bot.json", "errors.json"):
        assert stat.S_IMODE((log_dir / name).stat().st_mode) == 0o600


def test_errors_file_holds_only_errors(manager, log_dir):
    log = logging.getLogger("bot.worker")
    log.info("fine")
    log.warning("hmm")
    log.error("broken")
    log.critical("on fire")
    assert [line["message"] for line in read_lines(log_dir / "errors.json")] == ["broken", "on fire"]
    assert len(read_lines(log_dir / "bot.json")) == 4


def test_rotation_by_size_keeps_backup_count_files(log_dir, metrics):
    lm = LoggerManager(make_settings(log_dir, LOG_MAX_SIZE=2000, LOG_BACKUP_COUNT=2), metrics)
    lm.enable()
    try:
        for number in range(200):
            logging.getLogger("bot.rotate").info("record number %04d", number)
    finally:
        lm.disable()
    names = sorted(path.name for path in log_dir.iterdir())
    assert names == ["bot.json", "bot.json.1", "bot.json.2", "errors.json"]
    numbers = []
    for name in ("bot.json.2", "bot.json.1", "bot.json"):
        path = log_dir / name
        assert path.stat().st_size <= 2000
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        numbers += [int(line["message"].split()[-1]) for line in read_lines(path)]
    # oldest file first: the kept records are the newest ones, contiguous and in order
    assert numbers == list(range(200 - len(numbers), 200))
    assert numbers[-1] == 199


def test_disable_removes_exactly_what_enable_added(log_dir, metrics):
    root = logging.getLogger()
    mine = logging.NullHandler()
    root.addHandler(mine)
    before_handlers, before_level = list(root.handlers), root.level
    lm = LoggerManager(make_settings(log_dir, LOG_LEVEL="DEBUG"), metrics)
    lm.enable()
    assert len(root.handlers) == len(before_handlers) + 1
    assert root.level == logging.DEBUG
    lm.disable()
    root.removeHandler(mine)
    assert list(root.handlers) == [h for h in before_handlers if h is not mine]
    assert root.level == before_level
    assert lm.enabled is False
    logging.getLogger("bot").error("after disable: nowhere")
    assert "after disable" not in (log_dir / "errors.json").read_text()


def test_disabled_manager_does_nothing(log_dir, metrics):
    lm = LoggerManager(make_settings(log_dir), metrics)
    assert lm.log_event("x", "success", task_id="t") is None
    lm.log_download("t", "f.zip", 10, 1.0, 10.0, "completed")
    assert not log_dir.exists()
    assert sample(metrics, "bot_downloads_total", outcome="success") == 0


# --------------------------------------------------------------------------- setup errors


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_rotation_survives_files_moved_or_deleted_by_another_process(tmp_path):
    from exporter.logger_manager._handler import RotatingFile

    output = RotatingFile("file", tmp_path / "bot.json", 100, 3, logging.INFO)
    output.write(b'{"n":1,"pad":"' + b"x" * 40 + b'"}\n')
    os.unlink(tmp_path / "bot.json")  # e.g. "opsstack logs cleanup", or a second bot rotating first
    output.write(b'{"n":2,"pad":"' + b"x" * 40 + b'"}\n')  # rotates: there is no bot.json to move
    output.write(b'{"n":3,"pad":"' + b"x" * 40 + b'"}\n')  # and the output is still open
    output.close()
    assert json.loads((tmp_path / "bot.json").read_bytes())["n"] == 3
    assert json.loads((tmp_path / "bot.json.1").read_bytes())["n"] == 2


def test_missing_parent_directory_raises_naming_the_path(tmp_path, metrics):
    target = tmp_path / "no" / "such" / "logs"
    handlers = list(logging.getLogger().handlers)
    lm = LoggerManager(make_settings(target), metrics)
    with pytest.raises(LoggingSetupError, match=str(tmp_path / "no" / "such")):
        lm.enable()
    assert logging.getLogger().handlers == handlers
    assert lm.enabled is False


def test_shipping_without_the_elasticsearch_client_is_an_error_at_enable(tmp_path, metrics, monkeypatch):
    from exporter.sinks import elasticsearch as sink_module

    def missing(settings):
        raise ModuleNotFoundError("No module named 'elasticsearch'")

    monkeypatch.setattr(sink_module, "_new_client", missing)
    handlers = list(logging.getLogger().handlers)
    lm = LoggerManager(make_settings(tmp_path / "logs", ELASTICSEARCH_URL="http://127.0.0.1:9",
                                     STATE_DIR=str(tmp_path / "state")), metrics, sink_factories=SINKS)
    with pytest.raises(LoggingSetupError, match="ELASTICSEARCH_URL.*No module named 'elasticsearch'"):
        lm.enable()
    assert logging.getLogger().handlers == handlers and lm.enabled is False


def test_shipping_with_a_state_dir_that_is_a_file_is_an_error_naming_it(tmp_path, metrics):
    (tmp_path / "state").write_text("not a directory")
    lm = LoggerManager(make_settings(tmp_path / "logs", ELASTICSEARCH_URL="http://127.0.0.1:9",
                                     STATE_DIR=str(tmp_path / "state")), metrics, sink_factories=SINKS)
    with pytest.raises(LoggingSetupError, match=f"STATE_DIR={tmp_path / 'state'}"):
        lm.enable()
    assert lm.enabled is False


def test_log_dir_that_is_a_file_raises(tmp_path, metrics):
    target = tmp_path / "logs"
    target.write_text("not a directory")
    with pytest.raises(LoggingSetupError, match=str(target)):
        LoggerManager(make_settings(target), metrics).enable()


def test_creates_log_dir_when_parent_is_writable(tmp_path, metrics):
    target = tmp_path / "fresh"
    lm = LoggerManager(make_settings(target), metrics)
    lm.enable()
    lm.disable()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_unwritable_log_dir_raises_and_leaks_nothing(metrics):
    # /proc/self/fdinfo is a real directory no one (not even root) can create files in.
    fds = _fds()
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(LoggingSetupError, match="/proc/self/fdinfo"):
        LoggerManager(make_settings(Path("/proc/self/fdinfo")), metrics).enable()
    assert logging.getLogger().handlers == handlers
    assert _fds() <= fds


# --------------------------------------------------------------------------- run-time faults


def test_failing_output_is_counted_reported_once_and_never_raises(manager, log_dir, metrics, capsys):
    bot_file = manager._handler.files[0]
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, bot_file._fd)  # every write to bot.json now fails with ENOSPC, for real
    os.close(full)
    log = logging.getLogger("bot.disk")
    for number in range(3):
        log.error("disk is full %d", number)
    assert sample(metrics, "bot_log_handler_errors_total", handler="file") == 3
    assert manager.get_log_stats()["handler_errors"]["file"] == 3
    report = capsys.readouterr().err
    assert report.count("log output 'file' failed") == 1
    assert "No space left" in report
    # the other outputs still work
    assert [line["message"] for line in read_lines(log_dir / "errors.json")] == [
        "disk is full 0", "disk is full 1", "disk is full 2"]


class _Weird:
    def __repr__(self) -> str:
        return "<Weird object>"


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_odd_extra_values_still_give_valid_json(manager, log_dir):
    recursive_list: list = [1]
    recursive_list.append(recursive_list)
    recursive_dict: dict = {"a": 1}
    recursive_dict["self"] = recursive_dict
    log = logging.getLogger("bot.odd")
    log.info("odd values", extra={
        "labels.obj": _Weird(), "bot.blob": b"\x00\xffbytes", "tags": {"a", "b"},
        "bot.loop": recursive_list, "bot.tree": recursive_dict, "bot.nan": float("nan"),
        "bot.broken": _BrokenRepr(), "url.full": _Weird(), "custom_thing": {(1, 2): "tuple key"},
    })
    [first] = read_lines(log_dir / "bot.json")
    assert first["message"] == "odd values"
    assert first["labels"]["obj"] == "<Weird object>"
    assert first["url"]["full"] == "<Weird object>"
    assert first["labels"]["loop"] == ["1", "[recursive]"]  # bot.* holds numbers only
    assert first["labels"]["tree_self"] == "[recursive]"
    assert first["labels"]["nan"] == "nan"
    assert first["labels"]["blob"] == repr(b"\x00\xffbytes")
    assert first["bot"] == {"tree_a": 1}  # one level under bot.*, as Elasticsearch maps it
    assert first["labels"]["broken"].startswith("<unrepresentable _BrokenRepr")
    assert first["labels"]["custom_thing_(1, 2)"] == "tuple key"


def test_record_whose_message_cannot_be_built_still_gives_a_line():
    record = logging.LogRecord("bot", logging.INFO, "/a/b.py", 3, "bad args %d", ("not a number",), None)
    line = json.loads(ECSFormatter().format(record))
    assert "bad args" in line["message"] and "not a number" in line["message"]
    assert line["error"]["type"] == "TypeError"
    assert line["log.level"] == "info"


# --------------------------------------------------------------------------- custom events and metrics


def test_every_event_names_the_bots_line_and_uses_the_bots_record_factory(manager, log_dir):
    """An event's record is made by the manager, not by ``Logger.log``: its log.origin must
    still be the line that called the event method, and a bot's own factory must make it."""
    made = []
    standard = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = standard(*args, **kwargs)
        made.append(record.name)
        return record

    logging.setLogRecordFactory(factory)
    try:
        here = sys._getframe().f_lineno
        manager.log_download("d", "a.zip", 1, 1.0, 1.0, "completed")
        manager.log_upload("u", "b.zip", 1, 1.0, 1.0, "completed")
        manager.log_api_call("sendMessage", 0.05, "success", 200)
        manager.log_event("backup.create", "success", "backup done")
    finally:
        logging.setLogRecordFactory(standard)
    manager.flush()
    lines = read_lines(log_dir / "bot.json")
    assert [line["log"]["origin"]["file"]["line"] for line in lines] == [here + 1, here + 2, here + 3, here + 4]
    assert {line["log"]["origin"]["function"] for line in lines} == {
        "test_every_event_names_the_bots_line_and_uses_the_bots_record_factory"}
    assert {line["log"]["origin"]["file"]["name"] for line in lines} == {"test_logger_manager.py"}
    assert made == ["exporter.events"] * 4


def test_custom_events_update_metrics_and_stats(manager, log_dir, metrics):
    manager.log_download("download_1", "a.zip", 1000, 2.0, 500.0, "completed")
    manager.log_download("download_2", "b.zip", 50, 1.0, 50.0, "failed")
    manager.log_upload("upload_1", "c.mp4", 300, 1.0, 300.0, "completed")
    manager.log_api_call("sendMessage", 0.05, "success", 200)
    manager.log_api_call("getFile", 0.5, "failure", 502, url=f"https://api.telegram.org/bot{TOKEN}/getFile")
    manager.log_event("backup.create", "success", "backup done", task_id="backup_1", file_size=12345)
    assert sample(metrics, "bot_downloads_total", outcome="success") == 1
    assert sample(metrics, "bot_downloads_total", outcome="failure") == 1
    assert sample(metrics, "bot_uploads_total", outcome="success") == 1
    assert sample(metrics, "bot_transferred_bytes_total", direction="download") == 1000
    assert sample(metrics, "bot_transferred_bytes_total", direction="upload") == 300
    assert sample(metrics, "bot_api_calls_total", outcome="success") == 1
    assert sample(metrics, "bot_api_calls_total", outcome="failure") == 1
    manager.flush()  # an INFO event line is written behind the caller, and counted when written
    assert sample(metrics, "bot_log_records_total", level="info") == 4
    assert sample(metrics, "bot_log_records_total", level="warning") == 2
    lines = read_lines(log_dir / "bot.json")
    assert [line["event"]["action"] for line in lines] == [
        "download", "download", "upload", "api-call", "api-call", "backup.create"]
    failed = lines[1]
    assert failed["log.level"] == "warning" and failed["event"]["outcome"] == "failure"
    assert lines[0]["event"]["duration"] == 2_000_000_000
    assert lines[0]["log"]["origin"]["function"] == "test_custom_events_update_metrics_and_stats"
    assert lines[4]["url"]["full"] == f"https://api.telegram.org/bot{MASK}/getFile"
    assert lines[5]["file"]["size"] == 12345 and lines[5]["labels"]["task_id"] == "backup_1"
    stats = manager.get_log_stats()
    assert stats["records_by_level"] == {"critical": 0, "error": 0, "warning": 2, "info": 4, "debug": 0}
    assert stats["log_file_count"] == 2
    assert stats["handlers"]["file"]["bytes"] == (log_dir / "bot.json").stat().st_size > 0
    assert stats["total_bytes"] == stats["handlers"]["file"]["bytes"] + stats["handlers"]["errors"]["bytes"]
    assert stats["redactions"] == 2  # the token in url.full and in url.path
    assert stats["shipping"] is None


def test_log_event_never_raises_on_bad_fields(manager, log_dir):
    manager.log_event(object(), None, None, weird=object(), duration="soon", event_duration="x")
    [line] = read_lines(log_dir / "bot.json")
    assert line["event"]["outcome"] == "unknown"
    assert isinstance(line["labels"]["weird"], str)


def test_cleanup_old_logs_deletes_only_old_rotated_files(manager, log_dir):
    old = time.time() - 10 * 86400
    for name in ("bot.json.1", "bot.json.2", "errors.json.1"):
        (log_dir / name).write_text("{}\n")
        os.utime(log_dir / name, (old, old))
    (log_dir / "bot.json.3").write_text("{}\n")  # recent
    os.utime(log_dir / "bot.json", (old, old))  # the active file is never deleted
    assert manager.cleanup_old_logs(7) == 3
    assert sorted(path.name for path in log_dir.iterdir()) == ["bot.json", "bot.json.3", "errors.json"]
    with pytest.raises(ValueError):
        manager.cleanup_old_logs(-1)


# --------------------------------------------------------------------------- sinks


class RecordingSink:
    def __init__(self, fail: bool = False) -> None:
        self.lines: list[tuple[bytes, int]] = []
        self.closed_with: float | None = None
        self.fail = fail

    def submit(self, line: bytes, levelno: int) -> None:
        if self.fail:
            raise RuntimeError("sink broke")
        self.lines.append((line, levelno))

    def stats(self) -> dict:
        return {"queued": len(self.lines)}

    def close(self, timeout: float) -> None:
        self.closed_with = timeout


def test_sink_gets_every_line_at_or_above_log_level(log_dir, metrics):
    lm = LoggerManager(make_settings(log_dir, LOG_SHUTDOWN_TIMEOUT=3.5), metrics)
    sink = RecordingSink()
    lm.add_sink(sink)
    lm.enable()
    logging.getLogger("bot").debug("below level")
    logging.getLogger("bot").info("shipped %s", TOKEN)
    lm.log_event("x", "success")
    assert lm.get_log_stats()["shipping"] == {"queued": 2}
    lm.disable()
    assert sink.closed_with == 3.5
    assert [levelno for _, levelno in sink.lines] == [logging.INFO, logging.INFO]
    first = sink.lines[0][0]
    assert isinstance(first, bytes) and first.endswith(b"}\n") and first.count(b"\n") == 1
    assert json.loads(first)["message"] == f"shipped {MASK}"
    file_lines = (log_dir / "bot.json").read_bytes().splitlines(keepends=True)
    assert file_lines == [line for line, _ in sink.lines]


def test_failing_sink_is_counted_and_files_still_written(manager, log_dir, metrics):
    manager.add_sink(RecordingSink(fail=True))
    logging.getLogger("bot").info("one")
    logging.getLogger("bot").info("two")
    manager.flush()  # written behind the caller
    assert sample(metrics, "bot_log_handler_errors_total", handler="sink") == 2
    assert len(read_lines(log_dir / "bot.json")) == 2


def test_elasticsearch_sink_is_attached_when_url_is_set(log_dir, metrics, monkeypatch):
    made = []

    class FakeElasticsearchSink(RecordingSink):
        def __init__(self, settings, metrics_):
            super().__init__()
            self.started = False
            made.append((settings, metrics_, self))

        def start(self):
            self.started = True

    from exporter.sinks import elasticsearch as sink_module

    monkeypatch.setattr(sink_module, "ElasticsearchSink", FakeElasticsearchSink)
    settings = load_settings({"LOG_DIR": str(log_dir), "LOG_CONSOLE": False,
                              "ELASTICSEARCH_URL": "http://127.0.0.1:9"}, environ={})
    lm = LoggerManager(settings, metrics, sink_factories=SINKS)
    lm.enable()
    logging.getLogger("bot").warning("to elasticsearch")
    lm.disable()
    [(given_settings, given_metrics, sink)] = made
    assert given_settings is settings.shipping and given_metrics is metrics  # its own section only
    assert sink.started  # by enable(): the client loads then, not in the middle of the first burst
    assert json.loads(sink.lines[0][0])["message"] == "to elasticsearch"
    assert sink.closed_with == settings.shipping.shutdown_timeout


# --------------------------------------------------------------------------- redaction

SECRET_PASSWORD = "correct-horse-battery"


@pytest.fixture
def redacting(log_dir, metrics):
    settings = load_settings({"LOG_DIR": str(log_dir), "LOG_CONSOLE": False,
                              "SMTP_PASSWORD": SECRET_PASSWORD}, environ={})
    lm = LoggerManager(settings, metrics)
    lm.enable()
    yield lm
    lm.disable()


REDACTION_CASES = {
    "telegram token": ("telegram.ext", "token is %s", (TOKEN,), TOKEN),
    "token in bot API URL (httpx)": (
        "httpx", 'HTTP Request: POST https://api.telegram.org/bot%s/sendMessage "HTTP/1.1 200 OK"', (TOKEN,), TOKEN),
    "URL userinfo password (urllib3)": ("urllib3.connectionpool", "Starting new connection to %s",
                                        ("https://bob:s3cr3t-pw@db.example.org:5432/bot",), "s3cr3t-pw"),
    "query string token": ("httpx", "GET %s", ("https://example.org/hook?user=1&token=tok-123456&x=2",),
                           "tok-123456"),
    "password= in a form": ("bot.login", "posting password=hunter22 to the form", (), "hunter22"),
    "api_key= in a URL": ("urllib3", "GET /v1?api_key=K-42-secret", (), "K-42-secret"),
    "signed URL": ("httpx", "GET https://cdn.example/f?X-Amz-Signature=abcdef0123&sig=s1gnat", (), "abcdef0123"),
    "pass= in a DSN": ("bot.db", "connecting with host=db user=bot pass=pa55word", (), "pa55word"),
    "api_hash in a dict": ("telegram", "client settings %s", ({"api_id": 12345, "api_hash": "0123456789abcdef"},),
                           "0123456789abcdef"),
    "Authorization header": ("httpx", "headers %s", ({"Authorization": "Bearer eyJhbGciOi.payload.sig"},),
                             "eyJhbGciOi.payload.sig"),
    "secret setting value": ("bot.mail", "logging in to smtp with %s", (SECRET_PASSWORD,), SECRET_PASSWORD),
    "prefixed key in an environment dump": ("bot", "env DB_PASSWORD=hunter2Secret HOME=/root", (), "hunter2Secret"),
    "prefixed key in a query": ("httpx", "GET https://example.org/x?api_token=tok-98765", (), "tok-98765"),
    "quoted passphrase with spaces": ("bot", "password: 'correct horse battery'", (), "horse battery"),
    "token as URL user name": ("git", "clone https://ghp_0123456789abcdefXYZ@github.com/o/r.git", (),
                               "ghp_0123456789abcdefXYZ"),
    "Cookie header": ("httpx", "Cookie: session=abc123def; theme=dark", (), "abc123def"),
}


@pytest.mark.parametrize("text", ["a_" * 20_000 + " token=x", "x-" * 20_000 + "pass:", "a." * 20_000 + "=token",
                                  "password: '" + "a b " * 10_000, "see https://" + "a" * 40_000 + " x"])
def test_redaction_of_a_pathological_line_does_not_hang(text):
    from exporter.logger_manager._redact import Redactor

    started = time.monotonic()
    Redactor().redact(text)
    # linear: about 30 ms here; nested repetition in a pattern once took 10 s for a quarter of this
    assert time.monotonic() - started < 2.0


def test_secret_fields_are_masked_by_name_at_any_depth(redacting, log_dir):
    logging.getLogger("bot").info("request", extra={
        "db_password": "hunter2Secret", "api-token": "tok-55555",
        "users": [{"name": "bob", "password": "pw-in-a-list"}],
        "request_headers": [("Authorization", "Bearer in-a-pair")],
    })
    redacting.flush()  # an INFO line is written behind the caller
    text = (log_dir / "bot.json").read_text()
    for secret in ("hunter2Secret", "tok-55555", "pw-in-a-list", "in-a-pair"):
        assert secret not in text
    assert "bob" in text  # the rest of the value stays


@pytest.mark.parametrize("case", sorted(REDACTION_CASES))
def test_each_secret_shape_is_masked(redacting, log_dir, metrics, case):
    logger_name, message, args, secret = REDACTION_CASES[case]
    logging.getLogger(logger_name).warning(message, *args)
    text = (log_dir / "bot.json").read_text()
    assert secret not in text
    assert MASK in json.loads(text)["message"]
    assert sample(metrics, "bot_log_redactions_total") >= 1


def test_secrets_masked_in_extra_and_exception_text(redacting, log_dir, metrics):
    try:
        raise ConnectionError(f"POST https://api.telegram.org/bot{TOKEN}/getMe failed, password={SECRET_PASSWORD}")
    except ConnectionError:
        logging.getLogger("httpx").exception("request failed", extra={
            "url.full": f"https://api.telegram.org/bot{TOKEN}/getMe",
            "labels.note": f"auth with {SECRET_PASSWORD}",
            "bot.nested": {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
        })
    text = (log_dir / "bot.json").read_text() + (log_dir / "errors.json").read_text()
    assert TOKEN not in text and SECRET_PASSWORD not in text and "dXNlcjpwYXNz" not in text
    line = json.loads(text.splitlines()[0])
    assert line["error"]["message"].startswith(f"POST https://api.telegram.org/bot{MASK}/getMe")
    assert line["url"]["full"] == f"https://api.telegram.org/bot{MASK}/getMe"
    assert sample(metrics, "bot_log_redactions_total") >= 4
    assert redacting.get_log_stats()["redactions"] == sample(metrics, "bot_log_redactions_total")


def test_redaction_can_be_turned_off(log_dir, metrics):
    lm = LoggerManager(make_settings(log_dir, LOG_REDACT_SECRETS=False), metrics)
    lm.enable()
    logging.getLogger("bot").info("token %s", TOKEN)
    lm.disable()
    assert TOKEN in (log_dir / "bot.json").read_text()
    assert sample(metrics, "bot_log_redactions_total") == 0


def test_plain_text_is_left_alone(redacting, log_dir, metrics):
    text = "download failed: peer reset at 12:30:45, retry=3 of 5"
    logging.getLogger("bot").info(text)
    assert read_lines(log_dir / "bot.json")[0]["message"] == text
    assert sample(metrics, "bot_log_redactions_total") == 0


# --------------------------------------------------------------------------- trace correlation


def test_lines_inside_a_span_carry_trace_and_span_ids(manager, log_dir):
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    log = logging.getLogger("bot.traced")
    log.info("before")
    with tracer.start_as_current_span("outer") as outer:
        log.info("in outer")
        with tracer.start_as_current_span("inner") as inner:
            manager.log_event("inner.work", "success")
            try:
                raise ValueError("inside")
            except ValueError:
                log.exception("failed inside")
    log.info("after")
    lines = read_lines(log_dir / "bot.json")
    assert "trace" not in lines[0] and "trace" not in lines[-1]
    outer_ctx, inner_ctx = outer.get_span_context(), inner.get_span_context()
    assert lines[1]["trace"]["id"] == format(outer_ctx.trace_id, "032x")
    assert lines[1]["span"]["id"] == format(outer_ctx.span_id, "016x")
    for line in lines[2:4]:
        assert line["trace"]["id"] == format(inner_ctx.trace_id, "032x")
        assert line["span"]["id"] == format(inner_ctx.span_id, "016x")


def test_trace_ids_follow_each_thread(manager, log_dir):
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    seen = {}

    def work(name: str) -> None:
        with tracer.start_as_current_span(name) as span:
            seen[name] = format(span.get_span_context().span_id, "016x")
            for _ in range(50):
                logging.getLogger("bot.thread").info(name)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = read_lines(log_dir / "bot.json")
    assert len(lines) == 200
    assert all(line["span"]["id"] == seen[line["message"]] for line in lines)


# --------------------------------------------------------------------------- the ecs-logging reference


def _records() -> list[logging.LogRecord]:
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    log = logging.getLogger("reference.check")
    log.propagate = False
    handler = Capture()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("plain")
        log.info("args %s and %d and %r", "text", 7, {"k": [1, 2]})
        log.warning("unicode: zürich ✓ \"quotes\" \\ back\nline")
        log.error("ecs extras", extra={"http.request.method": "POST", "url": {"full": "https://x.example/y"},
                                       "event.duration": 12, "labels.task_id": "t-1", "tags": ["a", "b"]})
        try:
            {}["missing"]
        except KeyError:
            log.exception("with exception")
        log.critical("with stack", stack_info=True)
        thread = threading.Thread(target=log.info, args=("from a thread",), name="worker-1")
        thread.start()
        thread.join()
    finally:
        log.removeHandler(handler)
        log.propagate = True
    return captured


def test_lines_equal_ecs_logging_output_field_for_field():
    reference = ecs_logging.StdlibFormatter()
    mine = ECSFormatter()
    records = _records()
    assert len(records) == 7
    for record in records:
        ours = json.loads(mine.format(record))
        theirs = json.loads(reference.format(record))
        assert ours.pop("ecs.version") == "8.11.0"
        assert theirs.pop("ecs.version") == "1.6.0"
        assert theirs["log"].pop("original") == record.getMessage()  # ECS 8 no longer has log.original
        assert ours == theirs, record.getMessage()


def test_first_keys_are_timestamp_level_message_like_ecs_logging():
    record = _records()[1]
    line = ECSFormatter().format(record)
    assert line.startswith('{"@timestamp":"')
    assert list(json.loads(line))[:3] == ["@timestamp", "log.level", "message"]


def test_non_ecs_extra_moves_under_labels_or_bot():
    record = logging.LogRecord("x", logging.INFO, "/a/b.py", 3, "m", (), None)
    record.__dict__.update({"customer": "acme", "retries": 3, "user": "bob", "file.size": "big"})
    line = json.loads(ECSFormatter().format(record))
    assert line["labels"] == {"customer": "acme", "user": "bob", "file_size": "big"}
    assert line["bot"] == {"retries": 3}
    assert "customer" not in line and "user" not in line and "file" not in line


# --------------------------------------------------------------------------- the CLI


def test_cli_logs_stats_and_cleanup(log_dir, metrics, monkeypatch, capsys):
    lm = LoggerManager(make_settings(log_dir), metrics)
    lm.enable()
    logging.getLogger("bot").error("something")
    lm.disable()
    old = time.time() - 5 * 86400
    (log_dir / "bot.json.1").write_text("{}\n")
    os.utime(log_dir / "bot.json.1", (old, old))
    monkeypatch.setenv("LOG_DIR", str(log_dir))
    monkeypatch.delenv("OPSSTACK_CONFIG", raising=False)
    assert cli_main(["logs", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["log_file_count"] == 3
    assert stats["handlers"]["file"]["files"] == 2
    assert stats["total_bytes"] == sum(path.stat().st_size for path in log_dir.iterdir())
    assert cli_main(["logs", "cleanup", "--days", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 1
    assert not (log_dir / "bot.json.1").exists()
    assert cli_main(["logs", "stats"]) == 0
    assert "2 files" in capsys.readouterr().out


# --------------------------------------------------------------------------- import has no effects

IMPORT_PROBE = textwrap.dedent("""
    import os, sys, threading
""") + AUDIT_SIDE_EFFECTS + textwrap.dedent("""
    fds = set(os.listdir("/proc/self/fd"))
    import logging
    handlers = list(logging.getLogger().handlers)
    import exporter.logger_manager
    from exporter.logger_manager import logger_manager
    logger_manager.log_event("x", "success")
    logger_manager.log_download("t", "f", 1, 1.0, 1.0, "completed")
    print(events, threading.active_count(), len(set(os.listdir("/proc/self/fd")) - fds),
          logging.getLogger().handlers == handlers, logger_manager.enabled,
          [m for m in ("opentelemetry", "ecs_logging", "elasticsearch") if m in sys.modules])
""")


def test_import_opens_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] 1 0 True False []"
    assert list(tmp_path.iterdir()) == []


def test_log_event_fields_as_other_managers_pass_them(manager, log_dir):
    manager.log_event("backup", "success", "backup b1 created", event_action="backup-create",
                      event_duration=1_500_000_000, backup_name="b1", file_size=2048)
    manager.log_event("integrity", "failure", "integrity of /data failed", level=logging.WARNING,
                      event_action="integrity-check", file_path="/data", error=OSError("bad hash"))
    first, second = read_lines(log_dir / "bot.json")
    assert first["event"] == {"action": "backup-create", "duration": 1_500_000_000, "kind": "event",
                              "outcome": "success"}
    assert first["labels"] == {"backup_name": "b1"} and first["file"] == {"size": 2048}
    assert second["log.level"] == "warning" and second["event"]["outcome"] == "failure"
    assert second["file"] == {"path": "/data"}
    assert second["error"] == {"message": "bad hash", "type": "OSError"}


def test_console_output_goes_to_stderr(log_dir, metrics, capsys):
    lm = LoggerManager(make_settings(log_dir, LOG_CONSOLE=True), metrics)
    lm.enable()
    logging.getLogger("bot").warning("to the console")
    lm.disable()
    err = capsys.readouterr().err
    [line] = [json.loads(text) for text in err.splitlines() if text.startswith("{")]
    assert line["message"] == "to the console"


def test_a_sink_that_logs_while_submitting_does_not_loop(manager, log_dir):
    class ChattySink(RecordingSink):
        def submit(self, line: bytes, levelno: int) -> None:
            super().submit(line, levelno)
            logging.getLogger("elastic_transport").info("sent one line")

    sink = ChattySink()
    manager.add_sink(sink)
    logging.getLogger("bot").info("hello")
    manager.flush()  # written behind the caller
    assert [json.loads(line)["message"] for line, _ in sink.lines] == ["hello"]
    assert [line["message"] for line in read_lines(log_dir / "bot.json")] == ["hello", "sent one line"]


@pytest.mark.parametrize("fast", [True, False], ids=["context-variable", "public-api"])
def test_trace_ids_function_both_ways(monkeypatch, fast):
    from opentelemetry.sdk.trace import TracerProvider

    from exporter.logger_manager import _trace

    if not fast:
        monkeypatch.setattr(_trace, "_context_variable", lambda: (None, None))
    current = _trace.trace_ids_function()
    assert current() is None
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        context = span.get_span_context()
        assert current() == (format(context.trace_id, "032x"), format(context.span_id, "016x"))
        assert current() is current()  # cached per span
    assert current() is None


def test_log_dir_that_cannot_be_created_raises_naming_it(metrics):
    target = Path("/proc/opsstack-logs")  # /proc exists; nothing can be created in it
    with pytest.raises(LoggingSetupError, match="/proc/opsstack-logs"):
        LoggerManager(make_settings(target), metrics).enable()


def test_stats_while_disabled_read_the_directory(log_dir, metrics):
    lm = LoggerManager(make_settings(log_dir), metrics)
    lm.enable()
    logging.getLogger("bot").info("one")
    lm.disable()
    stats = lm.get_log_stats()
    assert stats["enabled"] is False
    assert stats["records_by_level"]["info"] == 1  # the last enabled period
    assert stats["handlers"]["file"]["files"] == 1
    assert stats["handlers"]["file"]["bytes"] == (log_dir / "bot.json").stat().st_size
    assert sample(metrics, "bot_feature_enabled", feature="logging") == 0


def test_extra_cannot_overwrite_the_fields_the_formatter_owns():
    record = logging.LogRecord("x", logging.INFO, "/a/b.py", 3, "real message", (), None, func="f")
    record.__dict__.update({"ecs.version": "1.0", "log.level": "fake", "@timestamp": "then", "labels": "flat"})
    line = ECSFormatter().format(record)
    assert line.count('"message"') == 1 and line.count('"ecs.version"') == 1
    parsed = json.loads(line)
    assert parsed["message"] == "real message" and parsed["log.level"] == "info"
    assert parsed["ecs.version"] == ECS_VERSION and "ecs" not in parsed
    assert parsed["labels"] == {"ecs_version": "1.0", "log_level": "fake", "@timestamp": "then", "labels": "flat"}


def test_threads_logging_through_rotations_lose_and_tear_nothing(log_dir, metrics):
    lm = LoggerManager(make_settings(log_dir, LOG_MAX_SIZE=20_000, LOG_BACKUP_COUNT=100), metrics)
    lm.enable()

    def work(name: str) -> None:
        log = logging.getLogger(f"bot.{name}")
        for number in range(500):
            log.info("%s %d", name, number)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        lm.disable()
    files = sorted(log_dir.glob("bot.json*"))
    assert len(files) > 10  # it did rotate, many times
    messages = [line["message"] for path in files for line in read_lines(path)]
    assert sorted(messages) == sorted(f"t{n} {number}" for n in range(4) for number in range(500))
    assert sample(metrics, "bot_log_records_total", level="info") == 2000


EXIT_PROBE = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from exporter.config import load_settings
    from exporter.logger_manager import LoggerManager

    class FileSink:
        def submit(self, line, levelno):
            self.last = line
        def stats(self):
            return {}
        def close(self, timeout):
            Path(sys.argv[1], "closed").write_text(f"{timeout} {self.last.decode()}")

    lm = LoggerManager(load_settings({"LOG_DIR": sys.argv[1] + "/logs", "LOG_CONSOLE": False}, environ={}))
    lm.add_sink(FileSink())
    lm.enable()
    logging.getLogger("bot").warning("last words")
    # no disable(): the exit hook closes the sink
""")


def test_sinks_are_closed_at_exit_without_disable(tmp_path):
    result = subprocess.run([sys.executable, "-c", EXIT_PROBE, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    timeout, line = (tmp_path / "closed").read_text().split(" ", 1)
    assert float(timeout) == load_settings(environ={}).shipping.shutdown_timeout
    assert json.loads(line)["message"] == "last words"


def test_missing_record_attributes_are_left_out_like_ecs_logging():
    record = logging.LogRecord("bot", logging.INFO, "/a/b.py", 3, "no thread info", (), None)  # funcName None
    record.thread = record.threadName = record.processName = None
    ours, theirs = json.loads(ECSFormatter().format(record)), json.loads(ecs_logging.StdlibFormatter().format(record))
    ours.pop("ecs.version"), theirs.pop("ecs.version"), theirs["log"].pop("original")
    assert ours == theirs
    assert ours["process"] == {"pid": record.process} and "function" not in ours["log"]["origin"]


TORN = """
import logging, resource, sys
from pathlib import Path
from exporter.logger_manager._handler import RotatingFile

path = Path(sys.argv[1])
output = RotatingFile("file", path, 1 << 20, 3, logging.INFO)
output.write(b'{"n":1}\\n')
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (12, hard))  # the disk is full 4 bytes into line 2
try:
    output.write(b'{"n":2,"pad":"xxxx"}\\n')
except OSError as exc:
    print("failed", exc.errno)
try:
    output.write(b'{"n":2.5}\\n')  # still full: not a byte of it, nor of the newline before it
except OSError:
    pass
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
print(output.write(b'{"n":3}\\n'))
output.close()
"""


def test_a_line_torn_by_a_full_disk_is_ended_before_the_next_one(tmp_path):
    """The kernel writes what fits and then refuses (RLIMIT_FSIZE stands for a full disk): the
    next line starts on a line of its own, at the offset the file says."""
    path = tmp_path / "bot.json"
    result = subprocess.run([sys.executable, "-c", TORN, str(path)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    failed, offset = result.stdout.split("\n")[:2]
    assert failed == f"failed {errno.EFBIG}"
    data = path.read_bytes()
    assert data == b'{"n":1}\n{"n"\n{"n":3}\n' and int(offset) == data.index(b'{"n":3}')


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_a_rotation_lock_kept_by_another_process_delays_the_rotation_only_briefly(tmp_path):
    """A child forked while its parent rotated holds the directory's lock for as long as it
    lives: logging in every process must not wait for it."""
    from exporter.logger_manager._handler import ROTATION_LOCK_WAIT, RotatingFile

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        output = RotatingFile("file", tmp_path / "bot.json", 100, 3, logging.INFO)
        output.write(b'{"n":1,"pad":"' + b"x" * 60 + b'"}\n')
        started = time.monotonic()
        output.write(b'{"n":2,"pad":"' + b"x" * 60 + b'"}\n')  # rotates
        assert time.monotonic() - started < ROTATION_LOCK_WAIT + 1
        output.close()
        assert json.loads((tmp_path / "bot.json.1").read_bytes())["n"] == 1
        assert json.loads((tmp_path / "bot.json").read_bytes())["n"] == 2
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
