"""What the Elasticsearch sink knows of the bot's log file: each line's ``_id``, the checkpoint,
and the lines read back at start.

The handler tells the sink where each line went (:class:`exporter.ports.LogFile`, offset). A line
is named for good by ``<inode>-<offset>-<crc32 of the line>`` (hexadecimal): the inode survives
the rotation's rename, so the same line read back from ``bot.json.1`` after a restart gets the
same ``_id``, and the checksum tells a line from another one written at the same place of a file
truncated in place (``LOG_BACKUP_COUNT=0``) or of a new file that got a freed inode.

The checkpoint (``state_dir/shipped-<hash of the path>.json``, replaced atomically) is a
position in the file before which every line is in Elasticsearch or in the spool, which
survives a kill. Each process writing the file (Celery's prefork children share ``LOG_DIR``)
keeps its own, in the lowest slot no live process holds (``shipped-<hash>-<slot>.json`` past the
first, see :func:`take_slot`): a process started again takes the slot a killed one let go, and
reads back from where that one was, whatever the others shipped since. It moves when a batch
has been delivered or spooled, on disk at most every :data:`SAVE_INTERVAL` seconds and at close: it lags, never leads. When a sink first sees a line
of a file, it reads back everything from the checkpoint to that line (the rotated copies
included, following the inode) into the spool: the lines a killed process had queued or in
flight. Those Elasticsearch already holds answer 409 and are counted as duplicates.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from .._files import read_json, replace_file, rotated_copies
from ..ports import LogFile
from .spool import Record

log = logging.getLogger("exporter.sinks.elasticsearch")

SAVE_INTERVAL = 1.0  # seconds between checkpoint writes while the position moves
CHUNK = 1 << 20  # bytes read at a time, and recovered lines spooled at a time
MAX_SLOTS = 256  # processes writing one log file, each with its checkpoint
_LEVEL = re.compile(rb'"log\.level":"([a-z]+)"')
_LEVELS = {b"debug": logging.DEBUG, b"info": logging.INFO, b"warning": logging.WARNING,
           b"error": logging.ERROR, b"critical": logging.CRITICAL}

Entry = tuple  # a queue entry: (levelno, line, LogFile | None, offset)
Named = list[tuple[int, bytes, bytes]]  # taken records with their _id: [(levelno, line, _id)]


def line_id(inode: int, offset: int, line: bytes) -> bytes:
    """The ``_id`` of ``line`` (with its newline) written at ``offset`` of the file ``inode``."""
    return b"%x-%x-%08x" % (inode, offset, zlib.crc32(line))


class Checkpoint:
    """The saved position in one log file: ``[inode, offset, length of the line before it, its crc32]``."""

    def __init__(self, state_dir: Path, path: str, slot: int = 0):
        self.path = os.path.abspath(path)
        self.file = Path(state_dir) / f"shipped-{_digest(self.path)}{f'-{slot}' if slot else ''}.json"
        self.position: list[int] | None = None  # where everything before is safe (memory)
        self._saved: list[int] | None = None
        self._saved_at = 0.0

    def load(self) -> list[int] | None:
        value = read_json(self.file)
        if isinstance(value, dict) and value.get("path") == self.path:
            position = value.get("position")
            if isinstance(position, list) and len(position) == 4 and all(
                    isinstance(number, int) and number >= 0 for number in position):
                return position
        return None

    def save(self, force: bool = False) -> None:
        """Write the position when it moved (at most every SAVE_INTERVAL unless ``force``)."""
        if self.position == self._saved or not (force or time.monotonic() - self._saved_at >= SAVE_INTERVAL):
            return
        import json

        position = list(self.position)
        replace_file(self.file, json.dumps({"path": self.path, "position": position}).encode())
        self._saved, self._saved_at = position, time.monotonic()


class FileTrack:
    """Names taken records, keeps a checkpoint per log file, reads back what a kill left behind.

    ``producer`` names the records that came without a place in a file (``<producer>-<sequence>``);
    ``spool(records)`` stores read-back records; ``counts(name, count)`` tallies ``recovered``
    and ``gap:<reason>``."""

    def __init__(self, state_dir: Path, producer: str, spool: Callable[[list[Record]], None],
                 counts: Callable[[str, int], None]):
        self._state_dir = Path(state_dir)
        self._producer = producer.encode()
        self._spool = spool
        self._counts = counts
        self._checkpoints: dict[str, Checkpoint | None] = {}  # None: frozen for this run
        self._taken_end: tuple[str, list[int]] | None = None
        self._save_lock = threading.Lock()  # close() saves too while a stuck worker may
        self._slots: dict[str, tuple[int, int]] = {}  # path -> (slot, descriptor holding its lock)
        self.frozen = False  # after an unexpected error: the checkpoints stay where they are

    def _slot(self, path: str) -> int:
        """This process's slot for the log file ``path`` (taken at the first call)."""
        with self._save_lock:
            if path not in self._slots:
                self._slots[path] = take_slot(self._state_dir, os.path.abspath(path))
            return self._slots[path][0]

    def release(self) -> None:
        """Let another process take the slots (the sink is closed; a kill does it too)."""
        with self._save_lock:
            slots, self._slots = self._slots, {}
        for _, fd in slots.values():
            os.close(fd)

    def forget_in_child(self) -> None:
        """In a forked child: close its copies of the slots' descriptors (the parent's locks
        hold), without the lock a parent's thread may have held at the fork."""
        for _, fd in self._slots.values():
            os.close(fd)
        self._slots = {}

    def follow(self, file: LogFile, offset: int) -> None:
        """Lines will go to ``file`` from ``offset`` on: with no checkpoint for it yet, one there
        (on the caller's thread, before the first line, so a kill at any time after finds it)."""
        checkpoint = Checkpoint(self._state_dir, file.path, self._slot(file.path))
        if checkpoint.load() is None:
            checkpoint.position = [file.inode, offset, 0, 0]
            checkpoint.save(force=True)

    def name(self, entries: list[Entry], first: int) -> Named:
        """``entries`` taken from the queue, numbered from ``first``, with their ``_id``s (one
        pass, no call per record: this runs for every record shipped)."""
        if not entries:
            return []
        for file in {entry[2] for entry in entries}:
            if file is not None and file.path not in self._checkpoints:
                self._begin(file, min(entry[3] for entry in entries if entry[2] == file))
        crc32, producer = zlib.crc32, self._producer
        named = [(level, line, b"%x-%x-%08x" % (file.inode, offset, crc32(line)) if file is not None
                  else b"%s-%d" % (producer, sequence))
                 for sequence, (level, line, file, offset) in enumerate(entries, first)]
        for level, line, file, offset in reversed(entries):
            if file is not None:
                self._taken_end = (file.path, [file.inode, offset + len(line), len(line), crc32(line)])
                break
        return named

    def resolved(self) -> None:
        """What was taken last is now in Elasticsearch or the spool: the checkpoint may pass it."""
        taken_end, self._taken_end = self._taken_end, None
        if taken_end is not None and not self.frozen:
            checkpoint = self._checkpoints.get(taken_end[0])
            if checkpoint is not None:
                checkpoint.position = taken_end[1]

    def save(self, force: bool = False) -> None:
        if self.frozen:
            return
        with self._save_lock:
            for checkpoint in list(self._checkpoints.values()):
                if checkpoint is not None and checkpoint.position is not None:
                    _save(checkpoint, force)

    def _begin(self, file: LogFile, offset: int) -> None:
        """The first line of ``file`` this run: read back what lies before it and was not shipped,
        from this process's slot and from every slot left with nobody to take it again (fewer
        processes than before: theirs are read back here, then their checkpoints go)."""
        own = self._slot(file.path)
        checkpoint = Checkpoint(self._state_dir, file.path, own)
        self._checkpoints[file.path] = None  # frozen until the read-back has been spooled
        left: list[tuple[Checkpoint, int]] = []
        try:
            left = free_slots(self._state_dir, file.path, own)
            for saved in [checkpoint.load(), *(other.load() for other, _ in left)]:
                if saved is not None:
                    self._read_back(file, offset, saved)
        except OSError as exc:  # the checkpoints stay: the next start tries again
            log.warning("cannot read back %s to ship what a previous run left: %s", file.path,
                        exc.strerror or exc)
            return
        else:
            for other, _ in left:
                other.file.unlink(missing_ok=True)
        finally:
            for _, fd in left:
                os.close(fd)
        checkpoint.position = [file.inode, offset, 0, 0]
        self._checkpoints[file.path] = checkpoint
        with self._save_lock:
            _save(checkpoint, force=True)

    def _read_back(self, live: LogFile, live_offset: int, saved: list[int]) -> None:
        files = open_files(live.path)
        try:
            spans, gap = unshipped(files, saved, live.inode, live_offset)
            if gap is not None:
                self._counts("gap:" + gap, 1)
                log.warning("log lines of %s were not shipped before they were %s", live.path,
                            gap.replace("_", " "))
            batch: list[Record] = []
            size = 0
            for inode, fd, start, end in spans:
                for offset, line in read_lines(fd, start, end):
                    batch.append(record(inode, offset, line))
                    size += len(line)
                    if size >= CHUNK:
                        self._flush(batch)
                        batch, size = [], 0
            self._flush(batch)
        finally:
            for _, fd, _ in files:
                os.close(fd)

    def _flush(self, batch: list[Record]) -> None:
        if batch:
            self._spool(batch)
            self._counts("recovered", len(batch))


