"""Restore refuses crafted archives (``..``, absolute paths, links out of the target, device
files), never overwrites a non-empty target by accident, and ``dry_run`` writes nothing."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from exporter.backup_manager.catalog import manifest_path
from exporter.backup_manager.safety import extraction_filter, unsafe_reason
from exporter.errors import BackupError, UnsafeArchiveError
from tests.test_backup_manager import make_manager, make_tree


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    info.mtime = time.time()
    return info, data


def craft_backup(backup_dir: Path, name: str, members) -> None:
    """A backup whose archive and manifest agree, so only the restore's safety checks refuse it."""
    buffer = io.BytesIO()
    files = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
            kind = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}.get(
                info.type, "other")
            entry = {"path": info.name, "type": kind, "mode": info.mode, "mtime": info.mtime}
            if info.isreg():
                entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            if info.issym() or info.islnk():
                entry["link"] = info.linkname
            files.append(entry)
    archive = zstandard.ZstdCompressor().compress(buffer.getvalue())
    (backup_dir / f"{name}.tar.zst").write_bytes(archive)
    manifest = {"format": "opsstack-backup", "format_version": 1, "name": name,
                "created_at": time.time(), "tier": "manual", "description": "crafted",
                "settings": {"compression": "zstd", "encrypted": False},
                "sources": [{"path": "/nowhere", "arcname": "x", "type": "dir"}],
                "archive": {"name": f"{name}.tar.zst", "size": len(archive),
                            "sha256": hashlib.sha256(archive).hexdigest()},
                "file_count": len(files), "total_bytes": 0, "files": files}
    manifest_path(backup_dir, name).write_text(json.dumps(manifest))


CRAFTED = {
    "dotdot": [_member("x/ok.txt", data=b"fine"), _member("x/../../evil.txt", data=b"evil")],
    "absolute": [_member("/tmp/opsstack-evil-absolute.txt", data=b"evil")],
    "symlink_out": [_member("x", tarfile.DIRTYPE), _member("x/link", tarfile.SYMTYPE, link="../../..")],
    "symlink_abs": [_member("x/link", tarfile.SYMTYPE, link="/etc")],
    "symlink_then_write": [_member("x/link", tarfile.SYMTYPE, link="../../outside"),
                           _member("x/link/evil.txt", data=b"evil")],
    "hardlink_out": [_member("x/hard", tarfile.LNKTYPE, link="../../etc/passwd")],
    "device": [_member("x/dev", tarfile.CHRTYPE)],
    "fifo": [_member("x/pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archive_is_refused(tmp_path, case):
    manager = make_manager(tmp_path)
    craft_backup(manager.backup_dir, case, CRAFTED[case])
    before = sorted(p.name for p in tmp_path.iterdir())
    target = tmp_path / "restore" / "here"
    with pytest.raises(UnsafeArchiveError):
        manager.restore_backup_sync(case, target)
    assert not (tmp_path / "restore").exists() or list((tmp_path / "restore").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "restore") == before
    assert not Path("/tmp/opsstack-evil-absolute.txt").exists()
    assert manager.verify_backup(case) is False


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_extraction_filter_refuses_on_its_own(tmp_path, case):
    """Defense in depth: the filter used while extracting refuses even without the manifest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in CRAFTED[case]:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    dest = tmp_path / "dest"
    dest.mkdir()
    with tarfile.open(fileobj=buffer) as tar, pytest.raises(UnsafeArchiveError):
        tar.extractall(dest, filter=extraction_filter())
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside").exists()


def test_safe_members_pass():
    for info, _ in [_member("a/b.txt"), _member("a/link", tarfile.SYMTYPE, link="b.txt"),
                    _member("a/sub/up", tarfile.SYMTYPE, link="../b.txt"), _member("a", tarfile.DIRTYPE)]:
        assert unsafe_reason(info) is None


def test_non_empty_target_needs_overwrite_and_dry_run_writes_nothing(tmp_path):
    manager = make_manager(tmp_path)
    source = make_tree(tmp_path / "data")
    manager.create_backup_sync([str(source)], "b")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep-me.txt").write_text("user data")
    with pytest.raises(BackupError, match="not empty"):
        manager.restore_backup_sync("b", target)
    assert sorted(os.listdir(target)) == ["keep-me.txt"]

    plan = manager.restore_backup_sync("b", target, dry_run=True)
    actions = {c["path"]: c["action"] for c in plan["changes"]}
    assert actions["keep-me.txt"] == "keep"
    assert actions["data/config/token.txt"] == "create"
    assert manager.restore_backup_sync("b", target, dry_run=True, delete=True)["counts"]["remove"] == 1
    assert sorted(os.listdir(target)) == ["keep-me.txt"]

    manager.restore_backup_sync("b", target, overwrite=True)
    assert sorted(os.listdir(target)) == ["data", "keep-me.txt"]
    assert (target / "data" / "config" / "token.txt").read_text() == "secret-token"
    manager.restore_backup_sync("b", target, overwrite=True, delete=True)
    assert sorted(os.listdir(target)) == ["data"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p for p in target.iterdir() if p.name.startswith(".")] == []
    again = manager.restore_backup_sync("b", target, dry_run=True)
    assert set(again["counts"]) == {"unchanged"}
