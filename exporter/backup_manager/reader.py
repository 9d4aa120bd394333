"""Read an archive back: a thread reads the file, hashes its raw bytes, decrypts and decompresses,
while the caller's thread walks the tar stream and hashes each member. ``check_archive`` is the
full verification; :mod:`.restore` uses the same stream to extract."""
from __future__ import annotations

import hashlib
import queue
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DecryptionError, IntegrityError, OpsError, UnsafeArchiveError
from .safety import unsafe_reason

IO_CHUNK = 1 << 20
_END = object()


class _Decompressor:
    """zstd: one or more frames back to back (the writer makes one per segment); gzip: one
    stream; none: the bytes as they are. Anything after the end is an error."""

    def __init__(self, compression: str) -> None:
        self._compression = compression
        if compression == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdDecompressor()  # one context, reused for every frame
        self._obj = self._new()

    def _new(self):
        if self._compression == "zstd":
            return self._zstd.decompressobj(write_size=IO_CHUNK)
        if self._compression == "gzip":
            import zlib

            return zlib.decompressobj(31)
        return None

    def feed(self, data: bytes) -> bytes:
        if self._obj is None:
            return data
        out = b""
        while data:
            if self._obj.eof:  # a stream ended and more follows: only zstd has a next frame
                if self._compression != "zstd":
                    raise ValueError("data after the end of the compressed stream")
                self._obj = self._new()
            out += self._obj.decompress(data)
            data = self._obj.unused_data if self._obj.eof else b""
        return out

    def finish(self) -> None:
        if self._obj is not None and not self._obj.eof:
            raise ValueError("the compressed stream is truncated")


class ArchiveStream:
    """A read-only file object over the archive's tar bytes, produced by a background thread."""

    def __init__(self, path: Path, manifest: dict[str, Any], key: bytes | None,
                 cancel: threading.Event | None = None) -> None:
        self.path = path
        settings = manifest.get("settings", {})
        if settings.get("encrypted") and key is None:
            raise DecryptionError(f"backup {manifest['name']!r} is encrypted and "
                                  "BACKUP_ENCRYPTION_KEY is not set")
        if key is not None and not settings.get("encrypted"):
            # The manifest says so, and anyone who can write the backup directory can write a
            # manifest: with a key set, only what the key authenticates is read.
            raise DecryptionError(f"backup {manifest['name']!r} is not encrypted, and with "
                                  "BACKUP_ENCRYPTION_KEY set only encrypted backups are read; "
                                  "unset the key to read a backup made before encryption was on")
        self._key = key if settings.get("encrypted") else None
        self._compression = settings.get("compression", "zstd")
        self._queue: queue.Queue = queue.Queue(maxsize=32)
        self._buffer = memoryview(b"")
        self._cancel = cancel or threading.Event()
        self._stop = threading.Event()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._position = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, name="backup-reader", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            decrypt = None
            if self._key is not None:
                from .crypto import Decryptor

                decrypt = Decryptor(self._key, f"archive {self.path}")
            decompress = _Decompressor(self._compression)
            with open(self.path, "rb", buffering=0) as handle:
                while not self._stop.is_set():
                    raw = handle.read(IO_CHUNK)
                    if not raw:
                        break
                    self.sha256.update(raw)
                    self.size += len(raw)
                    data = decrypt.feed(raw) if decrypt is not None else raw
                    if data:
                        out = decompress.feed(data)
                        if out and not self._put(out):
                            return
            if decrypt is not None:
                decrypt.finish()
            decompress.finish()
        except OpsError as exc:
            self._error = exc
        except OSError as exc:
            self._error = IntegrityError(f"cannot read archive {self.path}: {exc}")
        except Exception as exc:  # zstd/zlib raise their own error types on corrupt data
            self._error = IntegrityError(f"archive {self.path} is corrupt: {exc}")
        finally:
            self._put(_END)

    def read(self, n: int = -1) -> bytes:
        if self._cancel.is_set():
            raise OpsError("cancelled")
        parts, want = [], (n if n >= 0 else 1 << 62)
        while want > 0:
            if not self._buffer:
                item = self._queue.get()
                if item is _END:
                    self._queue.put(_END)  # stay at the end for later reads
                    if self._error is not None:
                        raise self._error
                    break
                self._buffer = memoryview(item)
            part = self._buffer[:want]
            self._buffer = self._buffer[len(part):]
            parts.append(part)
            want -= len(part)
        data = b"".join(parts)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = 0) -> int:
        """Forward only (tarfile reads members in order): skips what lies in between."""
        if whence == 1:
            position += self._position
        elif whence != 0:
            raise OSError("an archive stream cannot seek from its end")
        if position < self._position:
            raise OSError("an archive stream cannot seek backwards")
        while self._position < position:
            if not self.read(min(IO_CHUNK, position - self._position)):
                break
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def finish(self) -> tuple[str, int]:
        """Read to the end (the tar trailer and padding) and return the raw sha256 and size."""
        while self.read(IO_CHUNK):
            pass
        self._thread.join()
        return self.sha256.hexdigest(), self.size

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def open_tar(stream: ArchiveStream) -> tarfile.TarFile:
    return tarfile.open(fileobj=stream, mode="r:")


