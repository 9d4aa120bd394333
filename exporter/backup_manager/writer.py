"""Write one backup: walk the sources (:mod:`.sources`), stream them through tar, zstd/gzip and
AES-GCM (:mod:`.tarstream`) to a temp file (:mod:`.sink`), hashing every file and the archive
on the way; then fsync, write the manifest, and rename the archive into place last. Any
failure (disk full, Ctrl-C, a source that vanished) removes every temp file and the manifest."""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import __version__
from .._files import fsync_directory, replace_file
from ..errors import BackupError
from .catalog import ARCHIVE_SUFFIX, ENCRYPTED_FORMAT_VERSION, FORMAT_VERSION, TEMP_MARKER, manifest_path
from .sink import BackupCancelled, BufferedSink, DirectSink, open_sink
from .sources import Entry, plan_sources, walk
from .tarstream import DIRTYPE, REGTYPE, SYMTYPE, Seal, TarStream, tar_header

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")

Progress = Callable[[int, int, int, int], None]  # files done, files total, bytes done, bytes total


def archive_name(name: str, compression: str, encrypted: bool) -> str:
    return name + ARCHIVE_SUFFIX[compression] + (".enc" if encrypted else "")


def is_sqlite(path: str) -> bool:
    if not path.lower().endswith(SQLITE_SUFFIXES):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def snapshot_sqlite(source: str, target: Path) -> None:
    """A consistent copy of a live database through SQLite's online backup API."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src = sqlite3.connect(f"{Path(source).as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_json_atomic(path: Path, data: Any) -> None:
    replace_file(path, json.dumps(data, separators=(",", ":")).encode(),
                 temp=path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}"))


class _Tally:
    """The files and bytes written so far, reported to ``progress`` (if any) as they grow;
    ``entries`` are all of them, listed up front, when there is a ``progress`` to tell the
    totals to."""

    def __init__(self, entries: Iterable[Entry], progress: Progress | None) -> None:
        regular = [entry.st.st_size for entry in entries if stat.S_ISREG(entry.st.st_mode)]
        self.files_total, self.bytes_total = len(regular), sum(regular)
        self.files = self.bytes = 0
        self._progress = progress
        self.advance = self._report if progress is not None else None

    def _report(self, n: int) -> None:
        self.bytes += n
        self._progress(self.files, self.files_total, self.bytes, self.bytes_total)


def write_backup(*, backup_dir: Path, name: str, source_paths: Iterable[str | os.PathLike],
                 description: str, tier: str, compression: str, key: bytes | None,
                 level: int | None = None, threads: int = 0, progress: Progress | None = None,
                 cancel: threading.Event | None = None,
                 before_publish: Callable[[], None] | None = None) -> dict[str, Any]:
    """Create the backup ``name`` in ``backup_dir``; return its manifest. ``before_publish``
    runs once the archive is complete, before anything of it is made visible (it may raise to
    abandon the backup: a shared lock lost meanwhile)."""
    started = time.time()
    sources = plan_sources(source_paths)
    skipped: list[str] = []
    # Files are archived as the walk finds them, so the compressing threads start at once (the
    # walk over 9,000 files took 0.1 s on one core while the other had nothing to do). With a
    # progress callback the totals are told from its first call: then the whole walk first.
    entries: Iterable[Entry] = walk(sources, backup_dir, skipped)
    if progress is not None:
        entries = list(entries)
    tally = _Tally(entries if progress is not None else (), progress)
    final_archive = backup_dir / archive_name(name, compression, key is not None)
    tmp_archive = backup_dir / f".{final_archive.name}{TEMP_MARKER}{os.getpid()}"
    temps = [tmp_archive]
    sink = stream = None
    fd = -1
    try:
        fd = os.open(tmp_archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        sink = open_sink(fd, cancel)
        stream = TarStream(sink, compression, level, threads, seal=_sealing(sink, key))
        records = _archive_entries(stream, entries, backup_dir, name, temps, tally, cancel)
        sink.close()
        os.close(fd)
        fd = -1
        manifest = _describe(name=name, started=started, tier=tier, description=description,
                             compression=compression, level=level, key=key, sources=sources,
                             archive={"name": final_archive.name, "size": sink.size,
                                      "sha256": sink.sha256.hexdigest()},
                             records=records, skipped=skipped)
        if before_publish is not None:
            before_publish()
        _publish(backup_dir, manifest, key, tmp_archive, final_archive, temps)
        return manifest
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise BackupError(f"disk full while writing backup {name!r} to {backup_dir}: "
                              "nothing of it was kept; free some space and retry") from exc
        raise BackupError(f"backup {name!r} failed: {exc}") from exc
    finally:
        if stream is not None:
            stream.abort()
        if sink is not None:
            sink.stop()
        if fd >= 0:
            os.close(fd)
        for path in temps:
            _unlink_quietly(path)


def _sealing(sink: BufferedSink | DirectSink, key: bytes | None) -> Callable[[], Seal] | None:
    """With a key: the encryption header written, the factory of the stream's frame sealers."""
    if key is None:
        return None
    from .crypto import FrameSealer

    sealer = FrameSealer(key)
    sink.write(sealer.header)
    return sealer.for_thread


