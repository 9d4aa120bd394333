"""Every archive format ever written is still listed, verified and restored: golden backups
made by the code of each format version (``tests/golden/backups/<case>/``), read by today's.

The cases and the commits that wrote them:

* ``f1-zstd``, ``f1-zstd-enc``: format 1 (1d8be50): one zstd stream; encrypted in 1 MiB
  AES-GCM frames, manifest in the clear;
* ``f2-zstd``, ``f2-gzip``: format 2 (7e94fe5): one zstd frame per 2 MiB of tar;
* ``f3-zstd-enc``, ``f3-gzip-enc``: format 3 (7e94fe5): 1 MiB AES-GCM frames, sealed manifest;
* ``f4-zstd-enc``, ``f4-gzip-enc``: format 4: one AES-GCM frame per compressed segment, sealed by
  the compressing threads (the golden files of this format are made by today's code).

To add a case, run this module with the writing code first on the path::

    PYTHONPATH=<that exporter's parent> python tests/test_backup_formats.py <case> zstd|gzip [enc]

(uncompressed archives are the same tar, and too large to keep here).
"""
from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "backups"
KEY = "ab" * 32
CASES = ["f1-zstd", "f1-zstd-enc", "f2-zstd", "f2-gzip", "f3-zstd-enc", "f3-gzip-enc",
         "f4-zstd-enc", "f4-gzip-enc"]
FORMAT = {"f1": 1, "f2": 2, "f3": 3, "f4": 4}


def golden_tree(root: Path) -> dict[str, bytes | str]:
    """Write the tree every golden backup holds under ``root``; return its expected content
    (file bytes, or a symlink's target). ``big.log`` spans two 2 MiB segments and several
    1 MiB encryption frames' worth of tar, yet compresses to a few kilobytes."""
    rng = random.Random(19)
    line = b"download completed chat 42 file report.pdf size 1048576 status ok\n"
    content: dict[str, bytes | str] = {
        "notes.txt": b"".join(line.replace(b"42", str(n).encode()) for n in range(150)),
        "big.log": line * (3 * (1 << 20) // len(line)),
        "empty": b"",
        "sub/data.bin": rng.randbytes(4096),
        "sub/link": "data.bin",
    }
    for rel, value in content.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, str):
            os.symlink(value, path)
        else:
            path.write_bytes(value)
    return content


def _manager(backup_dir: Path, encrypted: bool, compression: str = "zstd"):
    from exporter.backup_manager import BackupManager
    from exporter.config import load_settings
    from exporter.metrics import Metrics

    flags = {"BACKUP_DIR": str(backup_dir), "BACKUP_COMPRESSION": compression}
    if encrypted:
        flags["BACKUP_ENCRYPTION_KEY"] = KEY
    manager = BackupManager(load_settings(flags, environ={}), Metrics())
    manager.enable(schedule=False)
    return manager


def _installed(case: str, tmp_path: Path):
    """The golden backup copied into a fresh backup directory, and a manager to read it."""
    backup_dir = tmp_path / "backups"
    shutil.copytree(GOLDEN / case, backup_dir)
    return _manager(backup_dir, case.endswith("-enc")), case


@pytest.mark.parametrize("case", CASES)
def test_golden_backup_lists_verifies_and_restores(case, tmp_path):
    manager, name = _installed(case, tmp_path)
    [listed] = manager.list_backups()
    assert listed["name"] == name
    assert manager._manifest(name)["format_version"] == FORMAT[case[:2]]
    report = manager.verify_backup_report(name)
    assert report["ok"], report["errors"]
    expected = golden_tree(tmp_path / "expected")
    target = tmp_path / "restored"
    manager.restore_backup_sync(name, target)
    [root] = list(target.iterdir())
    for rel, value in expected.items():
        if isinstance(value, str):
            assert os.readlink(root / rel) == value
        else:
            assert (root / rel).read_bytes() == value, rel
    found = {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}
    assert found == set(expected)


@pytest.mark.parametrize("case", CASES)
def test_golden_backup_with_a_flipped_byte_fails_verify(case, tmp_path):
    manager, name = _installed(case, tmp_path)
    [archive] = [p for p in manager.backup_dir.glob(f"{name}.tar*")]
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40
    archive.write_bytes(bytes(data))
    report = manager.verify_backup_report(name)
    assert not report["ok"] and report["errors"]


def test_every_case_has_a_golden_backup():
    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) == sorted(CASES)


def make_case(case: str, compression: str, encrypted: bool) -> None:
    """Write the golden backup ``case`` with the exporter first on the path."""
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "golden"
        golden_tree(source)
        backup_dir = Path(work) / "backups"
        _manager(backup_dir, encrypted, compression).create_backup_sync([str(source)], case)
        target = GOLDEN / case
        target.mkdir(parents=True)
        for path in backup_dir.iterdir():
            if not path.name.startswith("."):
                shutil.copy(path, target / path.name)


if __name__ == "__main__":
    make_case(sys.argv[1], sys.argv[2], sys.argv[3:] == ["enc"])
