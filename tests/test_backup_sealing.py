"""Sealed manifests (format 3): an encrypted backup shows no file name, size or hash without the
key, and a manifest changed by hand or taken from another backup is found out."""
from __future__ import annotations

import hashlib
import json

import pytest

from exporter.backup_manager import archives
from exporter.backup_manager.catalog import manifest_path, open_manifest, read_catalog
from exporter.errors import BackupUnreadableError, IntegrityError
from exporter.metrics import Metrics
from exporter.recovery_manager import RecoveryManager
from tests.test_backup_manager import KEY, make_manager, make_settings, make_tree

PUBLIC = {"format", "format_version", "name", "created_at", "created_at_iso", "tier", "archive",
          "settings", "sealed"}


@pytest.fixture
def sealed(tmp_path):
    manager = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY=KEY)
    source = make_tree(tmp_path / "data")
    manager.create_backup_sync([str(source)], "b", "quarterly secrets export")
    return manager, source


def test_the_manifest_on_disk_holds_only_what_listing_needs(sealed):
    manager, source = sealed
    raw = manifest_path(manager.backup_dir, "b").read_bytes()
    on_disk = json.loads(raw)
    assert set(on_disk) == PUBLIC and on_disk["format_version"] == 4
    assert on_disk["settings"] == {"encrypted": True}
    token_hash = hashlib.sha256(b"secret-token").hexdigest().encode()
    for secret in (b"token.txt", b"settings.json", token_hash, b"quarterly", str(source).encode()):
        assert secret not in raw
    listed = read_catalog(manager.backup_dir)[0]
    assert listed["name"] == "b" and listed["sealed"] and listed["encrypted"] and listed["size"] > 0
    assert manager.verify_backup("b")
    out = manager.backup_dir.parent / "out"
    manager.restore_backup_sync("b", out)
    assert (out / "data" / "config" / "token.txt").read_text() == "secret-token"
    assert open_manifest(on_disk, bytes.fromhex(KEY))["description"] == "quarterly secrets export"


@pytest.mark.parametrize("field, value", [("tier", "daily"), ("created_at", 1.0), ("name", "b")])
def test_a_public_field_changed_by_hand_is_found_and_recorded(sealed, field, value):
    manager, _ = sealed
    path = manifest_path(manager.backup_dir, "b")
    data = json.loads(path.read_text())
    if field == "name":  # the name stays, the archive it vouches for changes
        data["archive"]["size"] += 1
    else:
        data[field] = value
    path.write_text(json.dumps(data))
    report = manager.verify_backup_report("b")
    assert not report["ok"] and "fails authentication" in report["errors"][0]
    assert read_catalog(manager.backup_dir)[0]["verified"] is False
    with pytest.raises(IntegrityError, match="fails authentication"):
        manager.restore_backup_sync("b", manager.backup_dir.parent / "out")
    assert not (manager.backup_dir.parent / "out").exists()


def test_a_sealed_part_moved_to_another_backup_is_found(sealed):
    manager, source = sealed
    manager.create_backup_sync([str(source)], "c")
    b_path, c_path = (manifest_path(manager.backup_dir, n) for n in ("b", "c"))
    b, c = json.loads(b_path.read_text()), json.loads(c_path.read_text())
    c["sealed"] = b["sealed"]
    c_path.write_text(json.dumps(c))
    assert not manager.verify_backup("c")
    assert manager.verify_backup("b")


def test_without_the_key_or_with_another_nothing_is_read_and_nothing_recorded(tmp_path, sealed):
    manager, _ = sealed
    assert manager.verify_backup("b")
    state = (manager.backup_dir / ".verify-state.json").read_bytes()
    for flags in ({"BACKUP_ENCRYPTION_KEY": "1e" * 32}, {}):
        other = make_manager(tmp_path, **flags)
        with pytest.raises(BackupUnreadableError):
            other.verify_backup_report("b")
        with pytest.raises(BackupUnreadableError):
            other.restore_backup_sync("b", tmp_path / "out")
    assert (manager.backup_dir / ".verify-state.json").read_bytes() == state


def test_an_older_unsealed_encrypted_manifest_still_reads(sealed):
    manager, _ = sealed
    path = manifest_path(manager.backup_dir, "b")
    whole = open_manifest(json.loads(path.read_text()), bytes.fromhex(KEY))
    whole["format_version"] = 2
    path.write_text(json.dumps(whole))
    assert manager.verify_backup("b")
    assert read_catalog(manager.backup_dir)[0]["sealed"] is False


def test_repair_reads_a_sealed_backup_with_the_key(tmp_path, sealed):
    manager, source = sealed
    recovery = RecoveryManager(make_settings(tmp_path, BACKUP_ENCRYPTION_KEY=KEY), Metrics(), backups=archives)
    recovery.enable(periodic=False)
    (source / "config" / "token.txt").write_text("damaged")
    result = recovery.repair_corrupted_data_sync(str(source / "config" / "token.txt"), "b")
    assert result["restored"]
    assert (source / "config" / "token.txt").read_text() == "secret-token"
