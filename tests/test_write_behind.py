"""Lines below WARNING written behind the caller: order, what a SIGKILL can lose, values taken at
the call; and the FastRecord factory, a record no handler can tell from the standard one."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from exporter.config import load_settings
from exporter.logger_manager import LoggerManager, _fast_record, _write_behind
from exporter.logger_manager._write_behind import PENDING_LIMIT
from exporter.metrics import Metrics
from tests.probes import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def manager(tmp_path):
    lm = LoggerManager(load_settings({"LOG_DIR": str(tmp_path / "logs"), "LOG_CONSOLE": False}, environ={}),
                       Metrics())
    lm.enable()
    yield lm
    lm.disable()


def _messages(path: Path) -> list[str]:
    return [json.loads(line)["message"] for line in path.read_text().splitlines()] if path.exists() else []


def test_a_plain_info_line_waits_for_the_writer_and_gets_there_on_its_own(manager, tmp_path):
    logging.getLogger("bot").info("behind %s", "the caller")
    assert len(manager._front._queue) == 1  # queued, not written by the caller
    wait_until(lambda: _messages(tmp_path / "logs" / "bot.json") == ["behind the caller"], timeout=5,
               what="the writer thread to write the line")



def _switches(thread) -> int:
    """The context switches of ``thread`` so far (each wake-up is one)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts context switches in /proc")
def test_an_idle_writer_sleeps_until_a_line_is_queued(manager, tmp_path):
    """No timer: with nothing queued the writer thread is not woken at all (it was once a
    second); the next line wakes it."""
    writer = manager._front._thread
    logging.getLogger("bot").info("first")
    wait_until(lambda: _messages(tmp_path / "logs" / "bot.json") == ["first"], what="the first line written")
    time.sleep(0.3)  # the writer back asleep
    before = _switches(writer)
    time.sleep(2.5)
    assert _switches(writer) == before
    logging.getLogger("bot").info("second")
    wait_until(lambda: _messages(tmp_path / "logs" / "bot.json") == ["first", "second"], what="the second line")

def test_every_line_keeps_the_order_it_was_logged_in(manager, tmp_path):
    log = logging.getLogger("bot")
    expected = []
    for number in range(300):
        if number % 7 == 0:
            log.warning("line %d", number)  # written at once, after what is queued
        elif number % 11 == 0:
            log.info("line %d", number, extra={"chat_id": number})  # extras: written at once too
        else:
            log.info("line %d", number)
        expected.append(f"line {number}")
    manager.flush()
    assert _messages(tmp_path / "logs" / "bot.json") == expected


def test_the_message_is_the_one_of_the_moment_it_was_logged(manager, tmp_path):
    state = ["started"]
    logging.getLogger("bot").info("state %s, count %d", state, 1)
    state.append("changed later")
    manager.flush()
    assert _messages(tmp_path / "logs" / "bot.json") == ["state ['started'], count 1"]



def _writer_not_woken(manager, monkeypatch) -> None:
    """No token reaches the writer until the test ends (it sleeps in its get()): the records
    stay queued unless a caller writes them."""
    manager._front._signalled = True  # "a token is on its way": no caller puts one
    monkeypatch.setattr(_write_behind, "HURRY_AT", -1)  # nor for a burst


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_event_is_formatted_by_the_writer_and_written_as_formatted_at_once(manager, tmp_path, monkeypatch):
    """The manager's events (extra values that cannot change) wait in the queue unformatted,
    and the writer writes the line the formatter gives for them on the caller's thread."""
    front = manager._front
    formatted_here = []
    monkeypatch.setattr(front, "_format", lambda *args: formatted_here.append(args) or "")
    _writer_not_woken(manager, monkeypatch)  # the writer does not take them meanwhile
    manager.log_download(task_id="t1", filename="a.mp4", size_bytes=10, duration=0.5, speed=20.0,
                         status="completed")
    manager.log_api_call(method="sendMessage", duration=0.1, status="success", status_code=200)
    logging.getLogger("bot").info("tuple", extra={"chat_id": 7, "tags": ("a", "b")})
    assert not formatted_here
    records = [record for record, message, ids in front._queue if message is None and ids is None]
    assert len(records) == 3
    monkeypatch.undo()
    manager.flush()
    formatter = manager._handler.formatter
    assert (tmp_path / "logs" / "bot.json").read_text().splitlines() == [formatter.format(r) for r in records]
    first = json.loads(formatter.format(records[0]))
    assert first["event"]["category"] == ["file"] and first["event"]["type"] == ["creation"]