def _digest(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16]


def take_slot(state_dir: Path, path: str) -> tuple[int, int]:
    """The lowest slot of the log file ``path`` that no live process holds, and the descriptor
    that holds it (an ``flock`` on ``.shipped-<hash>-<slot>.lock``, let go by the kernel when
    the process dies). Processes that write one log file keep a checkpoint each: one process's
    position says nothing of the lines another one still had queued."""
    for slot in range(MAX_SLOTS):
        fd = _lock_slot(state_dir, path, slot)
        if fd is not None:
            return slot, fd
    raise OSError(f"{MAX_SLOTS} processes already ship {path}")


def free_slots(state_dir: Path, path: str, own: int) -> list[tuple[Checkpoint, int]]:
    """The checkpoints of ``path`` but ``own`` in slots that no live process holds, each with the
    descriptor that now holds its lock."""
    path = os.path.abspath(path)
    prefix = f"shipped-{_digest(path)}"
    found: list[tuple[Checkpoint, int]] = []
    try:
        for name in os.listdir(state_dir):
            number = name[len(prefix) + 1:-len(".json")] if name.startswith(prefix + "-") else ""
            if name != prefix + ".json" and not (number.isdigit() and name.endswith(".json")):
                continue
            slot = int(number or 0)
            fd = None if slot == own else _lock_slot(state_dir, path, slot)
            if fd is not None:
                found.append((Checkpoint(state_dir, path, slot), fd))
    except BaseException:
        for _, fd in found:
            os.close(fd)
        raise
    return found


