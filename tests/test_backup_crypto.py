"""Encryption frames: whatever the sizes of the writes, every frame but the last holds exactly
one chunk, the last is marked, and the stream decrypts back; a cut stream or a moved byte is
refused."""
from __future__ import annotations

import os
import struct

import pytest

from exporter.backup_manager.crypto import HEADER_SIZE, TAG, Decryptor, Encryptor
from exporter.errors import DecryptionError

KEY = bytes(range(32))
CHUNK = 64


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data) -> int:
        self.data += data
        return len(data)


def frames(raw: bytes) -> list[tuple[int, bool]]:
    """(plaintext length, final) of each frame."""
    out, position = [], HEADER_SIZE
    while position < len(raw):
        (field,) = struct.unpack(">I", raw[position:position + 4])
        length = field & 0x7FFF_FFFF
        out.append((length - TAG, bool(field & 0x8000_0000)))
        position += 4 + length
    return out


@pytest.mark.parametrize("writes", [[], [0], [1], [CHUNK], [CHUNK + 1], [CHUNK - 1, 1],
                                    [3 * CHUNK + 5], [10, CHUNK * 2, 0, 7, CHUNK], [CHUNK] * 4])
def test_frames_are_whole_chunks_and_decrypt_back(writes):
    plain = os.urandom(sum(writes))
    sink = Collect()
    encryptor = Encryptor(sink, KEY, chunk_size=CHUNK)
    position = 0
    for size in writes:
        assert encryptor.write(memoryview(plain)[position:position + size]) == size
        position += size
    encryptor.close()
    layout = frames(bytes(sink.data))
    whole, last = divmod(len(plain), CHUNK)
    if last == 0 and whole:
        whole, last = whole - 1, CHUNK
    assert layout == [(CHUNK, False)] * whole + [(last, True)]
    decryptor = Decryptor(KEY, "test")
    raw = bytes(sink.data)
    back = b"".join(decryptor.feed(raw[i:i + 50]) for i in range(0, len(raw), 50))
    decryptor.finish()
    assert back == plain


def test_a_cut_or_altered_stream_is_refused():
    sink = Collect()
    encryptor = Encryptor(sink, KEY, chunk_size=CHUNK)
    encryptor.write(os.urandom(5 * CHUNK))
    encryptor.close()
    raw = bytes(sink.data)
    cut = Decryptor(KEY, "test")
    cut.feed(raw[:HEADER_SIZE + 2 * (4 + CHUNK + TAG)])
    with pytest.raises(DecryptionError, match="truncated"):
        cut.finish()
    altered = bytearray(raw)
    altered[HEADER_SIZE + 10] ^= 1
    with pytest.raises(DecryptionError, match="frame 0"):
        Decryptor(KEY, "test").feed(bytes(altered))
