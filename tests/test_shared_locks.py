"""One backup of a set at a time across processes and hosts, through a real redis-server: a
second holder is refused with the first one named, a holder killed with SIGKILL blocks no longer
than SHARED_LOCK_TTL, a lock lost while held stops the backup before it is visible, and Redis
down leaves backups working on their local lock. Alerts: eight workers raising the same alert
send one notification carrying their count, and one still gathering at exit is kept."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from exporter.backup_manager import BackupManager
from exporter.errors import BackupLockedError, LockLostError
from exporter.metrics import Metrics
from exporter.shared_state import shared_locks
from tests.harness.base import free_port
from tests.probes import wait_until
from tests.test_backup_manager import ROOT, make_settings, make_tree

pytestmark = pytest.mark.services


def host(tmp_path, name: str, redis_url: str, **flags) -> BackupManager:
    """A manager on its own 'host': its own state, the shared BACKUP_DIR, the shared Redis."""
    settings = make_settings(tmp_path, STATE_DIR=str(tmp_path / f"state-{name}"), SHARED_LOCK_TTL=5,
                             **flags)
    settings = settings.replace(REDIS_URL=redis_url) if redis_url else settings
    manager = BackupManager(settings, Metrics(), shared_locks=shared_locks)
    manager.enable(schedule=False)
    return manager


@pytest.fixture
def redis_url(redis_server, request):
    return f"{redis_server.url}/{abs(hash(request.node.name)) % 16}"


def test_a_second_host_is_refused_while_the_first_backs_up(tmp_path, redis_url):
    source = make_tree(tmp_path / "data")
    first, second = host(tmp_path, "a", redis_url), host(tmp_path, "b", redis_url)
    inside, release = threading.Event(), threading.Event()

    def slow(*progress):
        inside.set()
        release.wait(30)

    worker = threading.Thread(target=first.create_backup_sync, args=([str(source)], "slow"),
                              kwargs={"progress": slow})
    worker.start()
    try:
        assert inside.wait(30)
        with pytest.raises(BackupLockedError, match=f"held by [0-9]+ {os.uname().nodename} {os.getpid()}"):
            second.create_backup_sync([str(source)], "refused")
    finally:
        release.set()
        worker.join(60)
    assert second.create_backup_sync([str(source)], "after")["backup_name"] == "after"
    assert [b["name"] for b in second.list_backups()] == ["after", "slow"]


def test_a_holder_killed_with_sigkill_blocks_no_longer_than_the_ttl(tmp_path, redis_url):
    source = make_tree(tmp_path / "data")
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from tests.test_shared_locks import host
        manager = host(Path({str(tmp_path)!r}), "killed", {redis_url!r})
        manager.create_backup_sync([{str(source)!r}], "killed",
                                   progress=lambda *a: os.kill(os.getpid(), signal.SIGKILL))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    killed_at = time.monotonic()
    other = host(tmp_path, "b", redis_url)
    with pytest.raises(BackupLockedError, match="killed|held by"):
        other.create_backup_sync([str(source)], "too-early")

    def backed_up() -> bool:
        try:
            other.create_backup_sync([str(source)], "after-expiry")
        except BackupLockedError:
            return False
        return True

    wait_until(backed_up, timeout=killed_at + 5 + 10 - time.monotonic(), what="the dead holder's lock to expire",
               interval=0.25)
    assert time.monotonic() - killed_at >= 3  # not taken before the lock expired (TTL 5 s)
    assert [b["name"] for b in other.list_backups()] == ["after-expiry"]


@pytest.mark.parametrize("how", ["taken over", "flushed"])
def test_a_lock_lost_while_held_stops_the_backup_before_it_shows(tmp_path, redis_url, redis_server, how):
    import redis

    source = make_tree(tmp_path / "data")
    manager = host(tmp_path, "a", redis_url)
    client = redis.Redis.from_url(redis_url)

    def steal(*progress):  # another holder after an expiry (e.g. this one paused too long), or FLUSHALL
        for key in client.scan_iter("opsstack:lock:backup:*"):
            if how == "flushed":
                client.flushdb()
            else:
                client.set(key, "999 elsewhere 1")
            time.sleep(2.5)  # the keeper renews every TTL/3 and finds it gone

    with pytest.raises(LockLostError, match="expired or was taken over"):
        manager.create_backup_sync([str(source)], "lost", progress=steal)
    assert manager.list_backups() == []
    assert not [p for p in os.listdir(manager.backup_dir) if ".tmp-" in p]


def test_redis_down_leaves_backups_on_their_local_lock(tmp_path, caplog):
    source = make_tree(tmp_path / "data")
    manager = host(tmp_path, "a", f"redis://127.0.0.1:{free_port()}/0")
    assert manager.create_backup_sync([str(source)], "local")["backup_name"] == "local"
    assert "going on with the local lock only" in caplog.text


WORKER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from exporter.alert_manager import AlertManager
    from exporter.channels import CHANNELS
    from exporter.config import load_settings
    from exporter.metrics import Metrics
    from exporter.shared_state import shared_locks
    flags = {{"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": sys.argv[1], "ALERT_CHANNELS": {{"high": ["telegram"]}},
             "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_URL": {api!r}}}
    settings = load_settings(flags, environ={{"TELEGRAM_BOT_TOKEN": {token!r}, **{redis}}})
    manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                           shared_marks=shared_locks)
    manager.enable(settings)
    open(sys.argv[1] + ".ready", "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists({gate!r}) and time.monotonic() < deadline:  # all raise at about once
        time.sleep(0.01)
    manager.trigger_alert_sync("download_failed", "high", "Downloads failing", "peer reset the connection")
    assert manager.flush(30)
    manager.disable()
""")


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "no redis"])
def test_eight_workers_raising_the_same_alert_notify_once_with_their_count(tmp_path, redis_url, telegram_api,
                                                                          shared):
    gate = tmp_path / "go"
    script = WORKER.format(root=str(ROOT), api=telegram_api.url, token=telegram_api.token, gate=str(gate),
                           redis=repr({"REDIS_URL": redis_url} if shared else {}))
    workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"state-{n}")],
                                stderr=subprocess.PIPE, text=True) for n in range(8)]
    wait_until(lambda: len(list(tmp_path.glob("state-*.ready"))) == 8 or any(w.poll() for w in workers),
               timeout=120, what="eight workers ready")
    gate.touch()
    for worker in workers:
        assert worker.wait(120) == 0, worker.stderr.read()
    texts = [m["text"] for m in telegram_api.messages]
    assert all("Downloads failing" in text for text in texts)
    assert len(texts) == (1 if shared else 8)  # without shared state every worker sends its own
    assert ("repeated 8 times" in texts[0]) is shared


