"""The backup catalog mirrored in a real redis-server: every process and host reads it from there,
and the files stay the source of truth. A backup made, verified or deleted by another host shows
up; a change Redis never heard of (a process killed before it told Redis, a host without
REDIS_URL) is seen through the directory's stamp; FLUSHALL, a planted stale copy and Redis down
all give the files' answer."""
from __future__ import annotations

import logging
import os

import pytest

from exporter.backup_manager import BackupManager, catalog, read_catalog
from exporter.backup_manager.catalog import set_name
from exporter.metrics import Metrics
from exporter.shared_state import catalog_mirror, shared_locks
from tests.harness.base import free_port
from tests.test_backup_manager import make_settings, make_tree

pytestmark = pytest.mark.services


@pytest.fixture
def redis_url(redis_server, request):
    return f"{redis_server.url}/{abs(hash(request.node.name)) % 16}"


@pytest.fixture
def client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def host(tmp_path, name: str, redis_url: str | None) -> BackupManager:
    """A manager on its own 'host': its own state, the shared BACKUP_DIR and Redis."""
    settings = make_settings(tmp_path, STATE_DIR=str(tmp_path / f"state-{name}"))
    settings = settings.replace(REDIS_URL=redis_url) if redis_url else settings
    manager = BackupManager(settings, Metrics(), shared_locks=shared_locks, catalog_mirror=catalog_mirror)
    manager.enable(schedule=False)
    return manager


@pytest.fixture
def file_reads(monkeypatch):
    """How many times the catalog was read from the files (each a listdir and a stat per manifest)."""
    reads = []
    real = catalog._read_files
    monkeypatch.setattr(catalog, "_read_files", lambda directory: reads.append(directory) or real(directory))
    return reads


def names(manager: BackupManager) -> list[str]:
    return [b["name"] for b in manager.list_backups()]


def test_another_host_reads_the_catalog_from_redis(tmp_path, redis_url, client, file_reads):
    source = make_tree(tmp_path / "data")
    a, b = host(tmp_path, "a", redis_url), host(tmp_path, "b", redis_url)
    a.create_backup_sync([str(source)], "first")
    assert a.verify_backup("first")
    truth = list(reversed(read_catalog(a.backup_dir)))
    catalog._lean_manifests.clear()  # b parses nothing on its own: a fresh process
    file_reads.clear()
    assert b.list_backups() == truth  # rebuilt once from the files, then mirrored
    assert len(file_reads) == 1
    assert b.list_backups() == truth and b.get_backup_stats()["newest_verified"] == "first"
    assert len(file_reads) == 1  # served from Redis
    assert truth[0]["verified"] is True and truth[0]["verified_at"] > 0
    stored = client.get(f"opsstack:catalog:{set_name(a.backup_dir)}")
    assert stored is not None and b'"first"' in stored


def test_a_backup_made_verified_or_deleted_by_another_host_shows_up(tmp_path, redis_url, client):
    source = make_tree(tmp_path / "data")
    a, b = host(tmp_path, "a", redis_url), host(tmp_path, "b", redis_url)
    a.create_backup_sync([str(source)], "one")
    assert names(b) == ["one"]
    a.create_backup_sync([str(source)], "two")
    assert names(b) == ["two", "one"]
    assert a.verify_backup("one")
    assert [x["verified"] for x in b.list_backups()] == [None, True]
    assert a.delete_old_backups(0) == ["two"]  # "one" is the newest verified: kept
    assert names(b) == ["one"] and b.get_backup_stats()["count"] == 1


def test_changes_redis_never_heard_of_are_seen_through_the_directory(tmp_path, redis_url, client, file_reads):
    source = make_tree(tmp_path / "data")
    a, b = host(tmp_path, "a", redis_url), host(tmp_path, "b", redis_url)
    a.create_backup_sync([str(source)], "one")
    assert names(b) == ["one"]
    offline = host(tmp_path, "offline", None)  # no REDIS_URL: like a process killed before its INCR
    offline.create_backup_sync([str(source)], "quiet")
    generation = client.get(f"opsstack:catalog-gen:{set_name(a.backup_dir)}")
    file_reads.clear()
    assert names(b) == ["quiet", "one"] and len(file_reads) == 1
    os.unlink(a.backup_dir / "one.tar.zst")  # an archive removed by hand
    assert names(b) == ["quiet"]
    assert client.get(f"opsstack:catalog-gen:{set_name(a.backup_dir)}") == generation