def _archive_entries(stream: TarStream, entries: Iterable[Entry], backup_dir: Path, name: str,
                     temps: list[Path], tally: _Tally, cancel: threading.Event | None) -> list[dict[str, Any]]:
    """Every entry into the tar stream (then closed); their manifest records, hashes final."""
    records, sqlite_done = [], set()
    for number, entry in enumerate(entries):
        if cancel is not None and cancel.is_set():
            raise BackupCancelled("backup cancelled")
        record = _add_entry(stream, entry, backup_dir, name, number, temps, sqlite_done, tally.advance)
        if record is not None:
            records.append(record)
        if stat.S_ISREG(entry.st.st_mode):
            tally.files += 1
    stream.close()
    for record in records:
        if record["type"] == "file":
            record["sha256"] = record["sha256"].hexdigest()
    return records


def _describe(*, name: str, started: float, tier: str, description: str, compression: str,
              level: int | None, key: bytes | None, sources: list[dict[str, Any]],
              archive: dict[str, Any], records: list[dict[str, Any]],
              skipped: list[str]) -> dict[str, Any]:
    """The whole manifest of a backup just written."""
    return {
        "format": "opsstack-backup",
        "format_version": FORMAT_VERSION if key is None else ENCRYPTED_FORMAT_VERSION,
        "name": name,
        "created_at": started,
        "created_at_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "tier": tier,
        "description": description,
        "opsstack_version": __version__,
        "settings": {"compression": compression, "compression_level": level,
                     "encrypted": key is not None,
                     "encryption": "AES-256-GCM, a frame per segment" if key is not None else None,
                     "hash": "sha256"},
        "sources": sources,
        "archive": archive,
        "file_count": sum(1 for r in records if r["type"] == "file"),
        "total_bytes": sum(r.get("size", 0) for r in records),
        "skipped": skipped,
        "duration_seconds": round(time.time() - started, 3),
        "files": records,
    }


def _publish(backup_dir: Path, manifest: dict[str, Any], key: bytes | None, tmp_archive: Path,
             final_archive: Path, temps: list[Path]) -> None:
    """The manifest first (sealed when encrypted), the archive into place last: a crash in
    between leaves a manifest whose archive is missing (listed as nothing) and our temp file,
    never an archive that a later clean-up could not tell from someone else's file."""
    manifest_file = manifest_path(backup_dir, manifest["name"])
    if key is not None:
        from .sealing import seal

        write_json_atomic(manifest_file, seal(manifest, key))
    else:
        write_json_atomic(manifest_file, manifest)
    temps.append(manifest_file)
    os.replace(tmp_archive, final_archive)
    fsync_directory(backup_dir)
    temps.remove(manifest_file)


def _add_entry(stream: TarStream, entry: Entry, backup_dir: Path, name: str, number: int,
               temps: list[Path], sqlite_done: set[str],
               advance: Callable[[int], None] | None) -> dict[str, Any] | None:
    st = entry.st
    mode = stat.S_IMODE(st.st_mode)
    mtime = int(st.st_mtime)  # whole seconds: no pax header per file (the manifest has the rest)
    record: dict[str, Any] = {"path": entry.arcname, "mode": mode, "mtime": st.st_mtime}
    if stat.S_ISDIR(st.st_mode):
        stream.add_header(tar_header(entry.arcname, DIRTYPE, mode, st.st_uid, st.st_gid, mtime))
        return {**record, "type": "dir"}
    if stat.S_ISLNK(st.st_mode):
        link = os.readlink(entry.path)
        stream.add_header(tar_header(entry.arcname, SYMTYPE, mode, st.st_uid, st.st_gid, mtime,
                                     linkname=link))
        return {**record, "type": "symlink", "link": link}
    if entry.path.endswith(SQLITE_SIDECARS) and \
            entry.path[:entry.path.rindex("-")] in sqlite_done:
        return None  # journal of a database copied consistently through the backup API
    source = entry.path
    if is_sqlite(entry.path):
        snapshot = backup_dir / f".{name}{TEMP_MARKER}{os.getpid()}-sqlite-{number}"
        temps.append(snapshot)
        try:
            snapshot_sqlite(entry.path, snapshot)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot copy SQLite database {entry.path}: {exc}") from exc
        sqlite_done.add(entry.path)
        source = snapshot
        record["sqlite"] = True
    try:
        fd = os.open(source, os.O_RDONLY)
    except FileNotFoundError:
        return None  # deleted since the walk: not in this backup
    try:
        size = os.fstat(fd).st_size if source is not entry.path else st.st_size
        header = tar_header(entry.arcname, REGTYPE, mode, st.st_uid, st.st_gid, mtime, size)
        digest, changed = stream.add_file(header, fd, size, advance)
    finally:
        os.close(fd)
    if source is not entry.path:
        os.unlink(source)
        temps.remove(source)
    record.update(type="file", size=size, sha256=digest)  # a hexdigest once the stream is closed
    if changed:
        record["changed_during_backup"] = True
    return record
