"""Restore drills: a backup is restored into scratch space and checked file by file (SQLite by
``PRAGMA integrity_check``); the outcome is recorded, listed and exported, and a drill that
cannot run (no key) records nothing."""
from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from exporter.backup_manager import read_catalog
from exporter.backup_manager.catalog import DRILL_STATE_FILE
from exporter.cli import main
from exporter.errors import BackupUnreadableError
from exporter.metrics import Metrics
from tests.probes import wait_until
from tests.test_backup_manager import KEY, make_manager, make_settings, make_tree
from tests.test_restore_safety import _member, craft_backup


def sample(metrics, name, labels=None):
    return metrics.registry.get_sample_value(name, labels or {})


def make_db(path):
    connection = sqlite3.connect(path)
    connection.execute("create table users (id integer primary key, name text)")
    connection.executemany("insert into users (name) values (?)", [(f"user{n}",) for n in range(500)])
    connection.commit()
    connection.close()


def test_a_good_backup_passes_and_is_recorded_listed_and_exported(tmp_path):
    metrics = Metrics()
    manager = make_manager(tmp_path, metrics)
    source = make_tree(tmp_path / "data")
    make_db(source / "bot.sqlite3")
    manager.create_backup_sync([str(source)], "b")

    report = manager.drill_backup_sync()
    assert report["ok"] and report["backup_name"] == "b" and report["errors"] == []
    assert report["files_checked"] == 5 and report["sqlite_checked"] == 1
    assert sample(metrics, "bot_backup_last_drill_success") == 1
    assert sample(metrics, "bot_backup_last_drill_timestamp_seconds") == pytest.approx(time.time(), abs=30)
    assert sample(metrics, "bot_backup_drills_total", {"outcome": "success"}) == 1
    assert sample(metrics, "bot_backup_drill_interval_seconds") == 7 * 86400
    assert read_catalog(manager.backup_dir)[0]["drilled"] is True
    assert manager.get_backup_stats()["newest_drilled"] == "b"
    assert [p for p in os.listdir(manager.backup_dir) if p.startswith(".") and ".tmp-" in p] == []

    restarted = Metrics()
    make_manager(tmp_path, restarted)  # a restart shows the last drill, not "never"
    assert sample(restarted, "bot_backup_last_drill_success") == 1
    assert sample(restarted, "bot_backup_last_drill_timestamp_seconds") == pytest.approx(
        sample(metrics, "bot_backup_last_drill_timestamp_seconds"), abs=1)


def test_a_damaged_sqlite_database_fails_the_drill(tmp_path):
    metrics = Metrics()
    manager = make_manager(tmp_path, metrics)
    db = tmp_path / "good.sqlite3"
    make_db(db)
    data = bytearray(db.read_bytes())
    data[4096 + 8:4096 + 200] = os.urandom(192)  # a b-tree page header scrambled, the file header intact
    craft_backup(manager.backup_dir, "bad", [_member("data", b"5"), _member("data/bot.sqlite3", data=bytes(data))])
    manager.verify_backup("bad")  # the archive matches its manifest: verify alone finds nothing

    report = manager.drill_backup_sync("bad")
    assert not report["ok"] and report["sqlite_checked"] == 1
    assert report["errors"][0].startswith("data/bot.sqlite3: SQLite integrity_check")
    assert sample(metrics, "bot_backup_last_drill_success") == 0
    assert sample(metrics, "bot_backup_drills_total", {"outcome": "failure"}) == 1
    assert read_catalog(manager.backup_dir)[0]["drilled"] is False


def test_a_damaged_archive_fails_the_drill(tmp_path):
    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(make_tree(tmp_path / "data"))], "b")
    archive = manager.backup_dir / "b.tar.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40
    archive.write_bytes(bytes(data))
    report = manager.drill_backup_sync("b")
    assert not report["ok"] and str(archive) in report["errors"][0]
    assert json.loads((manager.backup_dir / DRILL_STATE_FILE).read_text())["b"]["ok"] is False


def test_a_drill_that_cannot_decrypt_records_nothing(tmp_path):
    manager = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY=KEY)
    manager.create_backup_sync([str(make_tree(tmp_path / "data"))], "b")
    manager.drill_backup_sync("b")
    before = (manager.backup_dir / DRILL_STATE_FILE).read_bytes()
    wrong = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY="1f" * 32)
    with pytest.raises(BackupUnreadableError, match="wrong key"):
        wrong.drill_backup_sync("b")
    assert (manager.backup_dir / DRILL_STATE_FILE).read_bytes() == before


def test_the_scheduler_drills_the_newest_backup(tmp_path):
    source = make_tree(tmp_path / "data")
    first = make_manager(tmp_path)
    first.create_backup_sync([str(source)], "first")
    settings = make_settings(tmp_path, BACKUP_FREQUENCY="weekly", CRITICAL_BACKUP_PATHS=[str(source)],
                             BACKUP_DRILL_INTERVAL=3600)
    from exporter.backup_manager import BackupManager

    manager = BackupManager(settings, Metrics())
    manager.enable()
    try:
        wait_until((manager.backup_dir / DRILL_STATE_FILE).exists, timeout=30, what="the first drill")
        drilled = json.loads((manager.backup_dir / DRILL_STATE_FILE).read_text())
        assert list(drilled.values())[0]["ok"] is True
        deadline = time.monotonic() + 30  # the loop plans the next drill once this one returned
        while time.monotonic() < deadline and manager.get_backup_stats()["next_drill"] < time.time() + 60:
            time.sleep(0.05)
        assert manager.get_backup_stats()["next_drill"] == pytest.approx(time.time() + 3600, abs=60)
    finally:
        manager.disable()


@pytest.mark.parametrize("value", ["-1", "30", "1e300", "nan"])
def test_drill_interval_out_of_range_is_refused(tmp_path, value):
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError, match="BACKUP_DRILL_INTERVAL"):
        make_settings(tmp_path, BACKUP_DRILL_INTERVAL=value)


def test_cli_drill(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    for name in ("OPSSTACK_CONFIG", "BACKUP_ENCRYPTION_KEY", "BACKUP_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["backup", "drill"]) == 1
    assert "no backup to drill" in capsys.readouterr().err
    main(["backup", "create", str(make_tree(tmp_path / "data")), "--name", "b"])
    capsys.readouterr()
    assert main(["backup", "drill", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["files_checked"] == 4
    assert main(["backup", "list"]) == 0
    assert "verified, drilled" in capsys.readouterr().out


def test_opsstack_serve_exports_the_last_drill_from_disk(tmp_path):
    from exporter.exposition import backup_families

    manager = make_manager(tmp_path)
    source = make_tree(tmp_path / "data")
    manager.create_backup_sync([str(source)], "a")
    manager.create_backup_sync([str(source)], "b")
    manager.drill_backup_sync("a")
    values = {f.name: f.samples[0].value for f in backup_families(manager.settings) if f.samples}
    state = json.loads((manager.backup_dir / DRILL_STATE_FILE).read_text())
    assert values["bot_backup_last_drill_timestamp_seconds"] == state["a"]["at"]
    assert values["bot_backup_last_drill_success"] == 1
