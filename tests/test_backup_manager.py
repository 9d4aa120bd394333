"""Backup manager: round trip, manifest, encryption, SQLite, faults on real files (flipped byte,
kill -9, Ctrl-C, disk full), locking, retention, scheduling."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from exporter.backup_manager import BackupManager, read_catalog
from exporter.backup_manager import retention
from exporter.backup_manager.catalog import LOCK_FILE, manifest_path
from exporter.backup_manager.lock import DirectoryLock
from exporter.config import load_settings
from exporter.errors import (BackupError, BackupLockedError, BackupUnreadableError,
                             DecryptionError, IntegrityError, NotEnabledError)
from exporter.metrics import Metrics
from tests.fakes import Recorder
from tests.probes import wait_until

KEY = "0f" * 32
ROOT = Path(__file__).resolve().parents[1]


def make_settings(tmp_path: Path, **flags):
    base = {"BACKUP_DIR": str(tmp_path / "backups"), "STATE_DIR": str(tmp_path / "state")}
    base.update(flags)
    return load_settings(base, environ={})


def make_manager(tmp_path: Path, metrics: Metrics | None = None, **flags) -> BackupManager:
    settings = make_settings(tmp_path, **flags)
    manager = BackupManager(settings, metrics or Metrics())
    manager.enable(schedule=False)
    return manager


def make_tree(root: Path) -> Path:
    (root / "config").mkdir(parents=True)
    (root / "media" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "config" / "settings.json").write_text(json.dumps({"a": 1}))
    (root / "config" / "token.txt").write_text("secret-token")
    os.chmod(root / "config" / "token.txt", 0o600)
    (root / "media" / "deep" / "blob.bin").write_bytes(os.urandom(300_000))
    (root / "media" / "text.log").write_text("line\n" * 20_000)
    os.symlink("settings.json", root / "config" / "current.json")
    return root


def sample(registry, name, labels=None):
    return registry.get_sample_value(name, labels or {})


def test_round_trip_manifest_and_metrics(tmp_path):
    metrics = Metrics()
    manager = make_manager(tmp_path, metrics)
    source = make_tree(tmp_path / "data")
    result = manager.create_backup_sync([str(source)], "first", "before release")
    assert result["backup_name"] == "first" and result["files"] == 4
    archive = Path(result["archive"])
    assert archive.name == "first.tar.zst" and oct(archive.stat().st_mode & 0o777) == "0o600"
    manifest = json.loads(manifest_path(manager.backup_dir, "first").read_text())
    assert manifest["description"] == "before release"
    assert manifest["settings"] == {"compression": "zstd", "compression_level": None,
                                    "encrypted": False, "encryption": None, "hash": "sha256"}
    assert manifest["archive"]["size"] == archive.stat().st_size
    entries = {f["path"]: f for f in manifest["files"]}
    token = entries["data/config/token.txt"]
    assert token["size"] == 12 and token["mode"] == 0o600 and len(token["sha256"]) == 64
    assert entries["data/config/current.json"] == {**entries["data/config/current.json"],
                                                    "type": "symlink", "link": "settings.json"}
    assert entries["data/empty"]["type"] == "dir"
    assert [b["name"] for b in manager.list_backups()] == ["first"]
    assert manager.verify_backup("first") is True
    assert read_catalog(manager.backup_dir)[0]["verified"] is True

    target = tmp_path / "restored"
    report = manager.restore_backup_sync("first", target)
    assert report["files"] == 4
    for rel in ("config/settings.json", "config/token.txt", "media/deep/blob.bin", "media/text.log"):
        assert (target / "data" / rel).read_bytes() == (source / rel).read_bytes()
    assert os.readlink(target / "data" / "config" / "current.json") == "settings.json"
    assert (target / "data" / "config" / "token.txt").stat().st_mode & 0o777 == 0o600
    assert (target / "data" / "empty").is_dir()

    r = metrics.registry
    assert sample(r, "bot_backups_total", {"outcome": "success"}) == 1
    assert sample(r, "bot_backup_last_files") == 4
    assert sample(r, "bot_backup_last_size_bytes") == archive.stat().st_size
    assert sample(r, "bot_backup_last_success_timestamp_seconds") == pytest.approx(time.time(), abs=60)
    assert sample(r, "bot_backup_verifications_total", {"outcome": "success"}) == 2  # verify + restore
    assert sample(r, "bot_backup_restores_total", {"outcome": "success"}) == 1
    assert sample(r, "bot_backup_last_verify_ok") == 1


def test_disabled_manager_does_nothing(tmp_path):
    manager = BackupManager(make_settings(tmp_path), Metrics())
    with pytest.raises(NotEnabledError):
        manager.create_backup_sync([str(tmp_path)])
    with pytest.raises(NotEnabledError):
        manager.verify_backup("x")
    assert manager.list_backups() == [] and manager.cleanup_old_backups(1) == 0
    assert manager.get_backup_stats() == {"enabled": False}
    assert not (tmp_path / "backups").exists()


def test_sqlite_is_copied_with_the_backup_api(tmp_path):
    manager = make_manager(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tasks.sqlite3"
    live = sqlite3.connect(db)
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("CREATE TABLE t (x INTEGER)")
    live.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    live.commit()  # committed into the WAL, not yet checkpointed into the main file
    assert (data / "tasks.sqlite3-wal").exists()
    manager.create_backup_sync([str(data)], "db")
    live.close()
    manifest = json.loads(manifest_path(manager.backup_dir, "db").read_text())
    names = {f["path"]: f for f in manifest["files"]}
    assert names["data/tasks.sqlite3"]["sqlite"] is True
    assert "data/tasks.sqlite3-wal" not in names
    manager.restore_backup_sync("db", tmp_path / "out")
    copy = sqlite3.connect(tmp_path / "out" / "data" / "tasks.sqlite3")
    assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    copy.close()


def test_encrypted_backup_and_wrong_key(tmp_path):
    source = make_tree(tmp_path / "data")
    manager = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY=KEY)
    result = manager.create_backup_sync([str(source)], "enc")
    archive = Path(result["archive"])
    assert archive.name == "enc.tar.zst.enc" and result["encrypted"] is True
    assert b"secret-token" not in archive.read_bytes()
    manifest_text = manifest_path(manager.backup_dir, "enc").read_text()
    assert KEY not in manifest_text and json.loads(manifest_text)["settings"]["encrypted"] is True
    assert manager.verify_backup("enc")

    wrong = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY="1e" * 32)
    with pytest.raises(DecryptionError, match="wrong key"):
        wrong.restore_backup_sync("enc", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    keyless = make_manager(tmp_path)
    with pytest.raises(DecryptionError, match="BACKUP_ENCRYPTION_KEY is not set"):
        keyless.restore_backup_sync("enc", tmp_path / "out")
    manager.restore_backup_sync("enc", tmp_path / "out")
    assert (tmp_path / "out" / "data" / "config" / "token.txt").read_text() == "secret-token"


@pytest.mark.parametrize("encrypted", [False, True])
def test_flipped_byte_fails_verify_and_restore_writes_nothing(tmp_path, encrypted):
    metrics = Metrics()
    flags = {"BACKUP_ENCRYPTION_KEY": KEY} if encrypted else {}
    manager = make_manager(tmp_path, metrics, **flags)
    source = make_tree(tmp_path / "data")
    archive = Path(manager.create_backup_sync([str(source)], "b")["archive"])
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))

    report = manager.verify_backup_report("b")
    assert report["ok"] is False
    assert str(archive) in report["errors"][0]
    assert sample(metrics.registry, "bot_backup_last_verify_ok") == 0
    assert read_catalog(manager.backup_dir)[0]["verified"] is False
    with pytest.raises(IntegrityError, match=str(archive)):
        manager.restore_backup_sync("b", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert sample(metrics.registry, "bot_backup_restores_total", {"outcome": "failure"}) == 1


def test_disk_full_leaves_nothing_and_keeps_older_backups(tmp_path, monkeypatch):
    metrics = Metrics()
    manager = make_manager(tmp_path, metrics)
    source = make_tree(tmp_path / "data")
    manager.create_backup_sync([str(source)], "old")
    before = sorted(os.listdir(manager.backup_dir))

    from exporter.backup_manager import sink

    for kind in (sink.BufferedSink, sink.DirectSink):
        def full_disk(self, data, real_write=kind.write):
            if self.size + len(data) > 50_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, data)

        monkeypatch.setattr(kind, "write", full_disk)
    with pytest.raises(BackupError, match="disk full"):
        manager.create_backup_sync([str(source)], "new")
    monkeypatch.undo()
    assert sorted(os.listdir(manager.backup_dir)) == before
    assert [b["name"] for b in manager.list_backups()] == ["old"]
    assert manager.verify_backup("old")
    assert sample(metrics.registry, "bot_backups_total", {"outcome": "failure"}) == 1
    assert sample(metrics.registry, "bot_backup_last_attempt_timestamp_seconds") >= \
        sample(metrics.registry, "bot_backup_last_success_timestamp_seconds")


CHILD = textwrap.dedent("""
    import sys, time
    from exporter.backup_manager import BackupManager
    from exporter.config import load_settings
    from exporter.metrics import Metrics
    backup_dir, source = sys.argv[1], sys.argv[2]
    m = BackupManager(load_settings({"BACKUP_DIR": backup_dir}, environ={}), Metrics())
    m.enable(schedule=False)
    said = []
    def progress(files, total, done, size):
        if done > size // 4 and not said:
            print("halfway", flush=True); said.append(1)
        time.sleep(0.002)
    m.create_backup_sync([source], "victim", progress=progress)
    print("finished", flush=True)
