"""Shipping from the log file: every line that reached ``bot.json`` reaches Elasticsearch exactly
once (by ``_id``), across SIGKILLs and restarts on the same directories, re-sent batches and 429s.

The read-back itself is tested offline on real files; the rest against the real node, through a
loopback HTTP proxy that can hold the node's answers or answer 429 in its place.
"""
from __future__ import annotations

import http.client
import http.server
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from exporter.logger_manager._handler import RotatingFile
from exporter.metrics import Metrics
from exporter.ports import LogFile
from exporter.sinks._log_files import FileTrack, line_id
from exporter.sinks.elasticsearch import ElasticsearchSink
from tests.probes import wait_until
from tests.test_shipping import _line, _settings


# --------------------------------------------------------------------------- offline: the read-back


class Track:
    """A FileTrack on ``state``, what it spools and counts, and the lines written through ``output``."""

    def __init__(self, state: Path, output: RotatingFile):
        self.spooled, self.counts = [], {}
        self.output = output
        self.track = FileTrack(state, "p", self.spooled.extend, self._count)

    def _count(self, name: str, count: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + count

    def write(self, number: int):
        line = _line(number)
        offset = self.output.write(line)
        return logging.INFO, line, self.output.file, offset

    def ship(self, entries) -> list[bytes]:
        """Take ``entries`` (all delivered): their _ids; the checkpoint passes them."""
        named = self.track.name(entries, 0)
        self.track.resolved()
        self.track.save(force=True)
        return [rid for _, _, rid in named]


def _numbers(records) -> list[int]:
    return [int(json.loads(document)["labels"]["n"]) for _, _, document in records]


def test_a_new_run_reads_back_what_the_killed_one_left_across_a_rotation(tmp_path):
    output = RotatingFile("file", tmp_path / "bot.json", 2_000, 10, logging.DEBUG)
    first = Track(tmp_path / "state", output)
    tmp_path.joinpath("state").mkdir()
    entries = [first.write(number) for number in range(40)]
    ids = first.ship(entries[:10])  # the rest was queued when the process died
    assert ids[0] == line_id(entries[0][2].inode, entries[0][3], _line(0))
    assert len(list(tmp_path.glob("bot.json.*"))) >= 1  # lines 10..39 span a rotation
    first.track.release()  # the process dies: its slot is free
    second = Track(tmp_path / "state", output)
    live = second.write(40)
    second.ship([live])
    assert _numbers(second.spooled) == list(range(10, 40))
    expected = [line_id(file.inode, offset, line).decode() for _, line, file, offset in entries[10:]]
    assert [rid for _, rid, _ in second.spooled] == expected  # the _ids the first run gave them
    assert second.counts == {"recovered": 30}
    output.close()


def test_without_a_checkpoint_nothing_is_read_back_and_one_is_made_at_once(tmp_path):
    output = RotatingFile("file", tmp_path / "bot.json", 100_000, 5, logging.DEBUG)
    for number in range(5):
        output.write(_line(number))  # written before shipping from the file was ever on
    state = tmp_path / "state"
    state.mkdir()
    track = Track(state, output)
    track.track.name([track.write(5)], 0)  # taken, not delivered: the process dies now
    saved = json.loads(next(state.glob("shipped-*.json")).read_text())
    assert saved["position"][:2] == [output.file.inode, 5 * len(_line(0))]
    assert oct(next(state.glob("shipped-*.json")).stat().st_mode & 0o777) == "0o600"
    track.track.release()
    again = Track(state, output)
    again.ship([again.write(6)])
    assert _numbers(again.spooled) == [5] and track.spooled == []


def test_after_an_unexpected_error_the_checkpoint_stays_where_it_was(tmp_path):
    output = RotatingFile("file", tmp_path / "bot.json", 100_000, 5, logging.DEBUG)
    tmp_path.joinpath("state").mkdir()
    track = Track(tmp_path / "state", output)
    track.ship([track.write(0)])
    saved = next((tmp_path / "state").glob("shipped-*.json")).read_bytes()
    track.track.frozen = True  # what the worker does when a round fails: a batch may be lost
    track.ship([track.write(1)])
    assert next((tmp_path / "state").glob("shipped-*.json")).read_bytes() == saved
    track.track.release()
    again = Track(tmp_path / "state", output)
    again.ship([again.write(2)])
    assert _numbers(again.spooled) == [1]
    output.close()


def test_a_file_emptied_in_place_is_read_from_its_start(tmp_path):
    output = RotatingFile("file", tmp_path / "bot.json", 1_000, 0, logging.DEBUG)  # LOG_BACKUP_COUNT=0
    first = Track(tmp_path / "state", output)
    tmp_path.joinpath("state").mkdir()
    first.ship([first.write(number) for number in range(5)])
    for number in range(5, 12):  # the file is emptied once on the way; these were not shipped
        first.write(number)
    first.track.release()
    second = Track(tmp_path / "state", output)
    second.ship([second.write(12)])
    assert second.counts["gap:truncated"] == 1
    numbers = _numbers(second.spooled)
    assert numbers == list(range(numbers[0], 12)) and numbers[0] > 5  # what is left of them


@pytest.mark.parametrize("removed, reason", [("bot.json.2", "rotated_away"), ("bot.json*", "missing")])
def test_unshipped_lines_gone_are_counted_and_what_is_left_is_read(tmp_path, removed, reason, caplog):
    output = RotatingFile("file", tmp_path / "bot.json", 1_000, 3, logging.DEBUG)
    first = Track(tmp_path / "state", output)
    tmp_path.joinpath("state").mkdir()
    first.ship([first.write(0)])
    while not (tmp_path / "bot.json.2").exists():  # the checkpoint's file is bot.json.2 then
        first.write(1)
    output.close()
    first.track.release()
    for path in tmp_path.glob(removed):
        path.unlink()
    left = sum(len(path.read_bytes().splitlines()) for path in tmp_path.glob("bot.json*"))
    output = RotatingFile("file", tmp_path / "bot.json", 1_000, 3, logging.DEBUG)
    second = Track(tmp_path / "state", output)
    with caplog.at_level(logging.WARNING, "exporter.sinks.elasticsearch"):
        second.ship([second.write(2)])
    gaps = {name: count for name, count in second.counts.items() if name.startswith("gap:")}
    # a new bot.json given the freed inode of the old one shows as that file truncated
    assert gaps in ({f"gap:{reason}": 1}, {"gap:truncated": 1} if reason == "missing" else None)
    assert len([r for r in caplog.records if "were not shipped before" in r.getMessage()]) == 1
    assert len(second.spooled) == left and (left > 0) == (reason == "rotated_away")
    output.close()


def test_each_log_file_has_its_own_checkpoint(tmp_path):
    """Celery workers each write their own LOG_DIR and may share LOG_SHIP_STATE_DIR."""
    state = tmp_path / "state"
    state.mkdir()
    tracks = []
    for worker in ("one", "two"):
        (tmp_path / worker).mkdir()
        output = RotatingFile("file", tmp_path / worker / "bot.json", 100_000, 5, logging.DEBUG)
        track = Track(state, output)
        track.ship([track.write(number) for number in range(3)])
        tracks.append(track)
    saved = [json.loads(path.read_text()) for path in sorted(state.glob("shipped-*.json"))]
    assert sorted(entry["path"] for entry in saved) == [str(tmp_path / "one" / "bot.json"),
                                                        str(tmp_path / "two" / "bot.json")]
    assert all(entry["position"][1] == 3 * len(_line(0)) for entry in saved)
    for track in tracks:
        track.output.close()


def test_a_line_gets_the_id_of_its_place_and_content():
    line = _line(1)
    assert line_id(7, 100, line) == b"7-64-%08x" % zlib.crc32(line)
    assert line_id(7, 100, line) != line_id(7, 100, _line(2)) != line_id(8, 100, _line(2))


# --------------------------------------------------------------------------- the node, through a proxy


class Proxy(http.server.ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 to ``target``. ``hold``: _bulk answers wait until ``release``
    (``held`` is set once one waits); ``refuse``: _bulk requests answered 429 without reaching
    the node."""

    daemon_threads = True

    def __init__(self, target: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = target.split("//", 1)[1]
        self.hold = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.refuse = False
        self.refused = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        return None

    def _forward(self) -> None:
        proxy: Proxy = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        bulk = "_bulk" in self.path
        if bulk and proxy.refuse:
            proxy.refused += 1
            return self._answer(429, b'{"error":{"type":"es_rejected_execution_exception"},"status":429}', {})
        connection = http.client.HTTPConnection(proxy.target, timeout=60)
        headers = {key: value for key, value in self.headers.items() if key.lower() not in ("host", "connection")}
        connection.request(self.command, self.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        if bulk and proxy.hold:
            proxy.held.set()
            proxy.release.wait(60)
        self._answer(response.status, data, {key.lower(): value for key, value in response.getheaders()
                                              if key.lower() not in ("content-length", "transfer-encoding",
                                                                     "connection")})

    def _answer(self, status: int, data: bytes, headers: dict) -> None:
        try:
            self.send_response(status)
            for key, value in {"content-type": "application/json", "x-elastic-product": "Elasticsearch",
                               **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout) or died meanwhile
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_HEAD = _forward


@pytest.fixture
def proxy(elasticsearch):
    running = Proxy(elasticsearch.url)
    yield running
    running.release.set()
    running.shutdown()
    running.server_close()


def _documents(url: str, index: str) -> list[dict]:
    client = Elasticsearch(url)
    client.indices.refresh(index=index)
    hits = client.search(index=index, size=10_000, query={"match_all": {}})["hits"]["hits"]
    client.close()
    return [hit["_source"] | {"_id": hit["_id"]} for hit in hits]


def test_a_batch_sent_again_after_a_client_timeout_is_not_indexed_twice(elasticsearch, proxy, tmp_path):
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, proxy.url, "timeout", LOG_SHIP_INTERVAL=0.05), metrics)
    sink.submit(_line(100), logging.INFO)
    wait_until(lambda: sink.stats()["shipped"] == 1, what="the index template installed, a record shipped")
    sink._worker.request_timeout = 1.0
    proxy.hold = True  # the node indexes the batch; its answer comes after the client gave up
    for number in range(100):
        sink.submit(_line(number), logging.INFO)
    assert proxy.held.wait(10)
    wait_until(lambda: sink.stats()["retried"] >= 1, what="the request timed out")
    proxy.hold = False
    proxy.release.set()
    sink.close(10)
    documents = _documents(elasticsearch.url, "logs-bot-timeout")
    assert sorted(int(document["labels"]["n"]) for document in documents) == list(range(101))
    stats = sink.stats()  # the node created them all; the sink saw a timeout, then 409s for those
    assert stats["duplicates"] >= 1 and stats["shipped"] + stats["duplicates"] == 101
    assert metrics.registry.get_sample_value("bot_log_shipping_duplicates_total") == stats["duplicates"]


def test_a_node_answering_429_for_a_while_gets_every_record_once(elasticsearch, proxy, tmp_path):
    metrics = Metrics()
    sink = ElasticsearchSink(_settings(tmp_path, proxy.url, "toomany", LOG_SHIP_INTERVAL=0.05,
                                       LOG_SHIP_BATCH_SIZE=50), metrics)
    proxy.refuse = True
    for number in range(500):
        sink.submit(_line(number), logging.INFO)
    wait_until(lambda: proxy.refused >= 3, what="three requests refused")
    proxy.refuse = False
    wait_until(lambda: sink.stats()["shipped"] == 500, timeout=30, what="everything shipped")
    sink.close(5)
    documents = _documents(elasticsearch.url, "logs-bot-toomany")
    assert sorted(int(document["labels"]["n"]) for document in documents) == list(range(500))
    assert sink.stats()["retried"] >= 3 and sink.stats()["dropped"] == {}
    assert metrics.registry.get_sample_value("bot_log_shipping_retried_total") >= 3


# --------------------------------------------------------------------------- SIGKILL and restart

BOT = """
import logging, sys, time
from exporter.config import default_settings
from exporter.logger_manager import LoggerManager
from exporter.metrics import Metrics
from exporter.sinks import SINKS

url, root, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
namespace = sys.argv[5] if len(sys.argv) > 5 else "killed"
settings = default_settings().replace(
    ELASTICSEARCH_URL=url, ELASTICSEARCH_NAMESPACE=namespace, STATE_DIR=root + "/state", LOG_DIR=root + "/logs",
    LOG_CONSOLE=False, LOG_MAX_SIZE=64 * 1024, LOG_BACKUP_COUNT=1000, LOG_SHIP_BATCH_SIZE=100,
    LOG_SHIP_INTERVAL=0.05, LOG_SHUTDOWN_TIMEOUT=60)
manager = LoggerManager(settings, Metrics(), sink_factories=SINKS)
manager.enable()
log = logging.getLogger("bot")
print("started", flush=True)
for number in range(first, first + count):
    log.info("line %d", number)
    if number % 20 == 0:
        time.sleep(0.002)
manager.disable()
print("done", flush=True)
"""


def _file_lines(logs: Path) -> dict[bytes, int]:
    """The ``_id`` of each bot line in the log files, with its number."""
    found = {}
    for path in logs.glob("bot.json*"):
        inode, offset = path.stat().st_ino, 0
        for line in path.read_bytes().splitlines(keepends=True):
            document = json.loads(line)
            if document["message"].startswith("line "):
                found[line_id(inode, offset, line)] = int(document["message"].split()[1])
            offset += len(line)
    return found


def _run_bot(url: str, root: Path, first: int, count: int) -> subprocess.Popen:
    bot = subprocess.Popen([sys.executable, "-c", BOT, url, str(root), str(first), str(count)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert bot.stdout.readline().strip() == "started", bot.stderr.read()
    return bot


def _kill(bot: subprocess.Popen) -> None:
    os.kill(bot.pid, signal.SIGKILL)
    bot.wait(10)
    bot.stdout.close()
    bot.stderr.close()


def _lines_past_the_checkpoint(root: Path) -> int:
    """How many lines of the log files lie past the checkpoint the last run saved."""
    inode, offset = json.loads(next((root / "state").glob("shipped-*.json")).read_text())["position"][:2]
    files = sorted((root / "logs").glob("bot.json*"), key=lambda path: -int(path.suffix[1:] or 0)
                   if path.suffix != ".json" else 0)
    inodes = [path.stat().st_ino for path in files]
    past = files[inodes.index(inode):]
    return past[0].read_bytes()[offset:].count(b"\n") + sum(path.read_bytes().count(b"\n") for path in past[1:])


def _rotated(root: Path) -> int:
    return len(list((root / "logs").glob("bot.json.*")))


@pytest.mark.slow
def test_a_bot_killed_again_and_again_ships_every_line_of_its_files_once(elasticsearch, proxy, tmp_path):
    chance = random.Random(18)
    numbers = iter(range(0, 10_000_000, 100_000))  # each run logs its own numbers
    # killed at a random moment, twice
    for _ in range(2):
        bot = _run_bot(proxy.url, tmp_path, next(numbers), 50_000)
        size = chance.randint(10_000, 60_000)
        wait_until(lambda: (tmp_path / "logs" / "bot.json").stat().st_size > size)
        _kill(bot)
    # killed while a _bulk request is in flight (the node has indexed it, the answer is held)
    proxy.hold = True
    bot = _run_bot(proxy.url, tmp_path, next(numbers), 50_000)
    assert proxy.held.wait(20)
    _kill(bot)
    assert _lines_past_the_checkpoint(tmp_path) >= 1  # the batch in flight at least: read back next
    proxy.hold = False
    proxy.release.set()
    # killed right after a rotation
    bot = _run_bot(proxy.url, tmp_path, next(numbers), 50_000)
    rotated = _rotated(tmp_path)
    wait_until(lambda: _rotated(tmp_path) > rotated, what="a rotation")
    _kill(bot)
    # the last run ends normally
    bot = subprocess.run([sys.executable, "-c", BOT, proxy.url, str(tmp_path), str(next(numbers)), "500"],
                         capture_output=True, text=True, timeout=120)
    assert bot.returncode == 0 and bot.stdout.split() == ["started", "done"], bot.stderr

    in_files = _file_lines(tmp_path / "logs")
    documents = [document for document in _documents(elasticsearch.url, "logs-bot-killed")
                 if document["message"].startswith("line ")]
    by_id = {document["_id"].encode(): int(document["message"].split()[1]) for document in documents}
    assert len(by_id) == len(documents)  # each _id once
    assert sorted(by_id.values()) == sorted(in_files.values())  # each number once, the ones in the files
    assert by_id == in_files  # each line under the _id of its place in the file
    assert len(documents) > 500 and _rotated(tmp_path) >= 2


@pytest.mark.slow
def test_two_processes_on_one_log_dir_ship_each_line_under_the_id_of_its_place(elasticsearch, tmp_path):
    """Celery's prefork children share LOG_DIR and LOG_SHIP_STATE_DIR (their settings come from
    one environment): lines of both interleave in bot.json, and each rotates it in turn."""
    bots = [subprocess.Popen([sys.executable, "-c", BOT, elasticsearch.url, str(tmp_path), str(first), "20000", "shared"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for first in (0, 100_000)]
    for bot in bots:
        out, err = bot.communicate(timeout=120)
        assert bot.returncode == 0 and out.split() == ["started", "done"], err
    in_files = _file_lines(tmp_path / "logs")
    client = Elasticsearch(elasticsearch.url)
    client.indices.refresh(index="logs-bot-shared")
    documents = [hit["_source"] | {"_id": hit["_id"]} for hit in scan(client, index="logs-bot-shared")
                 if hit["_source"]["message"].startswith("line ")]
    client.close()
    by_id = {document["_id"].encode(): int(document["message"].split()[1]) for document in documents}
    assert sorted(in_files.values()) == list(range(20_000)) + list(range(100_000, 120_000))  # none lost
    assert len(by_id) == len(documents) == 40_000 and by_id == in_files
    assert _rotated(tmp_path) >= 2


KILLED_TRACK = """
import logging, os, signal, sys
from pathlib import Path
from exporter.logger_manager._handler import RotatingFile
from exporter.sinks._log_files import FileTrack

output = RotatingFile("file", Path(sys.argv[1]) / "bot.json", 100_000, 5, logging.DEBUG)
track = FileTrack(Path(sys.argv[1]) / "state", "p", print, print)
track.follow(output.file, output.size)
entries = []
for number in range(100, 105):
    line = b'{"log.level":"info","labels":{"n":"%d"}}\\n' % number
    entries.append((logging.INFO, line, output.file, output.write(line)))
track.name(entries, 0)  # taken, in flight: the process dies before they are delivered
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_beside_another_reads_back_its_own_lines_when_it_starts_again(tmp_path):
    """Two processes write one bot.json; the one killed had lines in flight; the other kept
    shipping (and saving) past them. The killed one, started again, still ships them."""
    state = tmp_path / "state"
    state.mkdir()
    alive = Track(state, RotatingFile("file", tmp_path / "bot.json", 100_000, 5, logging.DEBUG))
    alive.track.follow(alive.output.file, alive.output.size)
    alive.ship([alive.write(number) for number in range(5)])
    killed = subprocess.run([sys.executable, "-c", KILLED_TRACK, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    alive.ship([alive.write(number) for number in range(5, 10)])  # its checkpoint passes the lines in flight
    again = Track(state, RotatingFile("file", tmp_path / "bot.json", 100_000, 5, logging.DEBUG))
    again.track.follow(again.output.file, again.output.size)
    again.ship([again.write(200)])
    assert set(range(100, 105)) <= set(_numbers(again.spooled))
    assert sorted(path.name.count("-") for path in state.glob("shipped-*.json")) == [1, 2]  # a slot each
    for track in (alive, again):
        track.track.release()
        track.output.close()


FORKED_BOT = """
import logging, os, sys
from exporter.config import default_settings
from exporter.logger_manager import LoggerManager
from exporter.metrics import Metrics
from exporter.sinks import SINKS

import faulthandler
faulthandler.dump_traceback_later(60, exit=True)
url, root = sys.argv[1], sys.argv[2]
settings = default_settings().replace(
    ELASTICSEARCH_URL=url, ELASTICSEARCH_NAMESPACE="forked", STATE_DIR=root + "/state", LOG_DIR=root + "/logs",
    LOG_CONSOLE=False, LOG_MAX_SIZE=64 * 1024, LOG_BACKUP_COUNT=1000, LOG_SHIP_INTERVAL=0.05,
    LOG_SHIP_BATCH_SIZE=100, LOG_SHUTDOWN_TIMEOUT=60)
manager = LoggerManager(settings, Metrics(), sink_factories=SINKS)
manager.enable()
log = logging.getLogger("bot")
for number in range(500):
    log.info("line %d", number)
pid = os.fork()
first = 100_000 if pid == 0 else 500
for number in range(first, first + 2000):
    log.info("line %d", number)
manager.disable()
if pid == 0:
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
def test_a_child_forked_after_enable_ships_its_own_lines_and_leaves_the_parents_alone(elasticsearch, tmp_path):
    """A bot that forks after enable() (multiprocessing's fork, a pre-forking server): the child
    writes the same bot.json and ships its lines itself, each under the _id of its place."""
    bot = subprocess.run([sys.executable, "-c", FORKED_BOT, elasticsearch.url, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert bot.returncode == 0 and bot.stdout.split() == ["0"], bot.stderr
    in_files = _file_lines(tmp_path / "logs")
    assert sorted(in_files.values()) == list(range(2500)) + list(range(100_000, 102_000))
    client = Elasticsearch(elasticsearch.url)
    client.indices.refresh(index="logs-bot-forked")
    documents = [hit["_source"] | {"_id": hit["_id"]} for hit in scan(client, index="logs-bot-forked")
                 if hit["_source"]["message"].startswith("line ")]
    client.close()
    by_id = {document["_id"].encode(): int(document["message"].split()[1]) for document in documents}
    assert len(by_id) == len(documents) and by_id == in_files
    assert len({document["process"]["pid"] for document in documents}) == 2


def test_a_start_checkpoint_in_a_file_that_got_its_inode_again_is_not_trusted(tmp_path):
    """The checkpoint made at enable (no line shipped yet) names an inode and an offset only.
    LOG_DIR emptied, and the new bot.json got the freed inode: the offset falls inside a line of
    another file, and everything of that file is read back, not its tail from mid-line on."""
    state = tmp_path / "state"
    state.mkdir()
    output = RotatingFile("file", tmp_path / "bot.json", 100_000, 5, logging.DEBUG)
    for number in range(3):
        output.write(_line(number))
    first = Track(state, output)
    first.track.follow(output.file, output.size)  # then the process is killed before any line is taken
    first.track.release()
    output.close()
    (tmp_path / "bot.json").unlink()
    output = RotatingFile("file", tmp_path / "bot.json", 100_000, 5, logging.DEBUG)
    for number in range(10, 13):
        output.write(_line(number, pad="x" * 7))  # longer lines: the old offset is inside one
    checkpoint = next(state.glob("shipped-*.json"))
    saved = json.loads(checkpoint.read_text())
    saved["position"][0] = output.file.inode  # as if the inode had been given again
    checkpoint.write_text(json.dumps(saved))
    second = Track(state, output)
    second.ship([second.write(13)])
    assert _numbers(second.spooled) == [10, 11, 12] and second.counts["gap:truncated"] == 1
    second.track.release()
    output.close()


def test_a_slot_nobody_takes_again_is_read_back_by_the_process_that_starts(tmp_path):
    """Two processes wrote one bot.json and both died, the one in slot 1 with lines in flight;
    only one process starts again: it takes slot 0 and reads back slot 1's lines too."""
    state = tmp_path / "state"
    state.mkdir()
    output = RotatingFile("file", tmp_path / "bot.json", 100_000, 5, logging.DEBUG)
    first, second = Track(state, output), Track(state, output)
    first.track.follow(output.file, output.size)
    second.track.follow(output.file, output.size)  # slot 1
    first.ship([first.write(0)])
    second.track.name([second.write(1), second.write(2)], 0)  # in flight when it dies
    second.track.release()
    first.ship([first.write(3)])  # past them
    first.track.release()
    again = Track(state, output)
    again.track.follow(output.file, output.size)
    again.ship([again.write(4)])
    assert {1, 2} <= set(_numbers(again.spooled))
    assert [path.name.count("-") for path in state.glob("shipped-*.json")] == [1]  # slot 1's is done
    again.track.release()
    output.close()


def test_slots_left_are_read_back_and_live_ones_left_alone_with_a_relative_log_dir(tmp_path, monkeypatch):
    """LOG_DIR defaults to ``logs``, a relative path. Three processes on one file: the one in
    slot 0 lives on, those in slots 1 and 2 die with lines in flight. The one started next takes
    slot 1 and reads back slot 2's lines too, and leaves slot 0's checkpoint to its process."""
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    output = RotatingFile("file", Path("bot.json"), 100_000, 5, logging.DEBUG)
    alive, one, two = Track(state, output), Track(state, output), Track(state, output)
    for track in (alive, one, two):
        track.track.follow(output.file, output.size)
    alive.ship([alive.write(0)])
    one.track.name([one.write(1)], 0)
    two.track.name([two.write(2)], 0)
    one.track.release()
    two.track.release()
    alive.ship([alive.write(3)])
    started = Track(state, output)
    started.track.follow(output.file, output.size)
    started.ship([started.write(4)])
    assert {1, 2} <= set(_numbers(started.spooled))
    assert sorted(path.name.count("-") for path in state.glob("shipped-*.json")) == [1, 2]  # slots 0 and 1
    for track in (alive, started):
        track.track.release()
    output.close()
