"""The one handler the manager puts on the root logger, and the outputs it writes to.

A record is formatted once and the same line goes to every output whose level it reaches: the
size-rotating ``bot.json``, the errors-only ``errors.json``, the console and the sinks (a sink that
ships from the file, :class:`exporter.ports.FileShippingSink`, is also told the line's inode and
offset in ``bot.json``). An output that fails is counted in
``bot_log_handler_errors_total{handler=...}`` and reported once on stderr; the record still
reaches the other outputs and the caller never sees the error.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
from pathlib import Path

from .._files import rotated_copies
from ..metrics import Metrics, log_level_label
from ..ports import FileShippingSink, LogFile, LogSink, thread_state

FILE_MODE = 0o600
ROTATION_LOCK_WAIT = 1.0  # seconds a rotation waits for another process's rotation to end
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
LEVEL_NAMES = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"),
               (logging.INFO, "info"), (logging.NOTSET, "debug"))


class RotatingFile:
    """An append-only JSON-lines file that rotates by size (``name``, ``name.1`` ... ``name.N``).

    Written with ``os.write`` on an ``O_APPEND`` descriptor: one system call per line, or per
    batch of lines the writer thread gathered, no buffer to lose. With ``backup_count`` 0 the file is emptied instead of rotated, so it stays
    within ``max_bytes``.

    Several processes may write one file (Celery's prefork children share ``LOG_DIR``): where a
    line went is asked of the descriptor after the write (``lseek``), not counted, so its offset
    is its place in the file whatever the others wrote; a rotation happens under a lock on the
    directory, and only when the file is still the one this process writes and still too big
    (another process may have rotated it already: then its new file is opened). A write of this
    process that stopped mid-line (a full disk) is ended with a newline before its next line, so
    that line is not glued to the torn one. A file found ending mid-line at open is left alone:
    another process may be in the middle of its write (a reader sees a long write grow page by
    page); only a writer killed in a write of more than a page leaves such a fragment, and the
    next line in the file then continues it (the shipper sends the fragment alone, which the
    node refuses into the dead letters).
    """

    def __init__(self, name: str, path: Path, max_bytes: int, backup_count: int, level: int) -> None:
        self.name = name
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.level = level
        self.written = 0
        self.file = LogFile(str(path), 0)  # the file being written (its inode), for the sinks
        self._torn = False  # a write of ours stopped mid-line: the next one starts with a newline
        self._fd = self._open()

    def reopen(self) -> None:
        """A descriptor of this process's own (a forked child: the parent's shares one offset)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._fd = self._open()

    def _open(self) -> int:
        fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            info = os.fstat(fd)
            self.file = LogFile(self.file.path, info.st_ino)
            self._size = info.st_size
            self._torn = False  # a torn line of the file before (rotated away) is not this one's
        except OSError:
            os.close(fd)
            raise
        return fd

    def write(self, data: bytes) -> int:
        """Append ``data``; the offset it starts at in :attr:`file`."""
        return self.write_lines([data])[0][1]

    def write_lines(self, lines: list[bytes]) -> list[tuple[LogFile, int]]:
        """Append ``lines`` with one system call (one per file when it rotates between them, as
        it would line by line); the file and offset each went to. The offsets come from the
        end of the file after the write (``O_APPEND`` puts one write's bytes together), so
        they hold whatever other processes wrote."""
        if self._fd < 0:
            raise OSError(f"{self.path} is closed")
        places: list[tuple[LogFile, int]] = []
        chunk: list[bytes] = []
        pending = 0
        for line in lines:
            if self._size + pending + len(line) > self.max_bytes and self._size + pending > 0:
                if chunk:
                    places += self._write_chunk(chunk, pending)
                    chunk, pending = [], 0
                self._rotate(len(line))
            chunk.append(line)
            pending += len(line)
        return places + self._write_chunk(chunk, pending)

    def _write_chunk(self, chunk: list[bytes], size: int) -> list[tuple[LogFile, int]]:
        if self._torn:
            self._append(b"\n")
            self._torn = False
        self._size = self._append(chunk[0] if len(chunk) == 1 else b"".join(chunk))
        self.written += size
        offset, places = self._size - size, []
        for line in chunk:
            places.append((self.file, offset))
            offset += len(line)
        return places

    def _append(self, data: bytes) -> int:
        """Write all of ``data`` (short writes too); the end of the file after it."""
        fd, view, started = self._fd, memoryview(data), False
        try:
            while view:
                view = view[os.write(fd, view):]
                started = True
        except OSError:
            # part of a line is in the file (this one's, or one before whose end is still to
            # be written): the next write ends it first
            self._torn = self._torn or started
            raise
        return os.lseek(fd, 0, os.SEEK_CUR)

    def _rotate(self, size: int) -> None:
        """Shift the rotated copies and start a new file, unless another process did it first.
        A file that another process (``opsstack logs cleanup``) moved or deleted meanwhile is
        skipped, and the new file is opened whatever happened: one failed rename must not
        leave the output closed for the rest of the run."""
        directory = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            _lock(directory, ROTATION_LOCK_WAIT)
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == self.file.inode and os.fstat(self._fd).st_size + size > self.max_bytes:
                self._shift()
            os.close(self._fd)
            self._fd = -1
            self._fd = self._open()
        finally:
            os.close(directory)  # and the lock with it

    def _shift(self) -> None:
        if self.backup_count > 0:
            for number in range(self.backup_count - 1, -1, -1):
                source = self.path.with_name(f"{self.path.name}.{number}") if number else self.path
                try:
                    os.replace(source, self.path.with_name(f"{self.path.name}.{number + 1}"))
                except FileNotFoundError:
                    continue
        else:
            try:
                os.truncate(self.path, 0)
            except FileNotFoundError:
                pass

    @property
    def size(self) -> int:
        """Where the next line goes in :attr:`file` (past the newline that ends a torn line)."""
        return self._size + self._torn

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _lock(fd: int, wait: float) -> bool:
    """An exclusive ``flock`` on ``fd`` within ``wait`` seconds; False when it stayed taken. A
    child forked while its parent rotated keeps a copy of the parent's locked descriptor, and so
    the lock, for as long as it lives: the rotation then goes on without it rather than block
    every process's logging (two rotating at once is what the lock prevents, not a loss)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


def existing_files(path: Path) -> list[Path]:
    """``path`` (when it exists) and its rotated copies, in number order."""
    return ([path] if path.exists() else []) + [Path(name) for name in rotated_copies(path)]


class ECSHandler(logging.Handler):
    """Formats each record once and fans the line out to files, console and sinks."""

    def __init__(self, formatter: logging.Formatter, files: list[RotatingFile], *, console: bool,
                 sinks: list[LogSink], metrics: Metrics, level: int) -> None:
        super().__init__(level)
        self.setFormatter(formatter)
        self.files = files
        self.console = console
        self.sinks = sinks
        # The sinks told where each line sits in the first file (bot.json), and the others.
        self._file_sinks = [sink for sink in sinks if isinstance(sink, FileShippingSink)]
        self._plain_sinks = [sink for sink in sinks if not isinstance(sink, FileShippingSink)]
        for sink in self._file_sinks:
            try:
                sink.follow(files[0].file, files[0].size)
            except Exception as exc:  # plug-in boundary
                self._failed("sink", exc)
        self.metrics = metrics
        self.records_by_level = {name: 0 for _, name in LEVEL_NAMES}
        self.errors = {"file": 0, "errors": 0, "console": 0, "sink": 0}
        self._level_names: dict[int, str] = {}
        self._count = metrics.log_records.inc
        self._reported: set[str] = set()
        self._report_lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """In a forked child, at once: the sinks let go of what is the parent's (no file is
        opened, no thread started: a child may exec right away, as ``subprocess`` does after a
        ``preexec_fn``)."""
        for sink in self.sinks:
            restart = getattr(sink, "after_fork_in_child", None)  # optional, see ports.FileShippingSink
            try:
                if restart is not None:
                    restart()
            except Exception as exc:  # plug-in boundary
                self._failed("sink", exc)

    def reopen_in_child(self) -> None:
        """In a forked child, before its first line: files of its own, and the sinks that ship
        from them told where its lines start, as if it had just enabled logging."""
        for output in self.files:
            try:
                output.reopen()
            except OSError as exc:
                self._failed(output.name, exc)
        for sink in self._file_sinks:
            try:
                sink.follow(self.files[0].file, self.files[0].size)
            except Exception as exc:  # plug-in boundary
                self._failed("sink", exc)

    def emit(self, record: logging.LogRecord) -> None:
        levelno = record.levelno
        state = thread_state.__dict__  # empty on the bot's own threads
        if state and levelno < logging.WARNING and "shipping" in state:
            return  # a sink worker's chatter (one request line per batch) is not the bot's log
        self.output([(levelno, self.formatter.format(record))], ship=not state)

    def output(self, lines: list[tuple[int, str]], ship: bool) -> None:
        """Count formatted ``(levelno, line)``s and write them to every output their level
        reaches, each output with one write (to the sinks when ``ship``: not for a line logged
        by a sink while it was submitting)."""
        level_names, counts = self._level_names, self.records_by_level
        data = []
        for levelno, line in lines:
            name = level_names.get(levelno) or self._level_name(levelno)
            counts[name] += 1
            self._count(name)
            data.append((line + "\n").encode("utf-8", "backslashreplace"))
        places: list | None = None  # where each line went in the first file (bot.json)
        lowest = min([levelno for levelno, _ in lines])
        for output in self.files:
            chosen = data if output.level <= lowest else [
                line for line, (levelno, _) in zip(data, lines) if levelno >= output.level]
            if not chosen:
                continue
            try:
                written_at = output.write_lines(chosen)
            except Exception as exc:  # plug-in boundary: an output never breaks the bot
                for _ in chosen:
                    self._failed(output.name, exc)
            else:
                if output is self.files[0] and chosen is data:
                    places = written_at
        if self.console:
            try:
                sys.stderr.write("".join([line + "\n" for _, line in lines]))
            except Exception as exc:  # plug-in boundary
                self._failed("console", exc)
        if self.sinks and ship:
            thread_state.submitting = True  # a sink that logs while submitting does not loop
            try:
                for number, (levelno, _) in enumerate(lines):
                    self._submit(data[number], levelno, places[number] if places is not None else None)
            finally:
                del thread_state.submitting

    def _level_name(self, levelno: int) -> str:
        name = self._level_names[levelno] = log_level_label(levelno)
        return name

    def _submit(self, payload: bytes, levelno: int, place: tuple[LogFile, int] | None) -> None:
        """Hand the line to every sink; the ones that ship from the file learn its ``place``
        there (a line the file could not take goes to them as a plain one)."""
        plain = self.sinks
        if place is not None and self._file_sinks:
            plain = self._plain_sinks
            file, offset = place
            for sink in self._file_sinks:
                try:
                    sink.submit_at(payload, levelno, file, offset)
                except Exception as exc:  # plug-in boundary
                    self._failed("sink", exc)
        for sink in plain:
            try:
                sink.submit(payload, levelno)
            except Exception as exc:  # plug-in boundary
                self._failed("sink", exc)

    def _failed(self, name: str, exc: Exception) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1
        self.metrics.log_handler_errors.labels(name).inc()
        with self._report_lock:
            if name in self._reported:
                return
            self._reported.add(name)
        try:
            sys.stderr.write(f"opsstack: log output {name!r} failed: {type(exc).__name__}: {exc} "
                             "(reported once; further failures are counted in bot_log_handler_errors_total)\n")
        except Exception:  # stderr itself is gone: the metric still counts it
            return

    def close(self) -> None:
        self.acquire()
        try:
            for output in self.files:
                output.close()
        finally:
            self.release()
        super().close()
