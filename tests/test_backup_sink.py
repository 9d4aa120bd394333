import errno
import fcntl
import hashlib
import os
import threading

import pytest

from exporter.backup_manager import sink
from exporter.backup_manager.sink import ALIGN, STAGE, BackupCancelled, BufferedSink, DirectSink, open_sink


def open_new(path):
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def direct_sink(path, cancel=None):
    fd = open_new(path)
    made = open_sink(fd, cancel)
    if not isinstance(made, DirectSink):
        made.close()
        os.close(fd)
        pytest.skip("this file system has no O_DIRECT")
    return fd, made


def pieces(total, sizes=(1, 4095, 70_000, 1 << 20, 3 * STAGE + 17)):
    out, n = [], 0
    while n < total:
        data = os.urandom(min(sizes[len(out) % len(sizes)], total - n))
        out.append(data)
        n += len(data)
    return out


@pytest.mark.parametrize("total", [0, 1, ALIGN, ALIGN + 1, STAGE, STAGE + 1, 5 * STAGE + 4097])
def test_direct_sink_writes_every_byte_and_hashes_them(tmp_path, total):
    fd, out = direct_sink(tmp_path / "a")
    data = pieces(total)
    for piece in data:
        out.write(memoryview(piece) if len(piece) % 2 else piece)
    out.close()
    os.close(fd)
    whole = b"".join(data)
    assert (tmp_path / "a").read_bytes() == whole
    assert out.size == total and out.sha256.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600


def test_without_o_direct_the_sink_writes_through_the_page_cache(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    fd = open_new(tmp_path / "a")
    out = open_sink(fd, None)
    assert isinstance(out, BufferedSink)
    out.write(b"x" * 5000)
    out.close()
    os.close(fd)
    assert (tmp_path / "a").read_bytes() == b"x" * 5000


def test_a_short_unaligned_write_goes_on_through_the_page_cache(tmp_path, monkeypatch):
    fd, out = direct_sink(tmp_path / "a")
    real_write, calls = os.write, []

    def short_once(target, view):
        calls.append(len(view))
        if len(calls) > 1:
            return real_write(target, view)
        flags = fcntl.fcntl(target, fcntl.F_GETFL)  # as the kernel would, 1000 bytes of it
        fcntl.fcntl(target, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        try:
            return real_write(target, view[:1000])
        finally:
            fcntl.fcntl(target, fcntl.F_SETFL, flags)

    monkeypatch.setattr(sink.os, "write", short_once)
    data = os.urandom(2 * STAGE + 100)
    out.write(data)
    out.close()
    os.close(fd)
    assert (tmp_path / "a").read_bytes() == data
    assert calls[:2] == [STAGE, STAGE - 1000]


def test_a_device_refusing_the_alignment_gets_buffered_writes(tmp_path, monkeypatch):
    fd, out = direct_sink(tmp_path / "a")
    real_write, refused = os.write, []

    def strict(target, view):
        if fcntl.fcntl(target, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(view))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(target, view)

    monkeypatch.setattr(sink.os, "write", strict)
    data = os.urandom(3 * STAGE + 5)
    out.write(data)
    out.close()
    os.close(fd)
    assert (tmp_path / "a").read_bytes() == data and refused == [STAGE]


def test_a_write_error_of_the_thread_reaches_the_caller(tmp_path):
    (tmp_path / "a").write_bytes(b"")
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    out = DirectSink(fd, None, fcntl.fcntl(fd, fcntl.F_GETFL))
    try:
        with pytest.raises(OSError):
            for _ in range(sink.STAGES + 3):  # more than there are stages: the thread must have failed
                out.write(bytes(STAGE))
            out.close()
    finally:
        out.stop()
        os.close(fd)



def test_a_cancelled_backup_stops_at_the_next_write(tmp_path):
    cancel = threading.Event()
    fd, out = direct_sink(tmp_path / "a", cancel)
    out.write(b"x")
    cancel.set()
    with pytest.raises(BackupCancelled):
        out.write(b"y")
    out.stop()
    os.close(fd)