def test_an_extra_value_that_could_change_is_taken_at_the_call(manager, tmp_path, monkeypatch):
    _writer_not_woken(manager, monkeypatch)  # the writer does not take it meanwhile
    chats = ["first"]
    logging.getLogger("bot").info("list", extra={"chats": chats})
    chats.append("appended later")
    manager.flush()
    (line,) = _lines(tmp_path / "logs" / "bot.json")
    assert "first" in json.dumps(line) and "appended later" not in json.dumps(line)

def test_a_full_queue_is_written_by_the_caller_and_nothing_is_dropped(manager, tmp_path, monkeypatch):
    _writer_not_woken(manager, monkeypatch)  # a writer that never gets its turn
    for number in range(3 * PENDING_LIMIT):
        logging.getLogger("bot").info("line %d", number)
    assert len(manager._front._queue) <= PENDING_LIMIT
    manager.disable()
    assert _messages(tmp_path / "logs" / "bot.json") == [f"line {n}" for n in range(3 * PENDING_LIMIT)]


KILLED = """
import logging, os, signal, sys
from exporter.config import load_settings
from exporter.logger_manager import LoggerManager
from exporter.metrics import Metrics
lm = LoggerManager(load_settings({"LOG_DIR": sys.argv[1], "LOG_CONSOLE": False}, environ={}), Metrics())
lm.enable()
log = logging.getLogger("bot")
for number in range(int(sys.argv[2])):
    log.info("line %d", number)
if sys.argv[3] == "warning":
    log.warning("the last line")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("last", ["info", "warning"])
def test_sigkill_loses_at_most_the_queued_info_lines_and_nothing_before_a_warning(tmp_path, last):
    count = 5 * PENDING_LIMIT
    result = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path), str(count), last], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    written = _messages(tmp_path / "bot.json")
    logged = [f"line {n}" for n in range(count)] + (["the last line"] if last == "warning" else [])
    assert written == logged[:len(written)]  # in order, no gap: what is lost is the end
    if last == "warning":
        assert written == logged
    else:
        assert len(written) >= count - PENDING_LIMIT - 1


FORK_WRITER = """
import logging, os, sys
from exporter.config import load_settings
from exporter.logger_manager import LoggerManager
from exporter.metrics import Metrics
lm = LoggerManager(load_settings({"LOG_DIR": sys.argv[1], "LOG_CONSOLE": False}, environ={}), Metrics())
lm.enable()
lm._handler.acquire()  # the parent's writer cannot write before the child has (a fork renews the lock)
logging.getLogger("bot").info("queued in the parent")
pid = os.fork()
if pid == 0:
    logging.getLogger("bot").info("from the child")
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"from the child" not in open(sys.argv[1] + "/bot.json", "rb").read():
        time.sleep(0.02)  # the child's own writer writes it, without a flush
    os._exit(0)
os.waitpid(pid, 0)
lm._handler.release()
lm.disable()
"""


def test_a_forked_child_has_a_writer_of_its_own_and_leaves_the_parents_lines_to_it(tmp_path):
    result = subprocess.run([sys.executable, "-c", FORK_WRITER, str(tmp_path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _messages(tmp_path / "bot.json") == ["from the child", "queued in the parent"]


PREEXEC_CHILD = """
import json, logging, os, subprocess, sys, threading
from exporter.config import load_settings
from exporter.logger_manager import LoggerManager
from exporter.metrics import Metrics
lm = LoggerManager(load_settings({"LOG_DIR": sys.argv[1], "LOG_CONSOLE": False}, environ={}), Metrics())
lm.enable()
logging.getLogger("bot").info("before")

