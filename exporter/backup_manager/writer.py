"""Write one backup: walk the sources, stream them through tar, zstd/gzip and AES-GCM to a temp
file, hashing every file and the archive on the way; then fsync, rename, and write the manifest
last. Any failure (disk full, Ctrl-C, a source that vanished) removes every temp file."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import sqlite3
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BackupError
from .catalog import FORMAT_VERSION, TEMP_MARKER, manifest_path

IO_CHUNK = 1 << 20
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
ARCHIVE_SUFFIX = {"zstd": ".tar.zst", "gzip": ".tar.gz", "none": ".tar"}

Progress = Callable[[int, int, int, int], None]  # files done, files total, bytes done, bytes total


class BackupCancelled(BackupError):
    """The backup was cancelled; nothing of it is left behind."""


@dataclass
class Entry:
    path: Path          # on disk
    arcname: str        # inside the archive
    st: os.stat_result


def archive_name(name: str, compression: str, encrypted: bool) -> str:
    return name + ARCHIVE_SUFFIX[compression] + (".enc" if encrypted else "")


def plan_sources(source_paths: Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    """Each source's absolute path and the top-level name it gets inside the archive."""
    planned, taken = [], set()
    for raw in source_paths:
        path = Path(os.path.abspath(os.fspath(raw)))
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise BackupError(f"source path does not exist: {path}") from None
        base = path.name or "root"
        arcname, n = base, 2
        while arcname in taken:
            arcname, n = f"{base}_{n}", n + 1
        taken.add(arcname)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        planned.append({"path": str(path), "arcname": arcname, "type": kind})
    if not planned:
        raise BackupError("no source paths given")
    return planned


def walk(sources: list[dict[str, str]], exclude: Path) -> tuple[list[Entry], list[str]]:
    """Every directory, regular file and symlink under the sources (no link is followed)."""
    entries: list[Entry] = []
    skipped: list[str] = []
    exclude_str = str(exclude)

    def visit(path: Path, arcname: str) -> None:
        if str(path) == exclude_str:
            return
        try:
            st = path.lstat()
        except FileNotFoundError:
            return  # vanished while walking: it is simply not in this backup
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            entries.append(Entry(path, arcname, st))
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                raise BackupError(f"cannot read directory {path}: {exc.strerror}") from exc
            for name in names:
                visit(path / name, f"{arcname}/{name}")
        elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            entries.append(Entry(path, arcname, st))
        else:
            skipped.append(arcname)  # sockets, fifos, devices: never backed up

    for source in sources:
        visit(Path(source["path"]), source["arcname"])
    return entries, skipped


def is_sqlite(path: Path) -> bool:
    if not path.name.lower().endswith(SQLITE_SUFFIXES):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def snapshot_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live database through SQLite's online backup API."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