""")


def big_tree(root: Path, files: int = 40, size: int = 512 * 1024) -> Path:
    root.mkdir(parents=True)
    for n in range(files):
        (root / f"f{n:03}.bin").write_bytes(os.urandom(size))
    return root


@pytest.mark.slow
def test_killed_backup_is_not_listed_and_next_backup_succeeds(tmp_path, caplog):
    source = big_tree(tmp_path / "data")
    backup_dir = tmp_path / "backups"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(backup_dir), str(source)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout.readline().strip() == "halfway"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    leftovers = [n for n in os.listdir(backup_dir) if ".tmp-" in n]
    assert leftovers, "the kill should have left a temp file behind"
    assert read_catalog(backup_dir) == []
    assert (backup_dir / LOCK_FILE).read_text().strip() == str(child.pid)

    manager = make_manager(tmp_path)  # enabling clears the stale lock and the leftovers
    assert f"stale lock on {backup_dir} left by dead process {child.pid}" in caplog.text
    assert [n for n in os.listdir(backup_dir) if ".tmp-" in n] == []
    (backup_dir / LOCK_FILE).write_text(f"{child.pid}\n")
    lock = DirectoryLock(backup_dir / LOCK_FILE).acquire()
    assert lock.stale_pid == child.pid
    lock.release()
    manager.create_backup_sync([str(source)], "after")
    assert [b["name"] for b in manager.list_backups()] == ["after"]
    assert [n for n in os.listdir(backup_dir) if ".tmp-" in n] == []
    assert manager.verify_backup("after")


@pytest.mark.slow
def test_ctrl_c_during_cli_backup_leaves_no_partial_backup(ctrl_c_reaches_children, tmp_path):
    source = big_tree(tmp_path / "data", files=200)
    backup_dir = tmp_path / "backups"
    env = {**os.environ, "BACKUP_DIR": str(backup_dir), "BACKUP_COMPRESSION": "gzip"}
    child = subprocess.Popen([sys.executable, "-m", "exporter", "backup", "create", str(source),
                              "--name", "interrupted"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: backup_dir.exists() and any(".tmp-" in n and os.path.getsize(backup_dir / n) > 0
                                                   for n in os.listdir(backup_dir)),
               timeout=30, what="the backup to write its temporary file", interval=0.01)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "interrupted" in err
    assert [n for n in os.listdir(backup_dir) if n != LOCK_FILE] == []


async def test_cancelled_async_backup_is_removed(tmp_path):
    manager = make_manager(tmp_path)
    source = big_tree(tmp_path / "data", files=20, size=64 * 1024)
    running = threading.Event()

    def slowly(*progress):  # a slow backup, cancelled while it runs
        running.set()
        time.sleep(0.01)

    task = asyncio.create_task(manager.create_backup([str(source)], "cancelled", progress=slowly))
    assert await asyncio.to_thread(running.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [n for n in os.listdir(manager.backup_dir) if n != LOCK_FILE] == []
    result = await manager.create_backup([str(source)], description="async")
    assert result["backup_name"].startswith("backup_") and manager.verify_backup(result["backup_name"])


def test_lock_blocks_a_second_backup(tmp_path):
    manager = make_manager(tmp_path)
    source = make_tree(tmp_path / "data")
    with DirectoryLock(manager.backup_dir / LOCK_FILE):
        with pytest.raises(BackupLockedError, match="locked"):
            manager.create_backup_sync([str(source)], "blocked")
    assert manager.list_backups() == []
    manager.create_backup_sync([str(source)], "free")
    assert (manager.backup_dir / LOCK_FILE).read_text() == ""


@contextlib.contextmanager
def no_room_to_write():
    """Writing a byte to a file fails with EFBIG, as with a full disk (a file size limit of 0)."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)