def link(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:  # listdir's own descriptor, closed by now
        return ""

def seen():
    return {"threads": sorted(t.name for t in threading.enumerate()),
            "log_fds": sum(link(fd).endswith("bot.json") for fd in os.listdir("/proc/self/fd"))}

def probe():  # in the child, between fork and exec
    fd = os.open(sys.argv[1] + "/probe.json", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(seen()).encode())
    os.close(fd)

subprocess.run(["true"], preexec_fn=probe, check=True)
logging.getLogger("bot").info("after")
print(json.dumps(seen()))
lm.disable()
"""


def test_a_child_that_execs_after_a_preexec_fn_opens_and_starts_nothing(tmp_path):
    """subprocess runs os.register_at_fork's hooks in a child with a preexec_fn: the logger's
    files and writer thread wait for the child's first line, which such a child never logs."""
    result = subprocess.run([sys.executable, "-c", PREEXEC_CHILD, str(tmp_path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    parent, child = json.loads(result.stdout), json.loads((tmp_path / "probe.json").read_text())
    assert "opsstack-log-writer" in parent["threads"]
    assert child == {"threads": ["MainThread"], "log_fds": parent["log_fds"]}  # the parent's copies only
    assert _messages(tmp_path / "bot.json") == ["before", "after"]


# ---------------------------------------------------------------- FastRecord


def _both(*args, **kwargs):
    return logging.LogRecord(*args, **kwargs), _fast_record.FastRecord(*args, **kwargs)


@pytest.mark.skipif(not _fast_record.SUPPORTED, reason="FastRecord is compared with CPython 3.11's record only")
@pytest.mark.parametrize("args", [
    ("bot", logging.INFO, "/srv/bot/handlers.py", 12, "user %s", ("alice",), None, "handle"),
    ("bot", logging.ERROR, "/srv/bot/handlers.py", 12, "%(who)s", ({"who": "bob"},), None, "handle", "stack"),
    ("bot", 25, None, 0, "custom level, no path", (), None),
    ("", logging.DEBUG, "relative/path.tar.gz", None, object(), None, (ValueError, ValueError("x"), None)),
])
def test_a_fast_record_is_the_standard_record(args):
    _fast_record.install()  # as enable() does: the process id is set
    try:
        standard, fast = _both(*args)
    finally:
        _fast_record.uninstall()
    timing = {"created", "msecs", "relativeCreated"}
    assert list(fast.__dict__) == list(standard.__dict__)
    assert {k: v for k, v in fast.__dict__.items() if k not in timing} == \
        {k: v for k, v in standard.__dict__.items() if k not in timing}
    assert abs(fast.created - standard.created) < 1 and 0 <= fast.msecs < 1000
    assert fast.getMessage() == standard.getMessage()


def test_the_factory_is_installed_only_over_the_standard_one_and_put_back(tmp_path):
    class Own(logging.LogRecord):
        pass

    saved = logging.getLogRecordFactory()
    try:
        logging.setLogRecordFactory(Own)
        assert _fast_record.install() is False and logging.getLogRecordFactory() is Own
        logging.setLogRecordFactory(logging.LogRecord)
        lm = LoggerManager(load_settings({"LOG_DIR": str(tmp_path), "LOG_CONSOLE": False}, environ={}), Metrics())
        lm.enable()
        installed = logging.getLogRecordFactory()
        lm.disable()
        assert installed is (_fast_record.FastRecord if _fast_record.SUPPORTED else logging.LogRecord)
        assert logging.getLogRecordFactory() is logging.LogRecord
    finally:
        logging.setLogRecordFactory(saved)


def test_a_bot_that_switches_process_fields_off_gets_the_standard_record(monkeypatch):
    monkeypatch.setattr(logging, "logProcesses", False)
    standard, fast = _both("bot", logging.INFO, "/a/b.py", 1, "m", (), None)
    assert fast.process is None and standard.process is None


FORKED = textwrap.dedent("""
    import logging, os, sys
    from exporter.logger_manager import _fast_record
    assert _fast_record.install()
    pid = os.fork()
    if pid == 0:
        record = logging.getLogger("x").makeRecord("x", 20, "f.py", 1, "m", (), None)
        os._exit(0 if record.process == os.getpid() else 1)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not _fast_record.SUPPORTED, reason="FastRecord is installed on CPython 3.11 only")
def test_a_forked_child_logs_its_own_process_id():
    result = subprocess.run([sys.executable, "-c", FORKED], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "0", result.stderr


def test_a_line_logged_while_logging_is_turned_off_is_written_or_counted(tmp_path):
    """A thread already inside the handler when disable() runs queues its line after the last
    flush: it must not sit in the queue unseen."""
    import threading

    metrics = Metrics()
    lm = LoggerManager(load_settings({"LOG_DIR": str(tmp_path), "LOG_CONSOLE": False}, environ={}), metrics)
    lm.enable()
    front = lm._front
    inside, go_on, armed = threading.Event(), threading.Event(), threading.Event()

    class Slow:  # its class is asked after the handler checked it was open, before it queues
        @property
        def __class__(self):
            if armed.is_set() and threading.current_thread() is late:
                inside.set()
                go_on.wait(10)
            return Slow

        def __str__(self):
            return "slow"

    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "late %s", (Slow(),), None)
    late = threading.Thread(target=front.handle, args=(record,))
    armed.set()
    late.start()
    assert inside.wait(10)
    lm.disable()
    go_on.set()
    late.join(10)
    written = "late slow" in _messages(tmp_path / "bot.json")
    errors = metrics.registry.get_sample_value("bot_log_handler_errors_total", {"handler": "file"})
    assert written or errors == 1, (written, errors, list(front._queue), front.inner.errors)
    assert not front._queue


def test_queued_lines_and_event_lines_go_to_the_file_in_one_write(manager, tmp_path, monkeypatch):
    appends = []
    output = manager._handler.files[0]
    real_append = output._append
    monkeypatch.setattr(output, "_append", lambda data: (appends.append(data), real_append(data)))
    _writer_not_woken(manager, monkeypatch)  # the writer does not take them meanwhile
    log = logging.getLogger("bot")
    for number in range(40):
        log.info("line %d", number, extra={"chat_id": number} if number % 4 == 0 else None)
    assert not appends  # all queued, the event lines (extras) too
    log.warning("line 40")  # written at once, with what is queued
    assert len(appends) == 1
    assert _messages(tmp_path / "logs" / "bot.json") == [f"line {n}" for n in range(41)]


def test_a_batch_rotates_where_line_by_line_writing_would(tmp_path):
    from exporter.logger_manager._handler import RotatingFile

    lines = [(b"%03d" % number) * (number % 7 + 1) + b"\n" for number in range(60)]
    one, batch = tmp_path / "one", tmp_path / "batch"
    one.mkdir(), batch.mkdir()
    single = RotatingFile("file", one / "bot.json", 100, 3, 0)
    for line in lines:
        single.write(line)
    batched = RotatingFile("file", batch / "bot.json", 100, 3, 0)
    places = batched.write_lines(lines[:25]) + batched.write_lines(lines[25:])
    for name in ("bot.json", "bot.json.1", "bot.json.2", "bot.json.3"):
        assert (one / name).read_bytes() == (batch / name).read_bytes(), name
    starts = [number for number, (_, offset) in enumerate(places) if offset == 0]
    assert len(starts) > 3 and starts[1] not in (0, 25)  # it rotated inside the batches too
    live = (batch / "bot.json").read_bytes()
    for (file, offset), line in list(zip(places, lines))[starts[-1]:]:  # the lines of the live file
        assert file == batched.file and live[offset:offset + len(line)] == line
