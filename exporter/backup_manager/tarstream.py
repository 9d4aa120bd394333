"""The archive's byte stream: tar headers and file data packed into fixed-size segments, each
segment compressed by a pool of threads, the results written out in order.

With zstd every segment becomes one independent frame; concatenated frames are one valid
``.tar.zst`` (``zstd -d`` and ``tar --zstd`` read them as a single stream). Compressing whole
segments with N single-threaded compressors, which release the GIL, keeps both cores busy
without libzstd's multi-threaded mode, which copies all input and output once more and costs
about 15% more CPU on this workload; the ratio is the same to 0.1%. gzip and no compression
are one ordered stream handled by a single worker.

The caller's thread reads every file straight into the current segment (``readv``, no
intermediate bytes) and hashes it there, while the bytes are in that CPU's cache; compressing
(and sealing, when encrypted: one AES-GCM frame per compressed segment, see
:class:`.crypto.FrameSealer`) and writing run in other threads beside it, and hashlib, zstd,
AES-GCM and the system calls release the GIL.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import queue
import struct
import threading
from collections.abc import Callable
from typing import Any

SEGMENT_SIZE = 2 << 20  # measured: 8% faster than 4 MiB, 20% faster than 8 MiB; same ratio
BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the end of the archive to a whole record, as tarfile and GNU tar do
REGTYPE, SYMTYPE, DIRTYPE = b"0", b"2", b"5"

# ustar header: name, then mode uid gid size mtime (one octal run), chksum, type, linkname,
# magic+version; uname gname devmajor devminor prefix and padding stay NUL
_USTAR = struct.Struct("100s48s8sc100s8s247x")
_MAGIC = b"ustar\x0000"  # POSIX; tarfile writes this in PAX_FORMAT
_CHECKSUM_BASE = 8 * ord(" ") + sum(_MAGIC)  # the checksum counts its own field as spaces
_OCTAL7, _OCTAL11 = 8 ** 7, 8 ** 11
_ZEROS = memoryview(bytes(BLOCK))


def tar_header(arcname: str, kind: bytes, mode: int, uid: int, gid: int, mtime: int,
               size: int = 0, linkname: str = "") -> bytes:
    """One header as ``tarfile`` writes it in PAX format, built directly (a tenth of the cost
    of ``TarInfo.tobuf``). An entry that needs pax records (a name or link target over 100
    bytes or not ASCII, numbers too large for the octal fields) goes through ``tarfile``."""
    name = arcname + "/" if kind == DIRTYPE else arcname
    try:
        name_bytes = name.encode("ascii")
        link_bytes = linkname.encode("ascii")
    except UnicodeEncodeError:
        return _pax_header(arcname, kind, mode, uid, gid, mtime, size, linkname)
    if len(name_bytes) > 100 or len(link_bytes) > 100 or not (
            0 <= uid < _OCTAL7 and 0 <= gid < _OCTAL7 and 0 <= size < _OCTAL11
            and 0 <= mtime < _OCTAL11):
        return _pax_header(arcname, kind, mode, uid, gid, mtime, size, linkname)
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode & 0o7777, uid, gid, size, mtime)
    checksum = _CHECKSUM_BASE + sum(name_bytes) + sum(numbers) + kind[0] + sum(link_bytes)
    return _USTAR.pack(name_bytes, numbers, b"%06o\0 " % checksum, kind, link_bytes, _MAGIC)


def _pax_header(arcname: str, kind: bytes, mode: int, uid: int, gid: int, mtime: int, size: int,
                linkname: str) -> bytes:
    import tarfile

    info = tarfile.TarInfo(arcname)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.mtime, info.size, info.linkname = mtime, size, linkname
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


# Compressors kept between backups, by level: at most as many as ever ran at once (a backup's
# workers). A new one per worker per backup freed its ~1 MB of work space at the end, which
# raises glibc's mmap threshold; after that every compressing thread's malloc arena kept a few
# MB resident (measured on the script in tests/test_backup_tarstream.py: +13 MB -> +6 MB).
_IDLE_COMPRESSORS: dict[int, queue.SimpleQueue] = {}


def _idle_compressors(level: int) -> queue.SimpleQueue:
    return _IDLE_COMPRESSORS.setdefault(level, queue.SimpleQueue())


def _take_compressor(zstandard, level: int):
    try:
        return _idle_compressors(level).get_nowait()
    except queue.Empty:
        # No XXH64 frame checksum: it cost 15% of the compression time here, and the
        # manifest's SHA-256 of every file and of the archive already covers every byte.
        return zstandard.ZstdCompressor(level=level, write_checksum=False)


Seal = Callable[[int, Any, bool], tuple[bytes, Any]]  # frame number, plaintext, final


def _codec(compression: str, level: int | None) -> Callable[[], tuple[Callable, Callable, Callable]]:
    """A factory of ``(compress, finish, release)``, one per worker thread: ``finish`` ends the
    stream (its tail bytes), ``release`` gives back what the thread held when it ends."""
    if compression == "zstd":
        import zstandard

        chosen = 3 if level is None else level

        def zstd_frames():
            compressor = _take_compressor(zstandard, chosen)

            def release() -> None:
                _idle_compressors(chosen).put(compressor)
            return compressor.compress, _no_tail, release
        return zstd_frames
    if compression == "gzip":
        import zlib

        def gzip_stream():
            stream = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
            return stream.compress, stream.flush, _nothing
        return gzip_stream
    return lambda: ((lambda view: view), _no_tail, _nothing)


def _no_tail() -> bytes:  # zstd frames and no compression end with nothing more
    return b""


def _nothing() -> None:
    return None


class TarStream:
    """A tar archive written and hashed by the caller's thread, compressed and written by others.

    ``add_header`` and ``add_file`` fill the current segment; a full one goes to a worker,
    which compresses it and, in its turn, hands it to ``out.write`` (segments are written in
    order). So the caller's thread reads files (straight into the segment, no intermediate
    bytes), hashes them as they are read and builds headers: on bytes still in this CPU's cache,
    and without a hashing thread of its own that every segment would pass through (measured: no
    more CPU, a hand-off per segment less, medians 4-15% faster on two busy cores). At most ``workers + 4`` segments exist, so memory stays bounded
    when the disk is slow. An error in any thread is raised in the caller's thread at its next
    call; :meth:`abort` stops everything without writing more.

    ``seal`` (a factory called once per worker thread) encrypts: each worker seals the segment
    it compressed as frame number ``sequence``, the last one final."""

    def __init__(self, out, compression: str, level: int | None = None, threads: int = 1,
                 segment_size: int = SEGMENT_SIZE, seal: Callable[[], Seal] | None = None) -> None:
        self._out = out
        self._segment_size = segment_size
        self._error: BaseException | None = None
        self._aborted = False
        self._stopped = False
        workers = max(1, threads) if compression == "zstd" else 1  # gzip is one ordered stream
        # Segments are anonymous maps, not bytearrays: their pages are resident only once
        # written, and go back to the system when the stream ends. As malloc'd 2 MiB blocks,
        # zero-filled up front in the calling thread's arena, they stayed resident after the
        # backup, one set per thread that ever ran one (measured: 40 small backups from new
        # threads, now and then two at once: RSS +80 MB with bytearrays, +13 MB with maps).
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(workers + 4):
            self._free.put(mmap.mmap(-1, segment_size))
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._turn = threading.Condition()  # guards _written: the segments written so far
        self._written = 0
        codec = _codec(compression, level)
        self._workers = [threading.Thread(target=self._compress, args=(codec, seal), daemon=True,
                                          name=f"backup-compress-{n}") for n in range(workers)]
        for thread in self._workers:
            thread.start()
        self._sequence = 0
        self._take_segment()
        self.offset = 0  # tar bytes so far

    # ------------------------------------------------------------------ caller's thread
    def add_header(self, header: bytes) -> None:
        self._put(header)

    def add_file(self, header: bytes, fd: int, size: int,
                 advance: Callable[[int], None] | None = None) -> tuple[Any, bool]:
        """The header, then the file's ``size`` bytes read from ``fd`` straight into the
        segment, then the block padding. Returns the file's SHA-256 object and whether the
        file changed while it was read.

        The file is hashed here as it is read, a segment's worth at most at a time. A file
        that shrank since it was listed is padded with zeros, one that grew is cut at
        ``size``; either way the hash covers exactly what the archive holds. Each read asks
        for one byte more than is left: a short read is the end of the file, so a small file
        costs one ``read`` call, not two."""
        self._put(header)
        digest = hashlib.sha256()
        left, changed, at_end = size, False, False
        while left:
            if self._position == self._segment_size:
                self._send_segment()
            start = self._position
            want = min(left + 1, self._segment_size - start)
            view = self._view[start:start + want]
            n = os.readv(fd, (view,))
            if n > left:
                n, changed, at_end = left, True, True  # grew: the extra byte is overwritten
            elif n < want:
                at_end = True
                if not n:  # shrank: zeros stand in for the missing bytes
                    n = min(left, want)
                    view[:n] = bytes(n)
                    changed = True
            digest.update(view[:n])
            self._position = start + n
            left -= n
            if advance is not None:
                advance(n)
        if not at_end and os.read(fd, 1):
            changed = True
        self.offset += size
        padding = -size % BLOCK
        if padding:
            self._put(_ZEROS[:padding])
        return digest, changed

    def close(self) -> None:
        """Write the end-of-archive blocks, wait for every segment to be written, raise what
        any thread met."""
        self._put(bytes(2 * BLOCK))
        self._put(bytes(-self.offset % RECORD))
        self._send_segment(last=True)
        self._stop()
        self._check()

    def abort(self) -> None:
        """Stop the threads, discarding what is not written yet (safe after close)."""
        self._aborted = True
        self._stop()

    def _put(self, data) -> None:
        size = len(data)
        self.offset += size
        position = self._position
        if position + size <= self._segment_size:  # nearly always
            self._view[position:position + size] = data
            self._position = position + size
            return
        view = memoryview(data)
        while view:
            if self._position == self._segment_size:
                self._send_segment()
            n = min(len(view), self._segment_size - self._position)
            self._view[self._position:self._position + n] = view[:n]
            self._position += n
            view = view[n:]

    def _take_segment(self) -> None:
        self._segment = self._free.get()
        self._view = memoryview(self._segment)
        self._position = 0

    def _send_segment(self, last: bool = False) -> None:
        self._check()
        self._todo.put((self._sequence, self._segment, self._position, last))  # in order (gzip needs it)
        self._sequence += 1
        if not last:
            self._take_segment()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for _ in self._workers:
            self._todo.put(None)
        for thread in self._workers:
            thread.join()
        # unmapped now, not whenever this object goes (the last reference to a map unmaps it)
        self._segment = self._view = None
        while not self._free.empty():
            self._free.get_nowait()

    # ------------------------------------------------------------------ worker threads
    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc

    def _compress(self, codec, seal_factory: Callable[[], Seal] | None) -> None:
        """Compress (then seal) each segment, then write it in its turn: the last one's
        compressed stream is finished here too (gzip's tail), so the final frame holds it."""
        compress, finish, release = codec()
        try:
            self._compress_jobs(compress, finish, seal_factory() if seal_factory is not None else None)
        finally:
            release()

    def _compress_jobs(self, compress, finish, seal: Seal | None) -> None:
        while (job := self._todo.get()) is not None:
            sequence, segment, length, last = job
            parts: tuple = ()
            if self._error is None and not self._aborted:
                try:
                    data = compress(memoryview(segment)[:length])
                    tail = finish() if last else b""
                    if tail:
                        data = bytes(data) + tail
                    parts = seal(sequence, data, last) if seal is not None else (data,)
                    del data
                except BaseException as exc:  # re-raised in the caller's thread
                    self._fail(exc)
            self._write_in_turn(sequence, segment, parts)
            del parts

    def _write_in_turn(self, sequence: int, segment: mmap.mmap, parts: tuple) -> None:
        """Hand ``parts`` to ``out.write`` once every earlier segment is written. The worker
        that compressed a segment writes it, while its bytes are still in that CPU's cache,
        and no writer thread waits for the GIL on every segment. The workers take the
        segments in order, so each turn comes."""
        with self._turn:
            while self._written != sequence:
                self._turn.wait()
        self._emit(parts)
        self._free.put(segment)
        with self._turn:
            self._written += 1
            self._turn.notify_all()

    def _emit(self, parts: tuple) -> None:
        for part in parts:
            if len(part) and self._error is None and not self._aborted:
                try:
                    self._out.write(part)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._fail(exc)