def test_a_lock_that_cannot_write_its_pid_on_a_full_disk_is_given_back(tmp_path):
    """The rehearsal's disk-full fault: writing the pid into the lock file failed (ENOSPC) and
    the lock stayed taken by a leaked descriptor, so every later backup of the process failed
    with "locked by process 0"."""
    manager = make_manager(tmp_path)
    source = make_tree(tmp_path / "data")
    with no_room_to_write(), pytest.raises(OSError):
        DirectoryLock(manager.backup_dir / LOCK_FILE).acquire()
    assert manager.create_backup_sync([str(source)], "after-full-disk")["backup_name"] == "after-full-disk"


def test_a_full_backup_disk_does_not_stop_enable_or_listing(tmp_path):
    """Also found by the rehearsal: enable() (the bot's start, every ``opsstack backup``
    command) took the lock to clean leftovers and died with a traceback on a full disk."""
    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(make_tree(tmp_path / "data"))], "kept")
    manager.disable()
    with no_room_to_write():
        manager.enable(schedule=False)
    assert [backup["name"] for backup in manager.list_backups()] == ["kept"]


def test_bad_inputs(tmp_path):
    manager = make_manager(tmp_path)
    with pytest.raises(BackupError, match="does not exist"):
        manager.create_backup_sync([str(tmp_path / "nope")])
    with pytest.raises(BackupError, match="invalid backup name"):
        manager.create_backup_sync([str(tmp_path)], "../evil")
    source = make_tree(tmp_path / "data")
    manager.create_backup_sync([str(source)], "dup")
    with pytest.raises(BackupError, match="already exists"):
        manager.create_backup_sync([str(source)], "dup")
    with pytest.raises(BackupError, match="no backup named"):
        manager.verify_backup("missing")


