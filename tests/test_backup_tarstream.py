"""The archive stream: headers as tarfile writes them, files spanning many segments (one zstd
frame each), files that change while read, errors from any thread, and a reader that takes
the frames back."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import subprocess
import sys
import tarfile

import pytest
import zstandard

from exporter.backup_manager.reader import IO_CHUNK, _Decompressor
from exporter.backup_manager.tarstream import (DIRTYPE, RECORD, REGTYPE, SYMTYPE, TarStream,
                                               tar_header)


class Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def value(self) -> bytes:
        return b"".join(self.parts)


def parse(header: bytes) -> tarfile.TarInfo:
    return tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode="r:").next()


@pytest.mark.parametrize("kind,name,link", [(REGTYPE, "data/a.log", ""), (DIRTYPE, "data/sub", ""),
                                            (SYMTYPE, "data/link", "../a.log")])
def test_header_reads_back_as_tarfile_writes_it(kind, name, link):
    size = 4242 if kind == REGTYPE else 0
    header = tar_header(name, kind, 0o640, 1000, 1001, 1_700_000_000, size, linkname=link)
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, 0o640, 1000, 1001, 1_700_000_000
    info.size, info.linkname = size, link
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert len(header) == len(expected) == 512
    # byte for byte, but for the checksum and devmajor/devminor (older Pythons write zeros)
    assert header[:148] + header[156:329] + header[345:] == \
        expected[:148] + expected[156:329] + expected[345:]
    member = parse(header)  # tarfile checks the checksum
    assert (member.name, member.type, member.mode, member.uid, member.gid, member.mtime,
            member.size, member.linkname) == (name, kind, 0o640, 1000, 1001, 1_700_000_000,
                                              info.size, link)


@pytest.mark.parametrize("name,uid,size", [("d/" + "x" * 120, 0, 1), ("d/caf\u00e9.txt", 0, 1),
                                           ("d/\udcff-not-utf8", 0, 1), ("d/big-uid", 8 ** 7, 1),
                                           ("d/huge", 0, 8 ** 11)])
def test_header_needing_pax_records_goes_through_tarfile(name, uid, size):
    header = tar_header(name, REGTYPE, 0o600, uid, 0, 1_700_000_000, size)
    assert len(header) > 512 and len(header) % 512 == 0
    member = tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode="r:",
                          errors="surrogateescape").next()
    assert (member.name, member.uid, member.size) == (name, uid, size)


def write_tree(tmp_path, sizes):
    files = []
    for n, size in enumerate(sizes):
        path = tmp_path / f"f{n}"
        path.write_bytes(os.urandom(size // 2) + b"text " * (size // 10) + os.urandom(size % 7))
        files.append(path)
    return files


def pack(files, out, compression, segment_size, advance=lambda n: None, level=None):
    stream = TarStream(out, compression, level, threads=2, segment_size=segment_size)
    digests = []
    try:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                header = tar_header(f"t/{path.name}", REGTYPE, 0o644, 0, 0, 0, size)
                digests.append(stream.add_file(header, fd, size, advance))
            finally:
                os.close(fd)
        stream.close()
    finally:
        stream.abort()
    return stream, digests


def unpack(raw: bytes, compression: str) -> bytes:
    chunks: list[bytes] = []
    decompressor = _Decompressor(compression, chunks.append)
    for i in range(0, len(raw), 3000):
        decompressor.feed(raw[i:i + 3000])
    decompressor.finish()
    assert all(len(chunk) <= IO_CHUNK for chunk in chunks)
    return b"".join(chunks)


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_files_spanning_many_segments_come_back_whole(tmp_path, compression):
    # 2 MiB + 1 byte, one byte, nothing, and small files: segments of 64 KiB cut everywhere
    files = write_tree(tmp_path, [2 * 1024 * 1024 + 1, 1, 0, 5000, 70_000, 512, 1023])
    out = Collect()
    advanced = []
    stream, digests = pack(files, out, compression, 64 * 1024, advanced.append)
    raw = out.value()
    if compression == "zstd":
        frames, rest = 0, raw
        while rest:
            rest = rest[_frame_length(rest):]
            frames += 1
        assert frames == -(-stream.offset // (64 * 1024))  # one frame per segment
    tar = unpack(raw, compression)
    assert len(tar) == stream.offset and len(tar) % RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [f"t/{p.name}" for p in files]
        for member, path, (digest, changed) in zip(members, files, digests):
            data = archive.extractfile(member).read()
            assert data == path.read_bytes() and not changed
            assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sum(advanced) == sum(p.stat().st_size for p in files)


def _frame_length(data: bytes) -> int:
    """Length of the first zstd frame in ``data`` (decompress it and look at what is left)."""
    obj = zstandard.ZstdDecompressor().decompressobj()
    obj.decompress(data)
    return len(data) - len(obj.unused_data)


def test_zstd_frames_read_as_one_stream_by_zstd_itself(tmp_path):
    files = write_tree(tmp_path, [300_000, 10, 200_000])
    out = Collect()
    pack(files, out, "zstd", 64 * 1024)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.value()),
                                                        read_across_frames=True)
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        assert [m.name for m in archive] == [f"t/{p.name}" for p in files]


def test_a_file_that_grows_or_shrinks_is_cut_or_padded_and_flagged(tmp_path):
    grows, shrinks = tmp_path / "grows", tmp_path / "shrinks"
    grows.write_bytes(b"a" * 10_000)
    shrinks.write_bytes(b"b" * 1000)
    out = Collect()
    stream = TarStream(out, "none", segment_size=4096)
    results = []
    for path, listed in ((grows, 6000), (shrinks, 3000), (grows, 10_000), (shrinks, 0)):
        fd = os.open(path, os.O_RDONLY)
        results.append(stream.add_file(tar_header(path.name, REGTYPE, 0o644, 0, 0, 0, listed),
                                       fd, listed, lambda n: None))
        os.close(fd)
    stream.close()
    held = {0: b"a" * 6000, 1: b"b" * 1000 + bytes(2000), 2: b"a" * 10_000, 3: b""}
    changed = {0: True, 1: True, 2: False, 3: True}
    with tarfile.open(fileobj=io.BytesIO(out.value()), mode="r:") as archive:
        for n, member in enumerate(archive.getmembers()):
            assert archive.extractfile(member).read() == held[n]
            assert results[n][0].hexdigest() == hashlib.sha256(held[n]).hexdigest()
            assert results[n][1] is changed[n]


def test_a_write_error_reaches_the_caller_and_nothing_hangs(tmp_path):
    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    files = write_tree(tmp_path, [200_000] * 8)
    with pytest.raises(OSError) as caught:
        pack(files, Full(), "zstd", 64 * 1024)
    assert caught.value.errno == errno.ENOSPC


def test_the_reader_refuses_garbage_after_the_frames_and_a_truncated_frame(tmp_path):
    out = Collect()
    pack(write_tree(tmp_path, [100_000]), out, "zstd", 32 * 1024)
    raw = out.value()
    with pytest.raises(zstandard.ZstdError):
        unpack(raw + b"garbage!", "zstd")
    with pytest.raises(ValueError, match="truncated"):
        unpack(raw[:-5], "zstd")
    gz = Collect()
    (tmp_path / "gz").mkdir()
    pack(write_tree(tmp_path / "gz", [10]), gz, "gzip", 32 * 1024)
    with pytest.raises(ValueError, match="after the end"):
        unpack(gz.value() * 2, "gzip")


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_a_backup_of_files_spanning_many_segments_verifies(tmp_path, compression):
    """End to end through the archive file's own writer thread: the segments it is handed are
    reused by the stream as soon as it returns, so it must not keep a view of them."""
    from exporter.backup_manager.verify import check_archive
    from exporter.backup_manager.writer import write_backup

    source = tmp_path / "source"
    source.mkdir()
    for number in range(12):
        (source / f"file{number}.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    backups = tmp_path / "backups"
    backups.mkdir()
    manifest = write_backup(backup_dir=backups, name="b1", source_paths=[source], description="",
                            tier="daily", compression=compression, key=None)
    archive = backups / manifest["archive"]["name"]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == manifest["archive"]["sha256"]
    report = check_archive(backups, manifest, None)
    assert report["ok"], report


RESIDENT_AFTER_STREAMS = """
import os, sys, threading
from exporter.backup_manager.tarstream import REGTYPE, TarStream, tar_header

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def backup():
    with open(os.devnull, "wb") as out:
        stream = TarStream(out, "zstd", None, 2)
        fd = os.open(sys.argv[1], os.O_RDONLY)
        size = os.fstat(fd).st_size
        stream.add_file(tar_header("data/media.bin", REGTYPE, 0o600, 0, 0, 0, size), fd, size)
        os.close(fd)
        stream.close()