def _lock_slot(state_dir: Path, path: str, slot: int) -> int | None:
    """A descriptor holding the lock of ``slot``, or None when a live process holds it."""
    fd = os.open(Path(state_dir) / f".shipped-{_digest(path)}-{slot}.lock",
                 os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _save(checkpoint: Checkpoint, force: bool) -> None:
    try:
        checkpoint.save(force)
    except OSError as exc:  # a stale checkpoint costs 409s after a restart, not lines
        log.warning("cannot save the shipping checkpoint %s: %s", checkpoint.file, exc.strerror or exc)


def record(inode: int, offset: int, line: bytes) -> Record:
    """A line read back as a spool record: its level (from ``log.level``), ``_id`` and JSON."""
    found = _LEVEL.search(line, 0, 120)
    level = _LEVELS.get(found.group(1), logging.INFO) if found else logging.INFO
    return level, line_id(inode, offset, line).decode(), line.rstrip(b"\n")


def open_files(path: str) -> list[tuple[int, int, int]]:
    """``(inode, fd, size)`` of ``path`` and its rotated copies, oldest first. A rotation while
    they are opened shows as a name whose inode changed: then they are opened again."""
    for _ in range(10):
        opened = []
        for name in reversed([path, *rotated_copies(path)]):
            try:
                fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                continue
            info = os.fstat(fd)
            opened.append((name, info.st_ino, fd, info.st_size))
        if all(_inode(name) == inode for name, inode, _, _ in opened):
            return [(inode, fd, size) for _, inode, fd, size in opened]
        for _, _, fd, _ in opened:
            os.close(fd)
    raise OSError(f"{path} kept rotating while it was read back")


def _inode(name: str) -> int | None:
    try:
        return os.stat(name).st_ino
    except FileNotFoundError:
        return None


def unshipped(files: list[tuple[int, int, int]], saved: list[int], live_inode: int,
              live_offset: int) -> tuple[list[tuple[int, int, int, int]], str | None]:
    """The spans ``(inode, fd, start, end)`` of ``files`` (oldest first) from the checkpoint
    ``saved`` up to the live line, and the gap found on the way (None, ``rotated_away``,
    ``truncated``, ``missing``)."""
    inode, offset, tail_length, tail_crc = saved
    inodes = [entry[0] for entry in files]
    gap = None
    if inode in inodes:
        first = inodes.index(inode)
        _, fd, size = files[first]
        if size < offset or (inode == live_inode and live_offset < offset) or (
                tail_length and zlib.crc32(os.pread(fd, tail_length, offset - tail_length)) != tail_crc) or (
                not tail_length and offset and os.pread(fd, 1, offset - 1) != b"\n"):
            # emptied in place, or another file that got the inode (a checkpoint made at start,
            # before any line was shipped, knows no line to check: it must at least follow one)
            offset, gap = 0, "truncated"
    else:  # the checkpoint's file is gone: everything left is newer than it
        first, offset = 0, 0
        older = [entry for entry in files if entry[0] != live_inode]
        gap = "rotated_away" if older else "missing"
    spans = []
    for inode, fd, size in files[first:]:
        end = live_offset if inode == live_inode else size
        if end > offset:
            spans.append((inode, fd, offset, end))
        if inode == live_inode:
            break
        offset = 0
    return spans, gap


def read_lines(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of the bytes ``start`` to ``end`` of ``fd``, each line with its
    newline (a last one without it too)."""
    rest, at, position = b"", start, start
    while position < end:
        chunk = os.pread(fd, min(CHUNK, end - position), position)
        if not chunk:
            break
        position += len(chunk)
        data = rest + chunk if rest else chunk
        begin = 0
        newline = data.find(b"\n")
        while newline >= 0:
            yield at + begin, data[begin:newline + 1]
            begin = newline + 1
            newline = data.find(b"\n", begin)
        at += begin
        rest = data[begin:]
    if rest:
        yield at, rest