def test_a_notification_still_gathering_at_exit_is_kept_for_the_next_start(tmp_path, redis_url, telegram_api):
    from exporter.alert_manager import AlertManager
    from exporter.channels import CHANNELS
    from exporter.config import load_settings

    flags = {"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state"), "ALERT_SHARED_GATHER": 30,
             "ALERT_CHANNELS": {"high": ["telegram"]}, "TELEGRAM_CHAT_ID": "42",
             "TELEGRAM_API_URL": telegram_api.url}
    settings = load_settings(flags, environ={"TELEGRAM_BOT_TOKEN": telegram_api.token, "REDIS_URL": redis_url})

    def manager() -> AlertManager:
        made = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                            shared_marks=shared_locks)
        made.enable(settings)
        return made

    first = manager()
    first.trigger_alert_sync("download_failed", "high", "Downloads failing", "gathering at exit")
    assert not first.flush(0.5)  # waiting for the other workers' count
    first.disable(timeout=0.1)
    assert telegram_api.messages == []
    second = manager()
    try:
        assert second.flush(30)
    finally:
        second.disable()
    assert [m["text"].count("Downloads failing") for m in telegram_api.messages] == [1]


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "no redis"])
def test_the_rate_limit_of_a_channel_holds_for_all_workers_together(tmp_path, redis_url, telegram_api, shared):
    from exporter.alert_manager import AlertManager
    from exporter.channels import CHANNELS
    from exporter.config import load_settings

    environ = {"TELEGRAM_BOT_TOKEN": telegram_api.token, **({"REDIS_URL": redis_url} if shared else {})}
    managers = []
    for n in range(2):
        flags = {"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / f"state-{n}"), "ALERT_RATE_LIMIT": 2,
                 "ALERT_SHARED_GATHER": 0.01, "ALERT_CHANNELS": {"high": ["telegram"]},
                 "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_URL": telegram_api.url}
        manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                               shared_marks=shared_locks)
        manager.enable(load_settings(flags, environ=environ))
        managers.append(manager)
    try:
        for n, manager in enumerate(managers):
            for k in range(3):  # distinct alerts (task ids): none folded into another
                manager.trigger_alert_sync("download_failed", "high", "Downloads failing", "peer reset",
                                           task_id=f"worker-{n}-file-{k}")

        def totals() -> tuple[int, int]:
            stats = [m.channel_stats()["telegram"] for m in managers]
            return sum(s["delivered"] for s in stats), sum(s["pending"] for s in stats)

        # 2 a minute for both together with Redis; 2 a minute each without
        expected = (2, 4) if shared else (4, 2)
        wait_until(lambda: totals() == expected, timeout=30, what=f"delivered and pending {expected}")
        assert len(telegram_api.messages) == expected[0]
    finally:
        for manager in managers:
            manager.disable(timeout=0.1)


def test_without_redis_a_notification_is_not_held_back(tmp_path, telegram_api):
    from exporter.alert_manager import AlertManager
    from exporter.channels import CHANNELS
    from exporter.config import load_settings

    flags = {"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state"), "ALERT_SHARED_GATHER": 60,
             "ALERT_CHANNELS": {"high": ["telegram"]}, "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_URL": telegram_api.url}
    manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                           shared_marks=shared_locks)
    manager.enable(load_settings(flags, environ={"TELEGRAM_BOT_TOKEN": telegram_api.token}))
    try:
        manager.trigger_alert_sync("download_failed", "high", "Downloads failing", "peer reset")
        assert manager.flush(30)  # not 60 s: there is nobody to gather a count from
    finally:
        manager.disable()
    assert len(telegram_api.messages) == 1


def test_redis_down_every_alert_is_notified_and_said_once(tmp_path, telegram_api, caplog):
    from exporter.alert_manager import AlertManager
    from exporter.channels import CHANNELS
    from exporter.config import load_settings

    caplog.set_level(logging.WARNING, "exporter.shared_state")
    flags = {"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state"), "ALERT_SHARED_GATHER": 0.01,
             "ALERT_CHANNELS": {"high": ["telegram"]}, "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_URL": telegram_api.url}
    environ = {"TELEGRAM_BOT_TOKEN": telegram_api.token, "REDIS_URL": f"redis://:pw-down@127.0.0.1:{free_port()}/0"}
    manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                           shared_marks=shared_locks)
    manager.enable(load_settings(flags, environ=environ))
    try:
        for k in range(3):
            manager.trigger_alert_sync("download_failed", "high", "Downloads failing", "peer reset", task_id=f"t{k}")
        assert manager.flush(30)
    finally:
        manager.disable()
    assert len(telegram_api.messages) == 3
    said = [r.getMessage() for r in caplog.records if r.name == "exporter.shared_state"]
    assert len(said) == 1 and "notified by every worker" in said[0] and "pw-down" not in said[0]