def check_archive(backup_dir: Path, manifest: dict[str, Any], key: bytes | None,
                  progress: Callable[[int, int, int, int], None] | None = None,
                  cancel: threading.Event | None = None) -> dict[str, Any]:
    """Read every byte and check every hash. Never raises for bad data: returns a report
    ``{"ok", "name", "archive", "errors", "error_type", "files_checked", "bytes_checked"}``."""
    archive = backup_dir / manifest["archive"]["name"]
    report: dict[str, Any] = {"ok": False, "name": manifest["name"], "archive": str(archive),
                              "errors": [], "error_type": None, "files_checked": 0,
                              "bytes_checked": 0}
    expected = {entry["path"]: entry for entry in manifest.get("files", [])}
    files_total = manifest.get("file_count", 0)
    bytes_total = manifest.get("total_bytes", 0)
    seen: set[str] = set()
    errors = report["errors"]
    stream = None
    try:
        stream = ArchiveStream(archive, manifest, key, cancel)
        with open_tar(stream) as tar:
            for member in tar:
                reason = unsafe_reason(member)
                if reason:
                    raise UnsafeArchiveError(f"archive {archive}: member {member.name!r} {reason}")
                entry = expected.get(member.name)
                if entry is None:
                    errors.append(f"archive {archive}: member {member.name!r} is not in the manifest")
                    continue
                seen.add(member.name)
                kind = "file" if member.isreg() else "dir" if member.isdir() else \
                    "symlink" if member.issym() else "other"
                if kind != entry["type"]:
                    errors.append(f"archive {archive}: {member.name!r} is a {kind}, "
                                  f"the manifest says {entry['type']}")
                    continue
                if kind == "symlink" and member.linkname != entry.get("link"):
                    errors.append(f"archive {archive}: link {member.name!r} points elsewhere")
                if kind != "file":
                    continue
                digest = hashlib.sha256()
                handle = tar.extractfile(member)
                while True:
                    chunk = handle.read(IO_CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    report["bytes_checked"] += len(chunk)
                    if progress is not None:
                        progress(report["files_checked"], files_total, report["bytes_checked"],
                                 bytes_total)
                report["files_checked"] += 1
                if member.size != entry["size"] or digest.hexdigest() != entry["sha256"]:
                    errors.append(f"archive {archive}: {member.name!r} does not match its "
                                  "recorded size or sha256")
        sha256, size = stream.finish()
        if sha256 != manifest["archive"]["sha256"] or size != manifest["archive"]["size"]:
            errors.insert(0, f"archive {archive} does not match the sha256 and size in its manifest")
        for missing in sorted(set(expected) - seen):
            errors.append(f"archive {archive}: {missing!r} is in the manifest but not the archive")
    except OpsError as exc:
        errors.insert(0, str(exc))
        report["error_type"] = type(exc).__name__
    except (tarfile.TarError, EOFError, OSError) as exc:
        errors.insert(0, f"archive {archive} is corrupt: {exc}")
    finally:
        if stream is not None:
            stream.close()
    if errors and report["error_type"] is None:
        report["error_type"] = "IntegrityError"
    report["ok"] = not errors
    return report


def raise_for_report(report: dict[str, Any]) -> None:
    """Turn a failed verification report into the matching exception."""
    if report["ok"]:
        return
    message = report["errors"][0]
    if len(report["errors"]) > 1:
        message += f" (and {len(report['errors']) - 1} more problems)"
    cls = {"DecryptionError": DecryptionError, "UnsafeArchiveError": UnsafeArchiveError}.get(
        report["error_type"], IntegrityError)
    raise cls(message)
