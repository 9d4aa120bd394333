"""Restore refuses crafted archives (``..``, absolute paths, links out of the target, device
files), never overwrites a non-empty target by accident, and ``dry_run`` writes nothing."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from exporter.backup_manager import archives
from exporter.backup_manager.catalog import manifest_path, read_catalog, read_verify_state
from exporter.backup_manager.reader import ArchiveStream, open_tar
from exporter.backup_manager.verify import check_archive
from exporter.metrics import Metrics
from exporter.recovery_manager import RecoveryManager
from exporter.recovery_manager.baseline import from_manifest
from exporter.recovery_manager.repair import restore_members
from exporter.backup_manager.safety import ExtractionGuard, extraction_filter, unsafe_reason
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


def craft_backup(backup_dir: Path, name: str, members, source: str = "/nowhere") -> dict:
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
                "sources": [{"path": str(source), "arcname": "x", "type": "dir"}],
                "archive": {"name": f"{name}.tar.zst", "size": len(archive),
                            "sha256": hashlib.sha256(archive).hexdigest()},
                "file_count": len(files), "files": files,
                "total_bytes": sum(entry.get("size", 0) for entry in files)}
    manifest_path(backup_dir, name).write_text(json.dumps(manifest))
    return manifest


def _cve_2025_4517_shape():
    """Nested directories with long names, a one-letter symlink to each, then a link through
    the one-letter chain whose target climbs back up: the real path exceeds PATH_MAX, so
    os.path.realpath (and tarfile's data filter on 3.11.7) stops resolving and lets it out."""
    long_name, steps, members, path = "d" * 247, "abcdefghijklmnop", [], "x"
    for step in steps:
        members += [_member(f"{path}/{long_name}", tarfile.DIRTYPE),
                    _member(f"{path}/{step}", tarfile.SYMTYPE, link=long_name)]
        path = f"{path}/{long_name}"
    chain = "x/" + "/".join(steps) + "/" + "l" * 254
    members += [_member(chain, tarfile.SYMTYPE, link="../" * len(steps)),
                _member("x/escape", tarfile.SYMTYPE, link=chain + "/../../.."),
                _member("x/escape/evil.txt", data=b"evil")]
    return members


CRAFTED = {
    "cve_2025_4517": _cve_2025_4517_shape(),
    "dir_links_up": [_member("x", tarfile.DIRTYPE), _member("x/p", tarfile.SYMTYPE, link=".."),
                     _member("x/p/q", tarfile.SYMTYPE, link=".."),
                     _member("x/p/q/outside/evil.txt", data=b"evil")],
    "link_inside_then_write_through": [_member("x/sub", tarfile.DIRTYPE),
                                       _member("x/l", tarfile.SYMTYPE, link="sub"),
                                       _member("x/l/f.txt", data=b"through a link")],
    # each link alone stays inside; with x/b in place, x/a climbs one level too far
    "later_link_moves_earlier_link": [_member("x/a", tarfile.SYMTYPE, link="b/../.."),
                                      _member("x/b", tarfile.SYMTYPE, link="..")],
    "link_loop": [_member("x/a", tarfile.SYMTYPE, link="b"), _member("x/b", tarfile.SYMTYPE, link="a")],
    "link_replaces_dir": [_member("x/d/f.txt", data=b"fine"),
                          _member("x/d", tarfile.SYMTYPE, link="../..")],
    "hardlink_to_later": [_member("x/hard", tarfile.LNKTYPE, link="x/f.txt"),
                          _member("x/f.txt", data=b"fine")],
    "hardlink_to_dir": [_member("x/sub", tarfile.DIRTYPE), _member("x/hard", tarfile.LNKTYPE, link="x/sub")],
    "hardlink_through_link": [_member("x/f.txt", data=b"fine"), _member("x/l", tarfile.SYMTYPE, link="."),
                              _member("x/hard", tarfile.LNKTYPE, link="x/l/f.txt")],
    "block_device": [_member("x/disk", tarfile.BLKTYPE)],
    "duplicate_file": [_member("x/f.txt", data=b"one"), _member("x/f.txt", data=b"two")],
    "duplicate_link_then_file": [_member("x/f.txt", tarfile.SYMTYPE, link="../../outside.txt"),
                                 _member("x/f.txt", data=b"evil")],
    "dotdot": [_member("x/ok.txt", data=b"fine"), _member("x/../../evil.txt", data=b"evil")],
    "absolute": [_member("/tmp/opsstack-evil-absolute.txt", data=b"evil")],
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


def test_the_guard_keeps_links_that_stay_inside():
    """A link to a link listed after it, links up and across, files beside them: all pass,
    member by member, and extract as links."""
    guard = ExtractionGuard()
    for info, _ in [_member("x", tarfile.DIRTYPE), _member("x/current", tarfile.SYMTYPE, link="latest"),
                    _member("x/latest", tarfile.SYMTYPE, link="sub/v2.json"),
                    _member("x/sub/up", tarfile.SYMTYPE, link="../latest"),
                    _member("x/sub/v2.json", data=b"{}"), _member("x/hard", tarfile.LNKTYPE, link="x/sub/v2.json")]:
        assert guard.reason(info) is None, info.name
    assert "duplicate" in guard.reason(_member("x/sub/v2.json")[0])
    assert "passes through the symlink 'x/latest'" in guard.reason(_member("x/latest/f")[0])


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


def _outside(root: Path, *inside: str) -> list[str]:
    """Every path under ``root`` (links not followed) except those under ``inside``."""
    found = []
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts and rel.parts[0] in inside:
            continue
        found += [str(rel / name) for name in dirs + files if rel.parts or name not in inside]
    return sorted(found)


def _refused(message: str) -> str:
    match = re.search(r"member ('[^']*')", message)
    assert match, message
    return match.group(1)


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_verify_restore_and_repair_refuse_alike(tmp_path, case):
    """The same guard everywhere: verify refuses the member the extraction filter refuses, a
    restore over an existing target leaves it as it was, repair (through the manager and
    restore_members on its own) writes nothing outside the repaired path."""
    manager = make_manager(tmp_path)
    live = tmp_path / "live" / "x"
    live.mkdir(parents=True)
    (live / "keep.txt").write_text("mine")
    manifest = craft_backup(manager.backup_dir, case, CRAFTED[case], source=str(live))
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    before = _outside(tmp_path, "backups", "state", "live", "staging")

    report = manager.verify_backup_report(case)
    assert report["ok"] is False and report["error_type"] == "UnsafeArchiveError"
    refused = _refused(report["errors"][0])
    assert read_catalog(manager.backup_dir)[0]["verified"] is False

    with pytest.raises(UnsafeArchiveError, match=re.escape(refused)):
        manager.restore_backup_sync(case, target, overwrite=True)
    assert sorted(os.listdir(target)) == ["keep.txt"] and (target / "keep.txt").read_text() == "mine"

    staging = tmp_path / "staging"
    staging.mkdir()
    allowed = {entry["path"] for entry in manifest["files"]}
    stream = ArchiveStream(manager.backup_dir / f"{case}.tar.zst", manifest, None)
    try:
        with open_tar(stream) as tar, pytest.raises(UnsafeArchiveError) as caught:
            tar.extractall(staging, filter=extraction_filter(allowed))
    finally:
        stream.close()
    assert _refused(str(caught.value)) == refused

    recovery = RecoveryManager(manager.settings, Metrics(), backups=archives)
    recovery.enable(periodic=False)
    assert recovery.repair_corrupted_data_sync(str(live), case)["restored"] == []
    wanted = from_manifest(manifest, live)[1]
    with pytest.raises(UnsafeArchiveError, match=re.escape(refused)):
        restore_members(manager.backup_dir, manifest, None, "x", live, wanted, tmp_path / "state" / "q")
    assert os.listdir(tmp_path / "live") == ["x"] and (live / "keep.txt").read_text() == "mine"
    assert _outside(tmp_path, "backups", "state", "live", "staging") == before
    assert not any(name.endswith("evil.txt") for name in _outside(tmp_path.parent))


def test_a_manifest_naming_an_archive_outside_the_backup_dir_is_refused_not_read(tmp_path):
    manager = make_manager(tmp_path)
    manifest = craft_backup(manager.backup_dir, "b", [_member("x/ok.txt", data=b"fine")])
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(manager.backup_dir / "b.tar.zst", outside / "x.tar.zst")
    manifest["archive"]["name"] = "../outside/x.tar.zst"
    manifest_path(manager.backup_dir, "b").write_text(json.dumps(manifest))

    assert read_catalog(manager.backup_dir) == []
    with pytest.raises(BackupError, match="no backup named 'b'"):
        manager.verify_backup_report("b")
    report = check_archive(manager.backup_dir, manifest, None)
    assert report["ok"] is False and "not a file in" in report["errors"][0]
    recovery = RecoveryManager(manager.settings, Metrics(), backups=archives)
    recovery.enable(periodic=False)
    result = recovery.repair_corrupted_data_sync(str(tmp_path / "live"), "b")
    assert "no backup or backup directory" in result["failed"][""]
    assert read_verify_state(manager.backup_dir) == {}