def _shift(manager, name, created_at, tier="hourly"):
    path = manifest_path(manager.backup_dir, name)
    manifest = json.loads(path.read_text())
    manifest.update(created_at=created_at, tier=tier)
    path.write_text(json.dumps(manifest))


def test_retention_keeps_tiers_and_newest_verified(tmp_path):
    metrics = Metrics()
    manager = make_manager(tmp_path, metrics, BACKUP_RETENTION={"hourly": 2, "daily": 1, "weekly": 0})
    source = make_tree(tmp_path / "data")
    now = time.time() // 86400 * 86400 + 12 * 3600  # midday, so hours share a day
    for n in range(5):
        manager.create_backup_sync([str(source)], f"h{n}")
        _shift(manager, f"h{n}", now - (4 - n) * 3600)
    manager.create_backup_sync([str(source)], "manual")
    _shift(manager, "manual", now - 10 * 86400, tier="manual")
    verify = json.loads((manager.backup_dir / ".verify-state.json").read_text()) \
        if (manager.backup_dir / ".verify-state.json").exists() else {}
    assert verify == {}
    assert manager.verify_backup("h0")  # the only verified one: protected
    deleted = manager.apply_retention()
    assert sorted(deleted) == ["h1", "h2"]
    assert sorted(b["name"] for b in manager.list_backups()) == ["h0", "h3", "h4", "manual"]
    assert sample(metrics.registry, "bot_backups_retained", {"tier": "hourly"}) == 2
    assert sample(metrics.registry, "bot_backups_retained", {"tier": "daily"}) == 0


