"""Recovery manager: integrity against recorded and backup baselines, repair only from backups
that verify (damaged files quarantined first), auto-recovery, history, state file, periodic
checks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.backup_manager import archives
from exporter.errors import NotEnabledError
from exporter.metrics import Metrics
from exporter.recovery_manager import RecoveryManager, read_integrity_state
from tests.fakes import Recorder
from tests.probes import wait_until
from tests.test_backup_manager import make_manager, make_settings, make_tree, sample


def make_recovery(tmp_path: Path, metrics: Metrics | None = None, periodic: bool = False,
                  **flags) -> RecoveryManager:
    manager = RecoveryManager(make_settings(tmp_path, **flags), metrics or Metrics(), backups=archives)
    manager.enable(periodic=periodic)
    return manager


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_recorded_baseline_finds_every_kind_of_damage(tmp_path):
    source = make_tree(tmp_path / "data")
    recovery = make_recovery(tmp_path)
    assert recovery.record_baseline([str(source)])[str(source)] >= 9
    valid, details = await recovery.verify_integrity(str(source))
    assert valid and details["baseline"] == "recorded"

    flip(source / "media" / "deep" / "blob.bin")                       # same size, new hash
    (source / "config" / "settings.json").write_text("{}")             # new size
    (source / "media" / "text.log").unlink()                           # missing
    (source / "stray.txt").write_text("x")                             # extra
    (source / "empty").rmdir()
    (source / "empty").write_text("now a file")                        # wrong type
    valid, details = await recovery.verify_integrity(str(source))
    assert not valid
    assert details["changed_hash"] == ["media/deep/blob.bin"]
    assert details["changed_size"] == ["config/settings.json"]
    assert details["missing"] == ["media/text.log"]
    assert details["extra"] == ["stray.txt"]
    assert details["wrong_type"] == ["empty"]

    valid, details = await recovery.verify_integrity(str(source), check_hash=False,
                                                     check_structure=False)
    assert details["mode"] == "fast" and details["changed_hash"] == []
    assert details["changed_mtime"] == ["media/deep/blob.bin"]      # caught without reading it
    assert details["missing"] == [] and details["extra"] == []


async def test_auto_recover_restores_corrupted_and_deleted_files(tmp_path):
    metrics = Metrics()
    source = make_tree(tmp_path / "data")
    backups = make_manager(tmp_path, metrics)
    backups.create_backup_sync([str(tmp_path / "data")], "older")
    backups.create_backup_sync([str(tmp_path / "data")], "newest")
    assert backups.verify_backup("older") and backups.verify_backup("newest")
    recovery = make_recovery(tmp_path, metrics, ENABLE_AUTO_RECOVERY=True)

    good_blob = (source / "media" / "deep" / "blob.bin").read_bytes()
    good_token = (source / "config" / "token.txt").read_bytes()
    flip(source / "media" / "deep" / "blob.bin")
    corrupted = (source / "media" / "deep" / "blob.bin").read_bytes()
    (source / "config" / "token.txt").unlink()

    report = await recovery.auto_recover([str(source / "media"), str(source / "config")],
                                         str(backups.backup_dir))
    assert report["repaired_paths"] == [str(source / "media"), str(source / "config")]
    assert report["valid_paths"] == [] and report["failed_paths"] == []
    assert (source / "media" / "deep" / "blob.bin").read_bytes() == good_blob
    assert (source / "config" / "token.txt").read_bytes() == good_token
    assert (source / "config" / "token.txt").stat().st_mode & 0o777 == 0o600
    repair = report["details"][str(source / "media")]["repair"]
    assert repair["backup"] == "newest" and repair["restored"] == ["deep/blob.bin"]
    quarantined = Path(repair["quarantine_dir"]) / str(source / "media/deep/blob.bin").lstrip("/")
    assert quarantined.read_bytes() == corrupted

    report = await recovery.auto_recover([str(source / "media"), str(source / "config")],
                                         str(backups.backup_dir))
    assert len(report["valid_paths"]) == 2
    r = metrics.registry
    assert sample(r, "bot_integrity_repairs_total", {"outcome": "success"}) == 2
    assert sample(r, "bot_integrity_checks_total", {"outcome": "failure"}) == 2
    assert sample(r, "bot_integrity_checks_total", {"outcome": "success"}) == 2
    assert sample(r, "bot_integrity_last_check_ok") == 1
    state = read_integrity_state(tmp_path / "state")
    assert state["last_ok"] is True and state["repairs"]["success"] == 2
    history = recovery.get_integrity_history(limit=3)
    assert len(history) == 3 and history[0]["action"] == "check" and history[0]["valid"]
    assert any(h["action"] == "repair" for h in recovery.get_integrity_history(10))


async def test_auto_recovery_off_reports_but_repairs_nothing(tmp_path):
    source = make_tree(tmp_path / "data")
    backups = make_manager(tmp_path)
    backups.create_backup_sync([str(source)], "b")
    recovery = make_recovery(tmp_path)  # ENABLE_AUTO_RECOVERY defaults to off
    (source / "config" / "token.txt").unlink()
    report = await recovery.auto_recover([str(source)], str(backups.backup_dir))
    assert report["failed_paths"] == [str(source)] and report["repaired_paths"] == []
    assert "ENABLE_AUTO_RECOVERY" in report["details"][str(source)]["repair"]
    assert not (source / "config" / "token.txt").exists()
    assert not (tmp_path / "state" / "quarantine").exists()


async def test_repair_skips_a_backup_that_does_not_verify(tmp_path):
    source = make_tree(tmp_path / "data")
    backups = make_manager(tmp_path)
    backups.create_backup_sync([str(source)], "a_old")
    newest = backups.create_backup_sync([str(source)], "b_new")
    backups.verify_backup("a_old")
    flip(Path(newest["archive"]))                     # the newest backup is now damaged
    recovery = make_recovery(tmp_path)
    good = (source / "config" / "settings.json").read_bytes()
    (source / "config" / "settings.json").write_text("garbage")
    assert await recovery.repair_corrupted_data(str(source), str(backups.backup_dir)) is True
    assert (source / "config" / "settings.json").read_bytes() == good
    assert recovery.get_integrity_history(1)[0]["baseline"] == "a_old"


async def test_repair_with_only_a_bad_backup_changes_nothing(tmp_path):
    source = make_tree(tmp_path / "data")
    backups = make_manager(tmp_path)
    only = backups.create_backup_sync([str(source)], "only")
    flip(Path(only["archive"]))
    metrics = Metrics()
    recovery = make_recovery(tmp_path, metrics)
    (source / "config" / "settings.json").write_text("garbage")
    assert await recovery.repair_corrupted_data(str(source), "only") is False
    assert (source / "config" / "settings.json").read_text() == "garbage"
    assert not (tmp_path / "state" / "quarantine").exists() or \
        not any((tmp_path / "state" / "quarantine").rglob("settings.json"))
    assert sample(metrics.registry, "bot_integrity_repairs_total", {"outcome": "failure"}) == 1


@pytest.mark.parametrize("source_name", ["only_other", "../escape"])
def test_repair_from_a_backup_that_does_not_hold_the_path_says_so(tmp_path, source_name):
    source = make_tree(tmp_path / "data")
    other = make_tree(tmp_path / "other")
    backups = make_manager(tmp_path)
    backups.create_backup_sync([str(other)], "only_other")
    recovery = make_recovery(tmp_path)
    result = recovery.repair_corrupted_data_sync(str(source), source_name)
    assert not result["ok"]
    expected = "does not hold" if source_name == "only_other" else "no backup or backup directory"
    assert expected in result["failed"][""]


def test_disabled_and_missing_baseline(tmp_path):
    recovery = RecoveryManager(make_settings(tmp_path), Metrics(), backups=archives)
    with pytest.raises(NotEnabledError):
        recovery.verify_integrity_sync(str(tmp_path))
    assert recovery.get_integrity_history() == [] and recovery.get_recovery_status() == {"enabled": False}
    assert not (tmp_path / "state").exists()
    assert read_integrity_state(tmp_path / "state") == {}
    recovery.enable(periodic=False)
    valid, details = recovery.verify_integrity_sync(str(tmp_path / "nothing"))
    assert not valid and "no baseline" in details["errors"][0]


def test_periodic_checks_write_the_state_file(tmp_path):
    source = make_tree(tmp_path / "data")
    recovery = RecoveryManager(make_settings(tmp_path, RECOVERY_CRITICAL_PATHS=[str(source)],
                                             INTEGRITY_CHECK_INTERVAL=0.1), Metrics(), backups=archives)
    recovery.enable()
    recovery.record_baseline([str(source)])
    try:
        wait_until(lambda: read_integrity_state(tmp_path / "state").get("last_ok"), what="a periodic check passed")
        state = read_integrity_state(tmp_path / "state")
        assert state["last_ok"] is True and state["checks"]["success"] >= 1
        assert recovery.get_recovery_status()["periodic_checks"] is True
        assert oct(os.stat(tmp_path / "state" / "integrity-state.json").st_mode & 0o777) == "0o600"
    finally:
        recovery.disable()
    assert recovery.get_recovery_status() == {"enabled": False}


def test_periodic_checks_wait_for_a_baseline_instead_of_alerting(tmp_path, caplog):
    """Found by the rehearsal: a new bot checked its critical paths before its first backup and
    raised "Integrity check failed" and a critical "Repair failed" every interval. Without a
    baseline the path is not checked (said once); from the first backup that holds it, it is."""
    recorder = Recorder()
    source = make_tree(tmp_path / "data")
    recovery = RecoveryManager(make_settings(tmp_path, RECOVERY_CRITICAL_PATHS=[str(source)],
                                             INTEGRITY_CHECK_INTERVAL=0.05), Metrics(), backups=archives,
                               events=recorder, alerts=recorder)
    caplog.set_level("INFO", logger="exporter.recovery_manager")
    recovery.enable()
    try:
        wait_until(lambda: "not checked yet" in caplog.text, what="the periodic check saw no baseline")
        make_manager(tmp_path).create_backup_sync([str(source)], "first")
        wait_until(lambda: read_integrity_state(tmp_path / "state").get("last_ok"), what="a check passed")
    finally:
        recovery.disable()
    assert recorder.alerts == [] and caplog.text.count("not checked yet") == 1

def test_a_failed_check_is_logged_and_alerted_through_the_given_collaborators(tmp_path):
    recorder = Recorder()
    source = make_tree(tmp_path / "data")
    recovery = RecoveryManager(make_settings(tmp_path), Metrics(), backups=archives, events=recorder,
                               alerts=recorder)
    recovery.enable(periodic=False)
    recovery.record_baseline([str(source)])
    (source / "stray.txt").write_text("x")
    valid, _ = recovery.verify_integrity_sync(str(source))
    assert not valid
    assert [event[:2] for event in recorder.events] == [("integrity", "failure")]
    assert [alert[:3] for alert in recorder.alerts] == [("integrity_failed", "high", "Integrity check failed")]
