"""A bounded on-disk spool of bulk-ready log records, replayed oldest segment first.

Each segment file holds lines ``<levelno>\\t<_id>\\t<json>\\n``; file names carry a counter, so
order survives a restart. Files are 0600, the directory 0700. Processes sharing ``STATE_DIR``
(Celery's prefork children) share the spool: each lists it when it opens it, and a segment
another one replayed and removed meanwhile is simply gone from the list. The size limit is the
directory's, whatever process wrote its segments (each write counts the others' on disk). When
it is reached,
records below WARNING are dropped first (incoming ones, then old ones by rewriting segments);
WARNING and above are dropped only when nothing else is left. Every drop is reported.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from .._files import make_dirs, replace_file

Record = tuple[int, str, bytes]  # (levelno, _id, json)


class Spool:
    def __init__(self, directory: Path, max_bytes: int, on_drop: Callable[[int, int], None]):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._on_drop = on_drop  # (levelno, count)
        self._lock = threading.Lock()
        self._segments: list[tuple[Path, int, float]] = []  # (path, size, created)
        self._other_sizes: dict[tuple[str, int], int] = {}  # other processes' segments: (name, inode) -> bytes
        self._counter = 0
        self._opened = False
        self.generation = 0  # changes when segments are rewritten (a reader's copy is stale then)

    def open(self) -> None:
        with self._lock:
            if self._opened:
                return
            make_dirs(self.directory)
            os.chmod(self.directory, 0o700)  # one made by an older version: 0755
            for path in sorted(self.directory.glob("*.spool")):
                counter, _, created = path.stem.partition("-")
                if not (counter.isdigit() and created.isdigit()):
                    continue  # not a segment this code wrote: left alone
                size = path.stat().st_size
                if size == 0:
                    path.unlink()
                    continue
                self._segments.append((path, size, int(created) / 1e9))
                self._counter = max(self._counter, int(counter))
            self._opened = True

    # -- figures
    def size(self) -> int:
        return sum(size for _, size, _ in self._segments)

    def oldest(self) -> float:
        segments = self._segments
        return segments[0][2] if segments else 0.0

    def __bool__(self) -> bool:
        return bool(self._segments)

    # -- writing
    def append(self, records: Iterable[Record]) -> int:
        """Write ``records`` as one new segment (dropping by level when full); return the number kept."""
        data, levels = bytearray(), []
        for level, rid, line in records:
            data += encode_line(level, rid, line)
            levels.append(level)
        return self.append_block(data, levels)

    def append_block(self, data: bytes | bytearray, levels: list[int]) -> int:
        """:meth:`append` for records already encoded: ``data`` their segment lines one after the
        other (one buffer, not one object per record), ``levels`` their levels in order."""
        if not levels:
            return 0
        self.open()
        with self._lock:
            others = self._others_size()
            if len(data) > self.max_bytes - others - self.size():  # full: split it to drop by level
                encoded = self._fit(list(zip(levels, data.splitlines(keepends=True))), others)
                if not encoded:
                    return 0
                data, levels = b"".join([line for _, line in encoded]), encoded
            self._counter += 1
            created = time.time_ns()
            path = self.directory / f"{self._counter:012d}-{created}.spool"
            replace_file(path, data)
            self._segments.append((path, len(data), created / 1e9))
            return len(levels)

    def _others_size(self) -> int:
        """Bytes of the segments other processes on this directory wrote (not in this list).

        A segment is written once, atomically, and rewritten only by replacing it (a new
        inode), so its size is taken once per (name, inode): an append during a long outage
        lists the directory but stats only the segments new since the last one."""
        own = {path.name for path, _, _ in self._segments}
        known, seen = self._other_sizes, {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(".spool") and entry.name not in own:
                    key = (entry.name, entry.inode())
                    size = known.get(key)
                    if size is None:
                        try:
                            size = entry.stat().st_size
                        except FileNotFoundError:  # replayed and removed meanwhile
                            continue
                    seen[key] = size
        self._other_sizes = seen
        return sum(seen.values())

    def _fit(self, encoded: list[tuple[int, bytes]], others: int) -> list[tuple[int, bytes]]:
        """What of ``encoded`` fits once full: DEBUG/INFO go first, new ones before old ones
        (this process's own; ``others``, the bytes of other processes' segments, stay)."""
        room = self.max_bytes - others - self.size()
        encoded = self._drop_low(encoded)
        need = sum(len(data) for _, data in encoded)
        if need > room and encoded:  # only WARNING and above left: old DEBUG/INFO make way
            self._purge_low_on_disk()
            room = self.max_bytes - others - self.size()
        if need <= room:
            return encoded
        kept, used = [], 0
        for level, data in encoded:
            if used + len(data) <= room:
                kept.append((level, data))
                used += len(data)
            else:
                self._on_drop(level, 1)
        return kept

    def _drop_low(self, encoded):
        kept = []
        for level, data in encoded:
            if level < logging.WARNING:
                self._on_drop(level, 1)
            else:
                kept.append((level, data))
        return kept

    def _purge_low_on_disk(self) -> None:
        """Rewrite every segment without its DEBUG/INFO records (room for WARNING and above)."""
        self.generation += 1
        segments = []
        for path, size, created in self._segments:
            keep = []
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # replayed meanwhile by another process on this STATE_DIR
                continue
            for level, rid, line in parse(data):
                if level < logging.WARNING:
                    self._on_drop(level, 1)
                else:
                    keep.append(encode_line(level, rid, line))
            if keep:
                replace_file(path, b"".join(keep))
                segments.append((path, path.stat().st_size, created))
            else:
                path.unlink(missing_ok=True)
        self._segments = segments

    # -- reading
    def head(self) -> Path | None:
        """The oldest segment (it stays until :meth:`remove`); read it with ``path.read_bytes()``."""
        with self._lock:
            return self._segments[0][0] if self._segments else None

    def remove(self, path: Path) -> None:
        with self._lock:
            self._segments = [segment for segment in self._segments if segment[0] != path]
            path.unlink(missing_ok=True)


def encode_line(level: int, rid: str, line: bytes) -> bytes:
    """One segment line: ``<levelno>\\t<_id>\\t<json>\\n`` (``line`` is the JSON, no newline)."""
    return b"%d\t%s\t%s\n" % (level, rid.encode(), line)


def lines_end(data: bytes, start: int, count: int) -> int:
    """The offset just past ``count`` segment lines of ``data`` from ``start`` (or its end)."""
    find = data.find
    end = start
    for _ in range(count):
        end = find(b"\n", end) + 1
        if not end:
            return len(data)
    return end


def parse(data: bytes):
    """The records ``(levelno, _id, json)`` of segment lines ``data``, in order."""
    for raw in data.splitlines():
        level, _, rest = raw.partition(b"\t")
        rid, _, line = rest.partition(b"\t")
        if line:
            yield int(level), rid.decode(), line