def test_retention_select_grandfather_father_son():
    day = 86400
    backups = [{"name": f"d{n}", "created_at": 1_700_000_000 - n * day, "tier": "daily"}
               for n in range(30)]
    kept = retention.select(backups, {"hourly": 0, "daily": 7, "weekly": 3})
    assert [n for n, t in kept.items() if t == "daily"] == [f"d{n}" for n in range(7)]
    weekly = [n for n, t in kept.items() if t == "weekly"]
    assert len(weekly) <= 3 and all(int(n[1:]) >= 7 for n in weekly)
    assert len(kept) == 7 + len(weekly)


def test_retention_keeps_the_backup_of_a_bucket_that_did_not_fail_verification():
    day = 1_700_006_400  # midnight UTC
    backups = [{"name": "early-good", "created_at": day + 3600, "tier": "daily", "verified": True},
               {"name": "late-corrupt", "created_at": day + 7200, "tier": "daily", "verified": False},
               {"name": "next-day", "created_at": day + 86400 + 60, "tier": "daily", "verified": None}]
    kept = retention.select(backups, {"hourly": 0, "daily": 2, "weekly": 0})
    assert sorted(kept) == ["early-good", "next-day"]


def test_enable_leaves_archives_it_did_not_write_and_temps_of_live_writers(tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    foreign = ["db-dump.tar", "photos-2019.tar.gz", "old-host.tar.zst", "notes.txt"]
    for name in foreign:
        (backup_dir / name).write_bytes(b"someone's data")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (backup_dir / f".b.tar.zst.tmp-{dead}").write_bytes(b"half a backup")  # its writer is gone
    (backup_dir / f".b.tar.zst.tmp-{os.getpid()}").write_bytes(b"being written")  # this process
    make_manager(tmp_path)
    assert sorted(os.listdir(backup_dir)) == sorted(foreign + [LOCK_FILE, f".b.tar.zst.tmp-{os.getpid()}"])


def test_with_a_key_set_an_unencrypted_backup_is_refused(tmp_path):
    source = make_tree(tmp_path / "data")
    make_manager(tmp_path).create_backup_sync([str(source)], "plain")
    keyed = make_manager(tmp_path, BACKUP_ENCRYPTION_KEY=KEY)
    with pytest.raises(BackupUnreadableError, match="not encrypted"):  # cannot read: not bad
        keyed.verify_backup_report("plain")
    assert read_catalog(keyed.backup_dir)[0]["verified"] is None
    with pytest.raises(IntegrityError, match="not encrypted"):
        keyed.restore_backup_sync("plain", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_damaged_manifest_is_skipped_by_the_listing(tmp_path):
    source = make_tree(tmp_path / "data")
    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(source)], "good")
    for name, change in (("noname", {"name": None}), ("badtime", {"created_at": "yesterday"})):
        manifest = json.loads((tmp_path / "backups" / "good.manifest.json").read_text())
        manifest.update(change)
        (tmp_path / "backups" / f"{name}.manifest.json").write_text(json.dumps(manifest))
    assert [b["name"] for b in manager.list_backups()] == ["good"]


