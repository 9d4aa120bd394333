"""The reader's bounds: a decompression bomb or a lying size stops at what the manifest
declares, in constant memory (measured in a subprocess); a sparse member with a huge size is
refused at its header; a genuine backup of a large zero-filled file verifies in linear time."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import zstandard

from exporter.backup_manager.catalog import manifest_path, read_catalog
from exporter.errors import IntegrityError
from tests.probes import wait_until
from tests.test_backup_manager import make_manager

MiB = 1 << 20
SEGMENT = 2 * MiB
ROOT = Path(__file__).resolve().parents[1]


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
    return info.tobuf(tarfile.PAX_FORMAT)


def _zeros(size: int) -> bytes:
    """``size`` bytes of zeros as zstd frames of 2 MiB each, as the writer makes them: a few
    hundred bytes per frame."""
    frame = zstandard.ZstdCompressor().compress(bytes(SEGMENT))
    assert size % SEGMENT == 0
    return frame * (size // SEGMENT)


def write_backup(backup_dir: Path, name: str, archive: bytes, files: list[dict]) -> dict:
    (backup_dir / f"{name}.tar.zst").write_bytes(archive)
    manifest = {"format": "opsstack-backup", "format_version": 2, "name": name,
                "created_at": time.time(), "tier": "manual", "description": "crafted",
                "settings": {"compression": "zstd", "encrypted": False},
                "sources": [{"path": "/nowhere", "arcname": "x", "type": "dir"}],
                "archive": {"name": f"{name}.tar.zst", "size": len(archive),
                            "sha256": hashlib.sha256(archive).hexdigest()},
                "file_count": len(files), "total_bytes": sum(f.get("size", 0) for f in files),
                "files": files}
    manifest_path(backup_dir, name).write_text(json.dumps(manifest))
    return manifest


def _small_file() -> tuple[bytes, dict]:
    data = b"small"
    tar = _header("x/f", len(data)) + data.ljust(512, b"\0")
    return tar, {"path": "x/f", "type": "file", "size": len(data), "mode": 0o644,
                 "mtime": 1_700_000_000, "sha256": hashlib.sha256(data).hexdigest()}


def bomb_lying_header(backup_dir: Path) -> dict:
    """A member whose header says 2 GiB (all zeros in the archive), the manifest 5 bytes."""
    _, entry = _small_file()
    compress = zstandard.ZstdCompressor().compress
    archive = compress(_header("x/f", 2 << 30)) + _zeros(2 << 30) + compress(bytes(10240))
    return write_backup(backup_dir, "lying", archive, [entry])


def bomb_after_the_end(backup_dir: Path) -> dict:
    """A complete, honest tar of one small file, then 2 GiB of zeros after its end blocks."""
    tar, entry = _small_file()
    tar += bytes(-len(tar) % 10240 or 10240)
    archive = zstandard.ZstdCompressor().compress(tar) + _zeros(2 << 30)
    return write_backup(backup_dir, "trailing", archive, [entry])


def bomb_in_a_pax_header(backup_dir: Path) -> dict:
    """A pax header of 1 GiB of zeros before the member: tarfile reads a header whole, before
    any member is seen. The manifest declares 512 MiB, so only the cap on one read stops it."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 1 << 30
    compress = zstandard.ZstdCompressor().compress
    archive = compress(info.tobuf(tarfile.USTAR_FORMAT)) + _zeros(1 << 30)
    entry = {"path": "x/f", "type": "file", "size": 512 * MiB, "sha256": "0" * 64}
    return write_backup(backup_dir, "pax", archive, [entry])


VERIFY_IN_A_SUBPROCESS = textwrap.dedent("""
    import hashlib, json, resource, sys, time
    from pathlib import Path

    def peak_rss_mib():
        # ru_maxrss keeps, across fork and exec, the peak of the pytest process this one was
        # forked from; VmHWM is this process image's own peak resident set
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from exporter.backup_manager.verify import check_archive
    backup_dir = Path(sys.argv[1])
    manifest = json.loads((backup_dir / (sys.argv[2] + ".manifest.json")).read_text())
    started = time.perf_counter()
    report = check_archive(backup_dir, manifest, None)
    seconds = time.perf_counter() - started
    digest, block, started = hashlib.sha256(), bytes(1 << 20), time.perf_counter()
    for _ in range(manifest["total_bytes"] >> 20):
        digest.update(block)
    print(json.dumps({"report": report, "seconds": seconds,
                      "hash_seconds": time.perf_counter() - started,
                      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_mib": peak_rss_mib()}))
""")


