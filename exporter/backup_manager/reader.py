"""Read an archive back: a thread reads the file, hashes its raw bytes, decrypts and decompresses,
while the caller's thread walks the tar stream. :mod:`.verify` checks every member with it;
:mod:`.restore` and repair extract through the same stream."""
from __future__ import annotations

import hashlib
import queue
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BackupKeyError, BackupUnreadableError, IntegrityError, OpsError
from .tarstream import BLOCK, RECORD

IO_CHUNK = 1 << 20
QUEUED_CHUNKS = 8  # decompressed chunks waiting for the reader: at most 8 MiB
MAX_WINDOW = 8 << 20  # zstd frames of ours use at most 2 MiB; a crafted one may not ask more
MAX_READ = 16 << 20  # tarfile reads data in small pieces; one large read is a header (pax) bomb
_END = object()


class _Stopped(Exception):
    """The reader went away: the producer stops quietly."""


class _ZstdFrames:
    """Follows zstd frame and block boundaries (RFC 8878, section 3.1) in the compressed bytes
    without decompressing, so :meth:`finish` can tell a stream that ends between frames from a
    truncated one (zstandard's streaming decompressor stops quietly at a truncated frame)."""

    def __init__(self) -> None:
        self._state, self._need, self._skip = "magic", 4, 0
        self._header = bytearray()
        self._checksum = False

    def feed(self, data) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            n = min(self._need - len(self._header), len(view))
            self._header += view[:n]
            view = view[n:]
            if len(self._header) == self._need:
                value = int.from_bytes(self._header, "little")
                self._header.clear()
                self._step(value)

    def _step(self, value: int) -> None:
        state = self._state
        if state == "magic":
            if value == 0xFD2FB528:
                self._state, self._need = "descriptor", 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:
                self._state = "skippable"
            else:
                raise ValueError("data after the end of the compressed stream")
        elif state == "skippable":
            self._state, self._skip = "magic", value
        elif state == "descriptor":
            single = value >> 5 & 1
            self._checksum = bool(value & 4)
            rest = (1 - single) + (0, 1, 2, 4)[value & 3] + (single, 2, 4, 8)[value >> 6]
            self._state, self._need = ("rest", rest) if rest else ("block", 3)
        elif state == "rest":
            self._state, self._need = "block", 3
        elif state == "block":
            kind, size = value >> 1 & 3, value >> 3
            if kind == 3:
                raise ValueError("a zstd block of the reserved type")
            self._skip = 1 if kind == 1 else size
            if value & 1:  # the frame's last block
                self._state, self._need = ("checksum", 4) if self._checksum else ("magic", 4)
        else:  # the frame's checksum
            self._state, self._need = "magic", 4

    def finish(self) -> None:
        if self._state != "magic" or self._header or self._skip:
            raise ValueError("the compressed stream is truncated")


