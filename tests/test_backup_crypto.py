"""Encryption frames (format 4): one frame per sealed piece, numbered by the caller, whatever
its size, the last marked, sealed from any thread; the stream decrypts back fed in any pieces;
a cut stream, a changed byte or two frames swapped are refused. An encrypted backup has one
frame per 2 MiB segment. (Formats 1 to 3, 1 MiB frames, are read in test_backup_formats.)"""
from __future__ import annotations

import os
import struct
import threading

import pytest

from exporter.backup_manager.crypto import HEADER_SIZE, TAG, Decryptor, FrameSealer
from exporter.backup_manager.tarstream import SEGMENT_SIZE
from exporter.errors import DecryptionError
from tests.test_backup_manager import make_manager

KEY = bytes(range(32))


def frames(raw: bytes) -> list[tuple[int, bool]]:
    """(plaintext length, final) of each frame."""
    out, position = [], HEADER_SIZE
    while position < len(raw):
        (field,) = struct.unpack(">I", raw[position:position + 4])
        length = field & 0x7FFF_FFFF
        out.append((length - TAG, bool(field & 0x8000_0000)))
        position += 4 + length
    assert position == len(raw)
    return out


def sealed(pieces: list[bytes]) -> bytes:
    """The pieces sealed as frames 0, 1, ... by two threads (odd and even), joined in order."""
    sealer = FrameSealer(KEY)
    out: list[tuple[bytes, bytes] | None] = [None] * len(pieces)

    def work(parity: int) -> None:
        seal = sealer.for_thread()
        for number in range(parity, len(pieces), 2):
            field, data = seal(number, memoryview(pieces[number]), number == len(pieces) - 1)
            out[number] = field, bytes(data)  # a view of the thread's buffer, reused next time
    threads = [threading.Thread(target=work, args=(p,)) for p in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sealer.header + b"".join(field + data for field, data in out)


def decrypt(raw: bytes, step: int) -> bytes:
    decryptor = Decryptor(KEY, "test")
    back = b"".join(decryptor.feed(raw[i:i + step]) for i in range(0, len(raw), step))
    decryptor.finish()
    return back


@pytest.mark.parametrize("sizes", [[0], [1], [5, 0, 7], [1 << 20, 3, (2 << 20) + 77], [64] * 9])
def test_frames_hold_each_piece_and_decrypt_back(sizes):
    pieces = [os.urandom(size) for size in sizes]
    raw = sealed(pieces)
    assert frames(raw) == [(size, n == len(sizes) - 1) for n, size in enumerate(sizes)]
    for step in (50, 1 << 20):
        assert decrypt(raw, step) == b"".join(pieces)


def test_a_cut_altered_or_reordered_stream_is_refused():
    pieces = [os.urandom(64) for _ in range(5)]
    raw = sealed(pieces)
    frame = 4 + 64 + TAG
    cut = Decryptor(KEY, "test")
    cut.feed(raw[:HEADER_SIZE + 2 * frame])
    with pytest.raises(DecryptionError, match="truncated"):
        cut.finish()
    altered = bytearray(raw)
    altered[HEADER_SIZE + 10] ^= 1
    with pytest.raises(DecryptionError, match="frame 0"):
        Decryptor(KEY, "test").feed(bytes(altered))
    body = raw[HEADER_SIZE:]
    swapped = raw[:HEADER_SIZE] + body[frame:2 * frame] + body[:frame] + body[2 * frame:]
    with pytest.raises(DecryptionError, match="frame 0"):
        Decryptor(KEY, "test").feed(swapped)


def test_an_encrypted_backup_has_one_frame_per_segment(tmp_path):
    source = tmp_path / "data"
    source.mkdir()
    (source / "random.bin").write_bytes(os.urandom(5 * SEGMENT_SIZE // 2))
    manager = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY=KEY.hex())
    result = manager.create_backup_sync([str(source)], "b")
    raw = open(result["archive"], "rb").read()
    layout = frames(raw)
    assert len(layout) == 3  # 2.5 segments of incompressible bytes, and the tar's end
    assert [final for _, final in layout] == [False, False, True]
    assert all(SEGMENT_SIZE <= size < SEGMENT_SIZE + 1024 for size, _ in layout[:2])
    assert manager.verify_backup("b")


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_encrypted_backups_of_every_compression_restore_byte_for_byte(tmp_path, compression):
    source = tmp_path / "data"
    (source / "sub").mkdir(parents=True)
    files = {"big.bin": os.urandom(5 * SEGMENT_SIZE // 2 + 3), "sub/small.txt": b"x" * 700,
             "empty": b""}
    for rel, data in files.items():
        (source / rel).write_bytes(data)
    manager = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY=KEY.hex(), BACKUP_COMPRESSION=compression)
    manager.create_backup_sync([str(source)], "b")
    assert manager.verify_backup("b")
    manager.restore_backup_sync("b", tmp_path / "out")
    for rel, data in files.items():
        assert (tmp_path / "out" / "data" / rel).read_bytes() == data