def verify_in_subprocess(backup_dir: Path, name: str) -> dict:
    done = subprocess.run([sys.executable, "-c", VERIFY_IN_A_SUBPROCESS, str(backup_dir), name],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("craft", [bomb_lying_header, bomb_after_the_end, bomb_in_a_pax_header])
def test_a_decompression_bomb_stops_at_its_declared_size_in_constant_memory(tmp_path, craft):
    manager = make_manager(tmp_path)
    manifest = craft(manager.backup_dir)
    assert manifest["archive"]["size"] < 512 * 1024  # 2 GiB of zeros in a few hundred KiB
    result = verify_in_subprocess(manager.backup_dir, manifest["name"])
    report = result["report"]
    assert report["ok"] is False and report["error_type"] == "IntegrityError"
    assert "not read" in report["errors"][0] or "stopped there" in report["errors"][0]
    assert result["rss_mib"] < 64, result
    assert result["seconds"] < 5, result  # it stops early: 2 GiB would take longer

    assert manager.verify_backup(manifest["name"]) is False
    with pytest.raises(IntegrityError):
        manager.restore_backup_sync(manifest["name"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_sparse_member_with_a_huge_size_is_refused_at_its_header(tmp_path):
    manager = make_manager(tmp_path)
    info = tarfile.TarInfo("x/sparse")
    sparse_map = b"1\n0\n0\n".ljust(512, b"\0")
    info.size, info.mode = len(sparse_map), 0o644
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": "x/sparse", "GNU.sparse.realsize": str(64 << 30)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(sparse_map))
    archive = zstandard.ZstdCompressor().compress(buffer.getvalue())
    write_backup(manager.backup_dir, "sparse", archive,
                 [{"path": "x/sparse", "type": "file", "size": 64 << 30,
                   "sha256": "0" * 64}])  # the manifest agrees with the 64 GiB: only the type is wrong
    started = time.perf_counter()
    report = manager.verify_backup_report("sparse")
    assert time.perf_counter() - started < 5
    assert report["ok"] is False and report["error_type"] == "UnsafeArchiveError"
    assert "sparse" in report["errors"][0]


@pytest.mark.slow
def test_a_genuine_backup_of_a_large_zero_filled_file_verifies_linearly(tmp_path):
    """256 MiB of zeros: verify reads it in about the time hashlib needs to hash it, in
    constant memory (it took 10-20 s and 544 MiB with the growing buffer)."""
    source = tmp_path / "data"
    source.mkdir()
    with open(source / "zeros.bin", "wb") as handle:
        handle.truncate(256 * MiB)
    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(source)], "zeros")
    assert read_catalog(manager.backup_dir)[0]["total_bytes"] == 256 * MiB
    result = verify_in_subprocess(manager.backup_dir, "zeros")
    assert result["report"]["ok"] is True, result["report"]["errors"]
    assert result["report"]["bytes_checked"] == 256 * MiB
    assert result["rss_mib"] < 64, result
    assert result["seconds"] < 3 * result["hash_seconds"] + 1, result


def test_reading_an_archive_leaves_no_decompressor_behind(tmp_path):
    """Found by the rehearsal (the bot's RSS grew ~1.5 MB a minute): the zstd stream writer
    wrote into the decompressor that owned it, a cycle through a C type that the garbage
    collector never freed, so every verify, restore and repair leaked its buffers."""
    import gc

    manager = make_manager(tmp_path)
    source = tmp_path / "data"
    source.mkdir()
    (source / "blob.bin").write_bytes(bytes(range(256)) * 4096)
    name = manager.create_backup_sync([str(source)], "leak")["backup_name"]
    for _ in range(3):
        assert manager.verify_backup(name)

    def decompressors() -> int:  # the last reader thread may still be finishing: poll
        gc.collect()
        return sum(type(o).__name__ == "_Decompressor" for o in gc.get_objects())

    wait_until(lambda: decompressors() == 0, timeout=10, what="every decompressor freed")
