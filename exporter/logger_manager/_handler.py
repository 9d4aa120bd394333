"""The one handler the manager puts on the root logger, and the outputs it writes to.

A record is formatted once and the same line goes to every output whose level it reaches: the
size-rotating ``bot.json``, the errors-only ``errors.json``, the console and the sinks (a sink that
ships from the file, :class:`exporter.ports.FileShippingSink`, is also told the line's inode and
offset in ``bot.json``). An output that fails is counted in
``bot_log_handler_errors_total{handler=...}`` and reported once on stderr; the record still
reaches the other outputs and the caller never sees the error.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from ..metrics import Metrics, log_level_label
from ..ports import FileShippingSink, LogFile, LogSink, thread_state

FILE_MODE = 0o600
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
LEVEL_NAMES = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"),
               (logging.INFO, "info"), (logging.NOTSET, "debug"))


class RotatingFile:
    """An append-only JSON-lines file that rotates by size (``name``, ``name.1`` ... ``name.N``).

    Written with ``os.write`` on an ``O_APPEND`` descriptor: one system call per line, no
    buffer to lose, and the size is counted rather than asked from the file system. With
    ``backup_count`` 0 the file is emptied instead of rotated, so it stays within ``max_bytes``.
    """

    def __init__(self, name: str, path: Path, max_bytes: int, backup_count: int, level: int) -> None:
        self.name = name
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.level = level
        self.written = 0
        self.file = LogFile(str(path), 0)  # the file being written (its inode), for the sinks
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            self.file = LogFile(self.file.path, os.fstat(fd).st_ino)
        except OSError:
            os.close(fd)
            raise
        return fd

    def write(self, data: bytes) -> int:
        """Append ``data``; the offset it starts at in :attr:`file` (one writer per file)."""
        return self.write_lines([data])[0][1]

    def write_lines(self, lines: list[bytes]) -> list[tuple[LogFile, int]]:
        """Append ``lines`` with one system call (one per file when it rotates between them, as
        it would line by line); the file and offset each went to (one writer per file)."""
        if self._fd < 0:
            raise OSError(f"{self.path} is closed")
        places: list[tuple[LogFile, int]] = []
        chunk: list[bytes] = []
        size, limit = self._size, self.max_bytes
        for line in lines:
            if size + len(line) > limit and size > 0:
                self._append(b"".join(chunk))
                chunk = []
                self._rotate()
                size = self._size
            places.append((self.file, size))
            chunk.append(line)
            size += len(line)
        self._append(chunk[0] if len(chunk) == 1 else b"".join(chunk))
        return places

    def _append(self, data: bytes) -> None:
        size = len(data)
        written = os.write(self._fd, data) if size else 0
        if written != size:  # a short write (a signal, a full disk): write the rest
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self._fd, view):]
        self._size += size
        self.written += size

    def _rotate(self) -> None:
        """Shift the rotated copies and start a new file. A file that another process (a second
        bot on the same LOG_DIR, ``opsstack logs cleanup``) moved or deleted meanwhile is
        skipped, and the new file is opened whatever happened: one failed rename must not
        leave the output closed for the rest of the run."""
        os.close(self._fd)
        self._fd = -1
        try:
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
        finally:
            self._fd = self._open()
            self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        """Bytes in :attr:`file`: where the next line goes."""
        return self._size

    def files(self) -> list[Path]:
        """The current file and its rotated copies that exist."""
        return existing_files(self.path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def existing_files(path: Path) -> list[Path]:
    found = [path] if path.exists() else []
    if path.parent.is_dir():
        rotated = []
        for candidate in path.parent.glob(path.name + ".*"):
            suffix = candidate.name[len(path.name) + 1:]
            if suffix.isdigit():
                rotated.append((int(suffix), candidate))
        found += [candidate for _, candidate in sorted(rotated)]
    return found


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