class _Output:
    """Where the zstd stream writer writes: an object of its own, not the decompressor. The
    writer is a C type the garbage collector cannot see into, so a writer writing into its
    owner made a cycle that was never freed: every verify, restore and repair leaked its
    decompression buffers (found by the rehearsal: the bot's RSS grew ~1.5 MB a minute)."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit

    def write(self, chunk) -> int:
        self._emit(bytes(chunk))
        return len(chunk)


class _Decompressor:
    """zstd: one or more frames back to back (the writer makes one per segment); gzip: one
    stream; none: the bytes as they are. Anything after the end is an error.

    Push-fed: ``feed`` hands the output to ``emit`` in chunks of at most IO_CHUNK bytes as it
    is produced, so memory stays bounded whatever the compression ratio, and each byte is
    produced once (linear time)."""

    def __init__(self, compression: str, emit: Callable[[bytes], None]) -> None:
        self._compression = compression
        self._emit = emit
        if compression == "zstd":
            import zstandard

            self._frames = _ZstdFrames()
            self._zstd = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_writer(
                _Output(emit), write_size=IO_CHUNK, write_return_read=True, closefd=False)
        elif compression == "gzip":
            import zlib

            self._zlib = zlib.decompressobj(31)

    def feed(self, data) -> None:
        if self._compression == "zstd":
            self._zstd.write(data)
            self._frames.feed(data)
        elif self._compression == "gzip":
            while True:
                if self._zlib.eof:
                    if data or self._zlib.unused_data:
                        raise ValueError("data after the end of the compressed stream")
                    return
                out = self._zlib.decompress(data, IO_CHUNK)
                if out:
                    self._emit(out)
                data = self._zlib.unconsumed_tail
                if not data and len(out) < IO_CHUNK and not self._zlib.eof:
                    return
        else:
            view = memoryview(data)
            for start in range(0, len(view), IO_CHUNK):
                self._emit(bytes(view[start:start + IO_CHUNK]))

    def close(self) -> None:
        """Drop the zstd writer: an error kept with its traceback (the frames hold this object)
        must not keep a cycle through the writer alive."""
        self._zstd = None

    def finish(self) -> None:
        if self._compression == "zstd":
            self._frames.finish()
        elif self._compression == "gzip" and not self._zlib.eof:
            raise ValueError("the compressed stream is truncated")


def tar_size_limit(manifest: dict[str, Any]) -> int:
    """The most tar bytes an archive of the manifest's entries takes: each file's data in whole
    blocks, generous room for its headers (pax records for long names and times), the end
    blocks and the record padding. Decompression stops there."""
    limit = 2 * RECORD
    for entry in manifest.get("files", []):
        size = entry.get("size", 0) if entry.get("type") == "file" else 0
        size = size if isinstance(size, int) and size > 0 else 0
        names = len(str(entry.get("path", "")).encode()) + len(str(entry.get("link", "")).encode())
        limit += -(-size // BLOCK) * BLOCK + 3 * BLOCK + -(-(2 * names + 256) // BLOCK) * BLOCK
    return limit


class ArchiveStream:
    """A read-only file object over the archive's tar bytes, produced by a background thread.

    Bounded: at most QUEUED_CHUNKS chunks of IO_CHUNK wait for the reader; the archive may not
    be longer than its manifest says, nor decompress to more tar than its entries can take
    (:func:`tar_size_limit`): a decompression bomb stops at its declared size.

    A backup that cannot be read at all raises :class:`BackupUnreadableError` (no key, the
    wrong key, the archive missing); a damaged one raises IntegrityError from :meth:`read`."""

    def __init__(self, path: Path, manifest: dict[str, Any], key: bytes | None,
                 cancel: threading.Event | None = None) -> None:
        self.path = path
        self._name = manifest["name"]
        settings = manifest.get("settings", {})
        if settings.get("encrypted") and key is None:
            raise BackupKeyError(f"backup {self._name!r} is encrypted and "
                                 "BACKUP_ENCRYPTION_KEY is not set")
        if key is not None and not settings.get("encrypted"):
            # The manifest says so, and anyone who can write the backup directory can write a
            # manifest: with a key set, only what the key authenticates is read.
            raise BackupKeyError(f"backup {self._name!r} is not encrypted, and with "
                                 "BACKUP_ENCRYPTION_KEY set only encrypted backups are read; "
                                 "unset the key to read a backup made before encryption was on")
        self._key = key if settings.get("encrypted") else None
        self._compression = settings.get("compression", "zstd")
        archive = manifest.get("archive", {})
        self._archive_size = archive.get("size") if isinstance(archive.get("size"), int) else 0
        self._archive_sha256 = archive.get("sha256")
        self._limit = tar_size_limit(manifest)
        self._produced = 0
        try:
            self._handle = open(path, "rb", buffering=0)
        except OSError as exc:
            raise BackupUnreadableError(f"cannot read backup {self._name!r}: archive {path}: "
                                        f"{exc.strerror}") from exc
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUED_CHUNKS)
        self._buffer = memoryview(b"")
        self._cancel = cancel or threading.Event()
        self._stop = threading.Event()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._position = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, name="backup-reader", daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _emit(self, chunk: bytes) -> None:
        self._produced += len(chunk)
        if self._produced > self._limit:
            raise IntegrityError(f"archive {self.path} decompresses to more than the {self._limit} "
                                 "bytes of tar its manifest allows (a decompression bomb, or a "
                                 "manifest that lies); stopped there")
        self._put(chunk)

    def _produce(self) -> None:
        decompress = None
        try:
            decrypt = None
            if self._key is not None:
                from .crypto import Decryptor

                decrypt = Decryptor(self._key, f"backup {self._name!r} (archive {self.path})")
            decompress = _Decompressor(self._compression, self._emit)
            with self._handle as handle:
                while not self._stop.is_set():
                    raw = self._read_raw(handle)
                    if not raw:
                        break
                    try:
                        data = decrypt.feed(raw) if decrypt is not None else raw
                    except BackupKeyError:
                        self._key_or_damage(handle)
                        raise
                    if data:
                        decompress.feed(data)
            if decrypt is not None:
                decrypt.finish()
            decompress.finish()
        except _Stopped:
            return
        except OpsError as exc:
            self._error = exc
        except OSError as exc:
            self._error = IntegrityError(f"cannot read archive {self.path}: {exc}")
        except Exception as exc:  # zstd/zlib raise their own error types on corrupt data
            self._error = IntegrityError(f"archive {self.path} is corrupt: {exc}")
        finally:
            if decompress is not None:
                decompress.close()
            try:
                self._put(_END)
            except _Stopped:
                pass

    def _read_raw(self, handle) -> bytes:
        raw = handle.read(IO_CHUNK)
        self.sha256.update(raw)
        self.size += len(raw)
        if self.size > self._archive_size:
            raise IntegrityError(f"archive {self.path} is longer than the {self._archive_size} "
                                 "bytes its manifest says; stopped there")
        return raw

    def _key_or_damage(self, handle) -> None:
        """The key check failed: the wrong key when the archive is exactly what its manifest
        says (then the error stands), damage when it is not (IntegrityError instead)."""
        while self._read_raw(handle):
            pass
        if self.sha256.hexdigest() != self._archive_sha256 or self.size != self._archive_size:
            raise IntegrityError(f"archive {self.path} does not match the sha256 and size in its "
                                 "manifest (its encryption header is damaged)")

    def read(self, n: int = -1) -> bytes:
        if self._cancel.is_set():
            raise OpsError("cancelled")
        if not 0 <= n <= MAX_READ:
            raise IntegrityError(f"archive {self.path}: a tar header of {n} bytes (more than "
                                 f"{MAX_READ}); not read")
        parts, want = [], n
        while want > 0:
            part = self._next(want)
            if part is None:
                break
            parts.append(part)
            want -= len(part)
        data = b"".join(parts)
        self._position += len(data)
        return data

    def hash_into(self, digest, n: int, advance: Callable[[int], None] | None = None) -> int:
        """Feed the next ``n`` bytes to ``digest`` without copying them; the count fed."""
        fed = 0
        while fed < n:
            if self._cancel.is_set():
                raise OpsError("cancelled")
            part = self._next(min(n - fed, IO_CHUNK))
            if part is None:
                break
            digest.update(part)
            fed += len(part)
            self._position += len(part)
            if advance is not None:
                advance(len(part))
        return fed

    def _next(self, want: int) -> memoryview | None:
        """Up to ``want`` bytes of the current chunk (the next one once it is used up), or
        None at the end."""
        if not self._buffer:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # stay at the end for later reads
                if self._error is not None:
                    raise self._error
                return None
            self._buffer = memoryview(item)
        part = self._buffer[:want]
        self._buffer = self._buffer[len(part):]
        return part

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
            part = self._next(min(IO_CHUNK, position - self._position))
            if part is None:
                break
            self._position += len(part)
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def finish(self) -> tuple[str, int]:
        """Read to the end (the tar trailer and padding) and return the raw sha256 and size."""
        self.seek(1 << 62)
        self._thread.join()
        return self.sha256.hexdigest(), self.size

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._handle.close()


def open_tar(stream: ArchiveStream) -> tarfile.TarFile:
    return tarfile.open(fileobj=stream, mode="r:")