def in_threads(count):
    threads = [threading.Thread(target=backup) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

in_threads(1)
before = rss()
for n in range(30):
    in_threads(2 if n % 3 == 0 else 1)
print(rss() - before)
"""


def test_streams_leave_no_segment_memory_behind(tmp_path):
    """Found by the rehearsal (the bot's RSS +16 % over an hour): the segments were bytearrays,
    zero-filled in the calling thread's malloc arena, and stayed resident there after the
    backup; each new thread that ran a backup (a pool's second thread, two jobs at once) kept
    another set. Measured on this script: +80 MB with bytearrays, +13 MB with anonymous maps,
    +6 MB with the compressors kept between backups (the rest: compressed segments freed in
    the compressing threads' arenas)."""
    media = tmp_path / "media.bin"
    media.write_bytes(os.urandom(300_000))
    result = subprocess.run([sys.executable, "-c", RESIDENT_AFTER_STREAMS, str(media)],
                            capture_output=True, text=True, timeout=120, check=True)
    grown = int(result.stdout)
    assert grown < 24e6, f"RSS grew {grown / 1e6:.1f} MB over 40 small backups"


def test_compressors_are_kept_between_backups_as_many_as_ran_at_once(tmp_path):
    """Each new compressor's work space, freed after its backup, raised glibc's mmap threshold
    and left megabytes in every compressing thread's arena: now they are reused."""
    from exporter.backup_manager import tarstream

    files = write_tree(tmp_path, [300_000] * 3)
    tarstream._IDLE_COMPRESSORS.pop(7, None)
    for _ in range(4):
        pack(files, Collect(), "zstd", 64 * 1024, level=7)
    idle = tarstream._IDLE_COMPRESSORS[7]
    kept = [idle.get_nowait() for _ in range(idle.qsize())]
    assert len(kept) == 2 and len({id(c) for c in kept}) == 2