class _Sink:
    """The bottom of the stack: the temp file. A thread hashes and writes the archive bytes
    while the caller's thread goes on reading, hashing and compressing files."""

    def __init__(self, handle, cancel: threading.Event | None) -> None:
        self._handle = handle
        self._cancel = cancel
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="backup-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.sha256.update(data)
                    self._handle.write(data)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def write(self, data) -> int:
        if self._cancel is not None and self._cancel.is_set():
            raise BackupCancelled("backup cancelled")
        if self._error is not None:
            raise self._error
        data = bytes(data)
        self._queue.put(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Wait for every byte to be written; raise what the writer thread met."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class _Buffer:
    """What tarfile writes into: gathers small writes into 1 MiB blocks for the compressor
    (tarfile's own stream mode re-copies its whole buffer on every write)."""

    def __init__(self, downstream) -> None:
        self._down = downstream
        self._buffer = bytearray()
        self._position = 0

    def write(self, data) -> int:
        n = len(data)
        self._position += n
        if not self._buffer and n >= IO_CHUNK:
            self._down.write(data)
            return n
        self._buffer += data
        if len(self._buffer) >= IO_CHUNK:
            self.flush()
        return n

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        if self._buffer:
            self._down.write(bytes(self._buffer))
            self._buffer.clear()


def _put_header(tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    """``TarFile.addfile`` without its per-member copy and member list (we keep a manifest)."""
    header = info.tobuf(tar.format, tar.encoding, tar.errors)
    tar.fileobj.write(header)
    tar.offset += len(header)


def _put_file(tar: tarfile.TarFile, info: tarfile.TarInfo, handle,
              advance: Callable[[int], None]) -> tuple[str, bool]:
    """Header, then the file's bytes (hashed on the way), then the block padding.

    A file that shrank since it was listed is padded with zeros, one that grew is cut at the
    listed size; either way the hash covers exactly what the archive holds."""
    _put_header(tar, info)
    digest = hashlib.sha256()
    left, changed = info.size, False
    while left:
        data = handle.read(min(IO_CHUNK, left))
        if not data:
            changed = True
            data = bytes(min(IO_CHUNK, left))
        digest.update(data)
        tar.fileobj.write(data)
        left -= len(data)
        advance(len(data))
    if handle.read(1):
        changed = True
    padding = -info.size % tarfile.BLOCKSIZE
    if padding:
        tar.fileobj.write(bytes(padding))
    tar.offset += info.size + padding
    return digest.hexdigest(), changed


def _compressor(layer, compression: str, level: int | None, threads: int):
    if compression == "zstd":
        import zstandard

        params = {"level": 3 if level is None else level, "write_checksum": True}
        if threads > 1:
            params["threads"] = threads
        return zstandard.ZstdCompressor(**params).stream_writer(layer, closefd=False,
                                                               write_size=IO_CHUNK)
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=layer, mode="wb", compresslevel=6 if level is None else level,
                             mtime=0)
    return None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(json.dumps(data, separators=(",", ":")).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_backup(*, backup_dir: Path, name: str, source_paths: Iterable[str | os.PathLike],
                 description: str, tier: str, compression: str, key: bytes | None,
                 level: int | None = None, threads: int = 0, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> dict[str, Any]:
    """Create the backup ``name`` in ``backup_dir``; return its manifest."""
    started = time.time()
    sources = plan_sources(source_paths)
    entries, skipped = walk(sources, exclude=backup_dir)
    files_total = sum(1 for e in entries if stat.S_ISREG(e.st.st_mode))
    bytes_total = sum(e.st.st_size for e in entries if stat.S_ISREG(e.st.st_mode))
    final_archive = backup_dir / archive_name(name, compression, key is not None)
    pid = os.getpid()
    tmp_archive = backup_dir / f".{final_archive.name}{TEMP_MARKER}{pid}"
    temps = [tmp_archive]
    done = {"files": 0, "bytes": 0}

    def advance(n: int) -> None:
        done["bytes"] += n
        if progress is not None:
            progress(done["files"], files_total, done["bytes"], bytes_total)

    records: list[dict[str, Any]] = []
    sink = None
    try:
        fd = os.open(tmp_archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=0) as handle:
            sink = _Sink(handle, cancel)
            layer = sink
            if key is not None:
                from .crypto import Encryptor

                layer = Encryptor(sink, key)
            compressor = _compressor(layer, compression, level, threads)
            buffer = _Buffer(compressor or layer)
            tar = tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT)
            sqlite_done: set[str] = set()
            for number, entry in enumerate(entries):
                records.append(_add_entry(tar, entry, backup_dir, name, number, temps, sqlite_done,
                                          advance))
                if stat.S_ISREG(entry.st.st_mode):
                    done["files"] += 1
            tar.close()
            buffer.flush()
            if compressor is not None:
                compressor.close()
            if layer is not sink:
                layer.close()
            sink.close()
            os.fsync(handle.fileno())
        records = [r for r in records if r is not None]
        os.replace(tmp_archive, final_archive)
        temps.append(final_archive)
        manifest = {
            "format": "opsstack-backup",
            "format_version": FORMAT_VERSION,
            "name": name,
            "created_at": started,
            "created_at_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "tier": tier,
            "description": description,
            "opsstack_version": __version__,
            "settings": {"compression": compression, "compression_level": level,
                         "encrypted": key is not None,
                         "encryption": "AES-256-GCM, 1 MiB frames" if key is not None else None,
                         "hash": "sha256"},
            "sources": sources,
            "archive": {"name": final_archive.name, "size": sink.size,
                        "sha256": sink.sha256.hexdigest()},
            "file_count": sum(1 for r in records if r["type"] == "file"),
            "total_bytes": sum(r.get("size", 0) for r in records),
            "skipped": skipped,
            "duration_seconds": round(time.time() - started, 3),
            "files": records,
        }
        write_json_atomic(manifest_path(backup_dir, name), manifest)
        _fsync_dir(backup_dir)
        temps.remove(final_archive)
        return manifest
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise BackupError(f"disk full while writing backup {name!r} to {backup_dir}: "
                              "nothing of it was kept; free some space and retry") from exc
        raise BackupError(f"backup {name!r} failed: {exc}") from exc
    finally:
        if sink is not None:
            try:
                sink.close()
            except BaseException:
                pass
        for path in temps:
            _unlink_quietly(path)


def _add_entry(tar: tarfile.TarFile, entry: Entry, backup_dir: Path, name: str, number: int,
               temps: list[Path], sqlite_done: set[str], advance) -> dict[str, Any] | None:
    st = entry.st
    info = tarfile.TarInfo(entry.arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)  # whole seconds: no pax header per file (the manifest has the rest)
    info.uid, info.gid = st.st_uid, st.st_gid
    record: dict[str, Any] = {"path": entry.arcname, "mode": info.mode, "mtime": st.st_mtime}
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        _put_header(tar, info)
        return {**record, "type": "dir"}
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(entry.path)
        _put_header(tar, info)
        return {**record, "type": "symlink", "link": info.linkname}
    if entry.path.name.endswith(SQLITE_SIDECARS) and \
            str(entry.path)[:-len(entry.path.name.rsplit("-", 1)[1]) - 1] in sqlite_done:
        return None  # journal of a database copied consistently through the backup API
    source = entry.path
    if is_sqlite(entry.path):
        snapshot = backup_dir / f".{name}{TEMP_MARKER}{os.getpid()}-sqlite-{number}"
        temps.append(snapshot)
        try:
            snapshot_sqlite(entry.path, snapshot)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot copy SQLite database {entry.path}: {exc}") from exc
        sqlite_done.add(str(entry.path))
        source = snapshot
        record["sqlite"] = True
    try:
        handle = open(source, "rb", buffering=0)
    except FileNotFoundError:
        return None  # deleted since the walk: not in this backup
    with handle:
        size = os.fstat(handle.fileno()).st_size if source is not entry.path else st.st_size
        info.size = size
        sha256, changed = _put_file(tar, info, handle, advance)
    if source is not entry.path:
        os.unlink(source)
        temps.remove(source)
    record.update(type="file", size=size, sha256=sha256)
    if changed:
        record["changed_during_backup"] = True
    return record