def test_a_flushed_or_stale_mirror_is_rebuilt_from_the_files(tmp_path, redis_url, client, file_reads):
    source = make_tree(tmp_path / "data")
    a, b = host(tmp_path, "a", redis_url), host(tmp_path, "b", redis_url)
    a.create_backup_sync([str(source)], "one")
    truth = b.list_backups()
    key = f"opsstack:catalog:{set_name(a.backup_dir)}"
    client.flushdb()
    file_reads.clear()
    assert b.list_backups() == truth and len(file_reads) == 1
    assert client.exists(key)
    copy = client.get(key).replace(b'"one"', b'"ghost"')  # a copy of an older generation
    client.set(key, copy)
    client.incr(f"opsstack:catalog-gen:{set_name(a.backup_dir)}")
    assert names(b) == ["one"]
    client.set(key, b"{not json")
    assert names(b) == ["one"]


def test_redis_down_reads_the_files_and_says_so_once(tmp_path, caplog):
    source = make_tree(tmp_path / "data")
    manager = host(tmp_path, "a", f"redis://127.0.0.1:{free_port()}/0")
    caplog.set_level(logging.WARNING, "exporter.shared_state")
    manager.create_backup_sync([str(source)], "local")
    assert names(manager) == ["local"] and manager.get_backup_stats()["count"] == 1
    warnings = [r.getMessage() for r in caplog.records if "backup catalog" in r.getMessage()]
    assert len(warnings) == 1 and "the backup files are read instead" in warnings[0]
    assert "127.0.0.1" not in warnings[0]


def test_a_hanging_redis_delays_a_listing_by_the_catalogs_short_timeout_only(tmp_path):
    """A Redis that accepts and never answers (suspended, a peer gone without a reset): a new
    process's start and listing give it up after the catalog's 0.5 s, not the client's usual 3 s,
    and read the files."""
    import time

    from exporter.shared_state.catalog import TIMEOUT
    from tests.harness.hanging import HangingServer

    source = make_tree(tmp_path / "data")
    host(tmp_path, "a", None).create_backup_sync([str(source)], "one")
    hanging = HangingServer().start()
    try:
        started = time.monotonic()
        assert names(host(tmp_path, "b", f"redis://127.0.0.1:{hanging.port}/0")) == ["one"]
        waited = time.monotonic() - started
    finally:
        hanging.stop()
    assert hanging.connections >= 1  # it did ask Redis
    assert TIMEOUT <= waited < TIMEOUT + 1.5  # the 3 s of the locks' client would miss this


def test_each_process_sees_the_paths_under_its_own_name_of_the_directory(tmp_path, redis_url, client):
    source = make_tree(tmp_path / "data")
    a = host(tmp_path, "a", redis_url)
    a.create_backup_sync([str(source)], "one")
    assert names(a) == ["one"]  # mirrored with a's paths
    os.symlink(tmp_path / "backups", tmp_path / "alias")
    settings = make_settings(tmp_path, BACKUP_DIR=str(tmp_path / "alias"), REDIS_URL=redis_url)
    b = BackupManager(settings, Metrics(), catalog_mirror=catalog_mirror)
    b.enable(schedule=False)
    listed = b.list_backups()[0]
    assert listed["archive"] == str(tmp_path / "alias" / "one.tar.zst")
    assert listed["manifest"] == str(tmp_path / "alias" / "one.manifest.json")


def test_backup_list_and_stats_of_the_cli_read_the_mirror(tmp_path, redis_url, client, monkeypatch, capsys):
    import json

    from exporter.cli import main

    source = make_tree(tmp_path / "data")
    a = host(tmp_path, "a", redis_url)
    a.create_backup_sync([str(source)], "one")
    assert a.verify_backup("one")
    a.list_backups()  # mirrored
    for name in ("OPSSTACK_CONFIG", "BACKUP_ENCRYPTION_KEY", "BACKUP_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BACKUP_DIR", str(a.backup_dir))
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state-cli"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    reads = []
    monkeypatch.setattr(catalog, "_read_files", lambda directory: reads.append(directory) or [])
    assert main(["backup", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(b["name"], b["verified"]) for b in listed] == [("one", True)] and reads == []
    assert main(["backup", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["newest_verified"] == "one" and reads == []