def test_restoring_onto_a_file_is_an_error_naming_the_target(tmp_path):
    source = make_tree(tmp_path / "data")
    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(source)], "b")
    (tmp_path / "afile").write_text("in the way")
    with pytest.raises(BackupError, match=f"cannot restore to {tmp_path / 'afile' / 'out'}"):
        manager.restore_backup_sync("b", str(tmp_path / "afile" / "out"))


def test_the_backup_directory_reached_through_a_symlink_is_not_backed_up(tmp_path):
    source = make_tree(tmp_path / "srv")
    (source / "backups").mkdir()
    os.symlink(source, tmp_path / "link")
    manager = make_manager(tmp_path, BACKUP_DIR=str(tmp_path / "link" / "backups"))
    for name in ("b1", "b2"):
        manager.create_backup_sync([str(source)], name)
    manifest = json.loads((source / "backups" / "b2.manifest.json").read_text())
    assert not [entry["path"] for entry in manifest["files"] if "/backups" in entry["path"]]


def test_cleanup_old_backups_never_deletes_newest_verified(tmp_path):
    manager = make_manager(tmp_path)
    source = make_tree(tmp_path / "data")
    for n in range(3):
        manager.create_backup_sync([str(source)], f"b{n}")
        _shift(manager, f"b{n}", time.time() - (40 - n) * 86400, tier="manual")
    assert manager.verify_backup("b0")
    assert manager.cleanup_old_backups(30) == 2
    assert [b["name"] for b in manager.list_backups()] == ["b0"]


def test_catalog_lists_only_complete_backups_and_imports_cheaply(tmp_path):
    manager = make_manager(tmp_path)
    source = make_tree(tmp_path / "data")
    manager.create_backup_sync([str(source)], "good")
    (manager.backup_dir / "orphan.manifest.json").write_text(
        manifest_path(manager.backup_dir, "good").read_text().replace('"good', '"orphan'))
    (manager.backup_dir / ".half.tar.zst.tmp-1").write_bytes(b"x")
    assert [b["name"] for b in read_catalog(manager.backup_dir)] == ["good"]
    assert read_catalog(tmp_path / "does-not-exist") == []
    probe = ("import sys, exporter.backup_manager.catalog as c; "
             "print([m for m in ('zstandard', 'cryptography', 'sqlite3', 'tarfile') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def test_schedule_entry_and_in_process_scheduler(tmp_path):
    source = make_tree(tmp_path / "data")
    settings = make_settings(tmp_path, BACKUP_FREQUENCY="hourly", CRITICAL_BACKUP_PATHS=[str(source)])
    manager = BackupManager(settings, Metrics())
    entry = manager.create_backup_schedule()["opsstack-scheduled-backup"]
    assert entry["task"] == "exporter.backup_manager.scheduled_backup" and entry["schedule"] == 3600.0
    manager.enable()  # critical paths set: the scheduler starts and runs the first backup now
    try:
        backups = wait_until(manager.list_backups, timeout=20, what="the first scheduled backup")
        assert len(backups) == 1 and backups[0]["tier"] == "hourly"
        wait_until(lambda: read_catalog(manager.backup_dir)[0]["verified"] is not None, timeout=20,
                   what="the backup verified")
        assert read_catalog(manager.backup_dir)[0]["verified"] is True
        # the loop plans the next run once the job returns
        wait_until(lambda: manager.get_backup_stats()["next_scheduled"] >= backups[0]["created_at"] + 1,
                   timeout=20, what="the next run planned")
        assert manager.get_backup_stats()["next_scheduled"] == pytest.approx(
            backups[0]["created_at"] + 3600, abs=1)
    finally:
        manager.disable()
    probe = ("import sys; from exporter.backup_manager import backup_manager; "
             "backup_manager.create_backup_schedule(); print('celery' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr  # the beat entry needs no Celery import


def test_retention_keeps_the_newest_manual_backups_and_the_newest_verified(tmp_path):
    metrics = Metrics()
    manager = make_manager(tmp_path, metrics, BACKUP_RETENTION="manual=2")
    source = make_tree(tmp_path / "data")
    for n in range(5):
        manager.create_backup_sync([str(source)], f"m{n}")
        _shift(manager, f"m{n}", time.time() - (10 - n) * 60, tier="manual")
    assert manager.verify_backup("m0")
    assert manager.apply_retention(dry_run=True) == ["m1", "m2"]
    assert len(manager.list_backups()) == 5
    assert manager.apply_retention() == ["m1", "m2"]
    assert [b["name"] for b in manager.list_backups()] == ["m4", "m3", "m0"]
    assert sample(metrics.registry, "bot_backups_retained", {"tier": "manual"}) == 2
    assert retention.to_delete(read_catalog(manager.backup_dir), {"hourly": 1})[0] == []  # no count: kept


def test_verify_that_cannot_read_raises_and_records_nothing(tmp_path):
    """No key, the wrong key, a missing archive: an error naming the backup, and neither
    .verify-state.json nor bot_backup_last_verify_ok moves. Damage is still recorded."""
    metrics = Metrics()
    source = make_tree(tmp_path / "data")
    good = make_manager(tmp_path, metrics, BACKUP_ENCRYPTION_KEY=KEY)
    good.create_backup_sync([str(source)], "enc")
    good.create_backup_sync([str(source)], "gone")
    assert good.verify_backup("enc") is True
    state_file = good.backup_dir / ".verify-state.json"
    state_before = state_file.read_bytes()
    wrong_metrics, keyless_metrics = Metrics(), Metrics()
    wrong = make_manager(tmp_path, wrong_metrics, BACKUP_ENCRYPTION_KEY="1e" * 32)
    keyless = make_manager(tmp_path, keyless_metrics)
    wrong.metrics.backup_last_verify_ok.set(1)
    with pytest.raises(BackupUnreadableError, match="backup 'enc'.*wrong key"):
        wrong.verify_backup_report("enc")
    with pytest.raises(BackupUnreadableError, match="backup 'enc' is encrypted and BACKUP_ENCRYPTION_KEY is not set"):
        keyless.verify_backup_report("enc")
    Path(good.create_backup_sync([str(source)], "gone2")["archive"]).unlink()
    with pytest.raises(BackupError, match="gone2"):
        good.verify_backup_report("gone2")
    assert state_file.read_bytes() == state_before
    assert sample(wrong_metrics.registry, "bot_backup_last_verify_ok") == 1
    assert sample(wrong_metrics.registry, "bot_backup_verifications_total", {"outcome": "failure"}) == 0
    assert [b["verified"] for b in read_catalog(good.backup_dir) if b["name"] == "enc"] == [True]

    archive = good.backup_dir / "gone.tar.zst.enc"
    data = bytearray(archive.read_bytes())
    data[30] ^= 0x01  # inside the key check: damage, not a wrong key, since the sha256 differs
    archive.write_bytes(bytes(data))
    report = good.verify_backup_report("gone")
    assert report["ok"] is False and "does not match the sha256" in report["errors"][0]
    assert [b["verified"] for b in read_catalog(good.backup_dir) if b["name"] == "gone"] == [False]


def test_events_and_alerts_go_to_the_given_collaborators(tmp_path):
    recorder = Recorder()
    manager = BackupManager(make_settings(tmp_path), Metrics(), events=recorder, alerts=recorder)
    manager.enable(schedule=False)
    source = make_tree(tmp_path / "data")
    manager.create_backup_sync([str(source)], "first")
    with pytest.raises(BackupError):
        manager.create_backup_sync([str(source)], "-bad name")
    assert [event[:2] for event in recorder.events] == [("backup", "success"), ("backup", "failure")]
    assert [alert[:3] for alert in recorder.alerts] == [("backup_failed", "high", "Backup create failed")]
    assert recorder.alerts[0][4] == {"backup_name": "-bad name", "action": "create"}


def test_a_name_made_from_an_iso_timestamp_is_accepted(tmp_path):
    from datetime import datetime, timezone

    manager = make_manager(tmp_path)
    stamp = datetime(2026, 12, 4, 20, 55, 1, 123456, tzinfo=timezone.utc).isoformat()
    result = manager.create_backup_sync([str(make_tree(tmp_path / "data"))], f"backup_{stamp}")
    assert result["backup_name"] == "backup_2026-12-04T20-55-01.123456-00-00"
    with pytest.raises(BackupError, match="invalid backup name"):
        manager.create_backup_sync([str(tmp_path / "data")], "../escape")


def test_the_catalog_parses_a_manifest_again_only_when_it_changed(tmp_path, monkeypatch):
    from exporter.backup_manager import catalog

    manager = make_manager(tmp_path)
    source = make_tree(tmp_path / "data")
    for name in ("a", "b"):
        manager.create_backup_sync([str(source)], name)
    parsed = []
    real = catalog.read_manifest
    monkeypatch.setattr(catalog, "read_manifest", lambda path: parsed.append(Path(path).name) or real(path))
    first = read_catalog(manager.backup_dir)
    assert sorted(parsed) == ["a.manifest.json", "b.manifest.json"]
    parsed.clear()
    assert read_catalog(manager.backup_dir) == first and parsed == []  # a scrape: no JSON parsed
    _shift(manager, "b", time.time() - 3600, tier="manual")  # rewritten: parsed again
    again = read_catalog(manager.backup_dir)
    assert parsed == ["b.manifest.json"] and [b["name"] for b in again] == ["b", "a"]
    manager._delete("a")
    assert [b["name"] for b in read_catalog(manager.backup_dir)] == ["b"]


def test_archiving_as_the_walk_goes_writes_what_walking_first_does(tmp_path, monkeypatch):
    """Without a progress callback files are archived as the walk finds them; with one the
    walk comes first (the totals are told from the first call). Both give the same manifest:
    the same entries in the same order, the FIFO listed as skipped, and a directory that
    cannot be read fails the backup and leaves nothing behind either way."""
    from exporter.backup_manager import sources
    from exporter.backup_manager.writer import write_backup

    source = make_tree(tmp_path / "data")
    os.mkfifo(source / "media" / "pipe")
    calls = []
    made = {}
    for label, progress in (("streamed", None), ("walked", lambda *counts: calls.append(counts))):
        backup_dir = tmp_path / label
        backup_dir.mkdir()
        made[label] = write_backup(backup_dir=backup_dir, name=label, source_paths=[source], description="",
                                   tier="manual", compression="zstd", key=None, progress=progress)
    kept = ("path", "type", "size", "sha256", "mode", "link")
    assert [{k: r.get(k) for k in kept} for r in made["streamed"]["files"]] == \
        [{k: r.get(k) for k in kept} for r in made["walked"]["files"]]
    assert made["streamed"]["skipped"] == made["walked"]["skipped"] == ["data/media/pipe"]
    files_done, files_total, _bytes_done, bytes_total = calls[0]
    assert (files_done, files_total, bytes_total) == (0, 4, made["walked"]["total_bytes"])
    assert calls[-1][2] == calls[-1][3]

    real_scandir = os.scandir

    def unreadable(path):
        if os.path.basename(path) == "deep":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", unreadable)
    for progress in (None, lambda *counts: None):
        backup_dir = tmp_path / f"unreadable-{progress is None}"
        backup_dir.mkdir()
        with pytest.raises(BackupError, match="cannot read directory"):
            write_backup(backup_dir=backup_dir, name="x", source_paths=[source], description="",
                         tier="manual", compression="zstd", key=None, progress=progress)
        assert os.listdir(backup_dir) == []
