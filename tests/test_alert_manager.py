"""The alert manager with in-process channels (no services): dedup, lanes, retries, history."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from exporter.alert_manager import (Alert, AlertManager, AlertSeverity, AlertType, fingerprint,
                                    normalise_message, read_history)
from exporter.channels import CHANNELS
from exporter.config import load_settings
from exporter.errors import AlertError, ChannelConfigError, DeliveryError, NotEnabledError
from exporter.metrics import Metrics
from tests.probes import wait_until

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingChannel:
    """A channel that records, fails ``fail`` times first, or hangs until ``release`` is set."""

    def __init__(self, name: str = "webhook", fail: int = 0, hang: bool = False) -> None:
        self.name = name
        self.sent: list[Alert] = []
        self.resolved: list[Alert] = []
        self.fail = fail
        self.hang = hang
        self.release = threading.Event()

    async def _maybe_fail(self) -> None:
        if self.hang:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        if self.fail > 0:
            self.fail -= 1
            raise DeliveryError(f"{self.name}: receiver down")

    async def send(self, alert: Alert) -> None:
        await self._maybe_fail()
        self.sent.append(alert)

    async def send_resolved(self, alert: Alert) -> None:
        await self._maybe_fail()
        self.resolved.append(alert)

    async def close(self) -> None:
        pass


def make_settings(tmp_path, **flags):
    base = {"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state")}
    base.update(flags)
    return load_settings(base, environ={})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def manager_with(metrics, channels: dict | None = None, **options) -> AlertManager:
    factories = {**CHANNELS, **{name: (lambda settings, ch=channel: ch) for name, channel in (channels or {}).items()}}
    options.setdefault("monitor_resources", False)
    options.setdefault("retry_base", 0.05)
    options.setdefault("retry_max", 0.2)
    return AlertManager(metrics=metrics, channel_factories=factories, **options)


def value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def running(tmp_path, metrics):
    started = []

    def start(channels=None, flags=None, **options):
        manager = manager_with(metrics, channels, **options)
        manager.enable(make_settings(tmp_path, **(flags or {})))
        started.append(manager)
        return manager

    yield start
    for manager in started:
        manager.disable(timeout=0.5)


# --------------------------------------------------------------------------- disabled, bad input


def test_disabled_manager_does_nothing_and_opens_nothing(tmp_path, metrics):
    manager = manager_with(metrics)
    assert manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m") is None
    assert asyncio.run(manager.trigger_alert(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m")) is None
    assert manager.resolve_alert("nothing") is None
    with pytest.raises(NotEnabledError):
        manager.get_alerts()
    assert not (tmp_path / "state").exists()
    assert value(metrics, "bot_alerts_total", type="custom", severity="low") == 0


def test_bad_names_and_callbacks_are_refused_clearly(running):
    manager = running()
    with pytest.raises(AlertError, match="'disk_fill'"):
        manager.subscribe("disk_fill", print)
    with pytest.raises(TypeError, match="callable"):
        manager.subscribe(AlertType.DISK_FULL, "not a function")
    with pytest.raises(TypeError, match="callable"):
        manager.register_handler(42)
    with pytest.raises(AlertError, match="'urgent'"):
        asyncio.run(manager.trigger_alert(AlertType.CUSTOM, "urgent", "t", "m"))
    # the sync form never raises: it logs and returns None
    assert manager.trigger_alert_sync("nope", AlertSeverity.LOW, "t", "m") is None
    # names are accepted in any case, by value or by member name
    alert = manager.trigger_alert_sync("Disk_Full", "CRITICAL", "t", "m")
    assert alert.type is AlertType.DISK_FULL and alert.severity is AlertSeverity.CRITICAL


def test_unknown_severity_in_settings_names_the_value(tmp_path):
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError, match="'urgent'"):
        make_settings(tmp_path, ALERT_CHANNELS={"urgent": ["log"]})
    with pytest.raises(ConfigError, match="'pager'"):
        make_settings(tmp_path, ALERT_CHANNELS={"critical": ["pager"]})


@pytest.mark.parametrize("channel,key", [
    ("telegram", "TELEGRAM_BOT_TOKEN"), ("email", "SMTP_HOST"), ("webhook", "ALERT_WEBHOOK_URL"),
    ("slack", "SLACK_WEBHOOK_URL"), ("alertmanager", "ALERTMANAGER_URL"), ("discord", "DISCORD_WEBHOOK_URL"),
])
def test_misconfigured_channel_names_channel_and_key(tmp_path, metrics, channel, key):
    manager = AlertManager(metrics=metrics, channel_factories=CHANNELS, monitor_resources=False)
    with pytest.raises(ChannelConfigError) as caught:
        manager.enable(make_settings(tmp_path, ALERT_CHANNELS={"critical": [channel]}))
    assert caught.value.key == key
    assert channel in str(caught.value) and key in str(caught.value)
    assert not manager.enabled


def test_telegram_needs_chat_id_too(tmp_path, metrics):
    settings = load_settings({"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path),
                              "ALERT_CHANNELS": {"high": ["telegram"]}},
                             environ={"TELEGRAM_BOT_TOKEN": "123:abc"})
    with pytest.raises(ChannelConfigError, match="TELEGRAM_CHAT_ID"):
        AlertManager(metrics=metrics, channel_factories=CHANNELS, monitor_resources=False).enable(settings)


# --------------------------------------------------------------------------- files


def test_state_files_are_private(running, tmp_path):
    manager = running()
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m")
    assert manager.flush(5)
    manager.disable()
    state = tmp_path / "state"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for name in ("alerts.jsonl", "alert_outbox.jsonl"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600


# --------------------------------------------------------------------------- dedup


def test_normalised_message_and_fingerprint():
    assert normalise_message("Retry  after 3 s for ID 9f8e7d6c5b4a") == "retry after <n> s for id <id>"
    a = fingerprint(AlertType.RATE_LIMITED, "retry after 3 s")
    assert a == fingerprint(AlertType.RATE_LIMITED, "Retry after 15 s")
    assert a != fingerprint(AlertType.API_ERROR, "retry after 3 s")
    assert a != fingerprint(AlertType.RATE_LIMITED, "retry after 3 s", task_id="t1")


def test_repeats_inside_the_window_are_counted_not_resent(running, metrics):
    clock = Clock()
    channel = RecordingChannel()
    manager = running({"webhook": channel}, {"ALERT_CHANNELS": {"high": ["webhook"]}, "ALERT_DEDUP_WINDOW": 60},
                      clock=clock)
    seen = []
    manager.subscribe(AlertType.RATE_LIMITED, seen.append)
    first = manager.trigger_alert_sync(AlertType.RATE_LIMITED, AlertSeverity.HIGH, "429", "retry after 3 s")
    for seconds in range(4, 10):
        clock.now += 1
        again = manager.trigger_alert_sync(AlertType.RATE_LIMITED, AlertSeverity.HIGH, "429",
                                           f"retry after {seconds} s")
    assert manager.flush(5)
    assert again.id == first.id and again.repeat_count == 7
    assert again.first_seen == first.first_seen and again.last_seen == first.first_seen + 6
    assert len(channel.sent) == 1 and len(seen) == 1
    assert value(metrics, "bot_alerts_deduplicated_total", type="rate_limited") == 6
    assert value(metrics, "bot_alerts_total", type="rate_limited", severity="high") == 7
    # after the window the same problem is sent again, with its count
    clock.now += 61
    manager.trigger_alert_sync(AlertType.RATE_LIMITED, AlertSeverity.HIGH, "429", "retry after 1 s")
    assert manager.flush(5)
    assert len(channel.sent) == 2 and channel.sent[1].repeat_count == 8
    # a higher severity is sent at once
    manager.trigger_alert_sync(AlertType.RATE_LIMITED, AlertSeverity.CRITICAL, "429", "retry after 1 s")
    assert manager.flush(5)
    assert len(seen) == 3 and seen[-1].severity is AlertSeverity.CRITICAL
    assert value(metrics, "bot_alerts_active", severity="critical") == 1
    assert value(metrics, "bot_alerts_active", severity="high") == 0


def test_other_task_is_another_alert(running):
    manager = running()
    a = manager.trigger_alert_sync(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "t", "reset", task_id="d1")
    b = manager.trigger_alert_sync(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "t", "reset", task_id="d2")
    assert a.id != b.id
    assert len(manager.get_alerts()) == 2


# --------------------------------------------------------------------------- subscribers


async def test_async_subscriber_runs_on_the_callers_loop_and_handlers_see_every_type(running):
    manager = running()
    loop = asyncio.get_running_loop()
    seen_loops, handled = [], []

    async def on_failed(alert):
        seen_loops.append(asyncio.get_running_loop())

    manager.subscribe(AlertType.DOWNLOAD_FAILED, on_failed)
    manager.register_handler(lambda alert: handled.append(alert.type))
    await manager.trigger_alert(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "Download failed", "reset")
    await manager.trigger_alert(AlertType.API_ERROR, AlertSeverity.MEDIUM, "API", "502")
    assert await manager.wait_idle(5)
    assert seen_loops == [loop]
    assert sorted(handled) == [AlertType.API_ERROR, AlertType.DOWNLOAD_FAILED]
    assert manager.unsubscribe(AlertType.DOWNLOAD_FAILED, on_failed)
    await manager.trigger_alert(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "Download failed", "other")
    assert await manager.wait_idle(5)
    assert len(seen_loops) == 1


def test_raising_and_hanging_subscribers_do_not_stop_the_others(running, metrics):
    manager = running(callback_timeout=0.2)
    good, release = [], threading.Event()

    def broken(alert):
        raise RuntimeError("subscriber bug")

    async def hangs(alert):
        await asyncio.sleep(3600)

    manager.subscribe(AlertType.CUSTOM, broken)
    manager.subscribe(AlertType.CUSTOM, hangs)
    manager.subscribe(AlertType.CUSTOM, lambda alert: release.wait(10))  # blocks a pool thread
    manager.subscribe(AlertType.CUSTOM, good.append)
    for index in ("one", "two"):
        assert manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, index, index) is not None
    wait_until(lambda: len(good) >= 2, what="both alerts at the good subscriber")
    assert [alert.title for alert in good] == ["one", "two"]
    assert manager.flush(10)
    release.set()
    # two raises, two hangs, two blocked sync calls
    assert value(metrics, "bot_alert_callback_errors_total") == 6


def test_a_hanging_sync_subscriber_holds_up_only_its_own_lane(running, metrics):
    manager = running(callback_timeout=0.1)
    stuck, good = threading.Event(), []
    manager.subscribe(AlertType.DOWNLOAD_FAILED, lambda alert: stuck.wait(30))
    manager.subscribe(AlertType.BACKUP_FAILED, good.append)
    try:
        for index in range(6):  # more hanging calls than a small shared pool would have threads
            manager.trigger_alert_sync(AlertType.DOWNLOAD_FAILED, AlertSeverity.LOW, "dl", f"file {'x' * index}")
            # the call timed out and its thread is left hanging before the next one comes
            wait_until(lambda: value(metrics, "bot_alert_callback_errors_total") >= index + 1, what="the timeout")
        manager.trigger_alert_sync(AlertType.BACKUP_FAILED, AlertSeverity.HIGH, "backup", "broke")
        wait_until(lambda: good, timeout=5, what="the backup alert at its subscriber")
        assert [alert.title for alert in good] == ["backup"]
    finally:
        stuck.set()


def test_a_hanging_sync_subscriber_does_not_hold_up_the_exit(tmp_path):
    script = f"""
import threading, time
from exporter.alert_manager import AlertManager, AlertSeverity, AlertType
from exporter.channels import CHANNELS
from exporter.config import load_settings
from exporter.metrics import Metrics
manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False, callback_timeout=0.1)
manager.enable(load_settings({{"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": {str(tmp_path / "state")!r}}}, environ={{}}))
called = threading.Event()
manager.subscribe(AlertType.CUSTOM, lambda alert: called.set() or time.sleep(60))
manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m")
assert called.wait(10)
manager.disable(timeout=0.5)
"""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.monotonic() - started < 15  # the stuck call sleeps 60 s; exit must not wait for it


# --------------------------------------------------------------------------- channels, retries, limits


def test_routes_by_severity_and_resolve_reaches_the_same_channels(running, metrics):
    critical, info = RecordingChannel("telegram"), RecordingChannel("webhook")
    manager = running({"telegram": critical, "webhook": info},
                      {"ALERT_CHANNELS": {"critical": ["telegram"], "low": ["webhook"], "high": [],
                                          "medium": []}})
    disk = manager.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.CRITICAL, "Disk", "1% free")
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "FYI", "note")
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.HIGH, "nobody", "no channel")
    assert value(metrics, "bot_alerts_active", severity="critical") == 1
    resolved = manager.resolve_alert(disk.id)
    assert disk.first_seen <= resolved.resolved_at <= time.time()
    assert manager.resolve_alert(disk.id) is None
    assert manager.flush(5)
    assert [a.title for a in critical.sent] == ["Disk"] and [a.title for a in critical.resolved] == ["Disk"]
    assert [a.title for a in info.sent] == ["FYI"] and info.resolved == []
    assert value(metrics, "bot_alerts_active", severity="critical") == 0
    assert value(metrics, "bot_alert_notifications_total", channel="telegram", outcome="success") == 2
    # a resolved problem that comes back is a new alert
    again = manager.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.CRITICAL, "Disk", "1% free")
    assert again.id != disk.id


def test_failed_delivery_is_retried_with_backoff(running, metrics):
    channel = RecordingChannel(fail=3)
    manager = running({"webhook": channel}, {"ALERT_CHANNELS": {"high": ["webhook"]}})
    manager.trigger_alert_sync(AlertType.UPLOAD_FAILED, AlertSeverity.HIGH, "Upload failed", "timeout")
    assert manager.flush(10)
    assert len(channel.sent) == 1
    assert value(metrics, "bot_alert_notifications_total", channel="webhook", outcome="failure") == 3
    assert value(metrics, "bot_alert_notifications_total", channel="webhook", outcome="success") == 1
    assert value(metrics, "bot_alert_delivery_queue_size") == 0


def test_rate_limit_holds_messages_back(running):
    channel = RecordingChannel()
    manager = running({"webhook": channel}, {"ALERT_CHANNELS": {"high": ["webhook"]}, "ALERT_RATE_LIMIT": 3})
    for index in range(6):
        manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.HIGH, "API", f"error {index}",
                                   task_id=f"call-{index}")
    assert not manager.flush(1.0)
    assert len(channel.sent) == 3
    assert manager.channel_stats()["webhook"] == {"delivered": 3, "pending": 3}


def test_pending_notifications_survive_a_restart(tmp_path, metrics):
    down = RecordingChannel(fail=10**6)
    flags = {"ALERT_CHANNELS": {"critical": ["webhook"]}}
    first = manager_with(metrics, {"webhook": down})
    first.enable(make_settings(tmp_path, **flags))
    for index in range(3):
        first.trigger_alert_sync(AlertType.BACKUP_FAILED, AlertSeverity.CRITICAL, "Backup failed",
                                 f"disk error on volume {index}", task_id=f"b{index}")
    assert not first.flush(0.5)
    first.disable(timeout=0.2)
    saved = (tmp_path / "state" / "alert_outbox.jsonl").read_text().splitlines()
    assert len(saved) == 3 and all(json.loads(line)["channel"] == "webhook" for line in saved)

    up = RecordingChannel()
    second = manager_with(Metrics(), {"webhook": up})
    second.enable(make_settings(tmp_path, **flags))
    try:
        assert second.flush(5)
        assert sorted(a.task_id for a in up.sent) == ["b0", "b1", "b2"]
        assert len(second.get_alerts()) == 3  # the history came back too
    finally:
        second.disable()
    assert (tmp_path / "state" / "alert_outbox.jsonl").read_text() == ""


def test_the_outbox_encodes_again_only_the_jobs_that_changed(tmp_path, monkeypatch):
    from collections import deque
    from types import SimpleNamespace

    from exporter.alert_manager import delivery

    outbox = delivery.Outbox(tmp_path / "alert_outbox.jsonl")
    lane = SimpleNamespace(jobs=deque(delivery.Job(channel="webhook", kind="firing", alert={"n": index},
                                                   created=1.0) for index in range(3)))
    outbox.lanes["webhook"] = lane
    encoded = []
    real_dumps = delivery.json.dumps
    monkeypatch.setattr(delivery.json, "dumps", lambda value, **options: encoded.append(value["alert"]["n"])
                        or real_dumps(value, **options))

    def saved() -> list[tuple[int, int, float]]:
        jobs = delivery.Outbox(tmp_path / "alert_outbox.jsonl").load()
        return [(job.alert["n"], job.attempts, job.next_at) for job in jobs]

    outbox.save()
    assert encoded == [0, 1, 2] and saved() == [(0, 0, 0.0), (1, 0, 0.0), (2, 0, 0.0)]
    lane.jobs.popleft()  # delivered
    lane.jobs[0].attempts, lane.jobs[0].next_at = 1, 5.5  # failed once, retried later
    lane.jobs.append(delivery.Job(channel="webhook", kind="firing", alert={"n": 3}, created=2.0))
    encoded.clear()
    outbox.save()
    assert encoded == [1, 3] and saved() == [(1, 1, 5.5), (2, 0, 0.0), (3, 0, 0.0)]
    lane.jobs[1].next_at = 0.0  # unchanged: retry_now on a job that was not waiting
    lane.jobs[2].next_at = 0.25
    encoded.clear()
    outbox.save()
    assert encoded == [3] and saved() == [(1, 1, 5.5), (2, 0, 0.0), (3, 0, 0.25)]


def test_the_outbox_fsyncs_a_save_that_adds_a_job_only(tmp_path, monkeypatch):
    """A new job is on the disk when the save returns; a delivery (a done line) or a failed
    attempt (its retry state) is written without an fsync: lost only to a machine crash, which
    then sends a notification again rather than losing one."""
    from collections import deque
    from types import SimpleNamespace

    from exporter.alert_manager import delivery

    path = tmp_path / "alert_outbox.jsonl"
    outbox = delivery.Outbox(path)
    lane = SimpleNamespace(jobs=deque(delivery.Job(channel="log", kind="firing", alert={"n": index},
                                                   created=1.0) for index in range(2)))
    outbox.lanes["log"] = lane
    synced = []
    real_fsync = delivery.os.fsync
    monkeypatch.setattr(delivery.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))

    def saved() -> list[tuple[int, int]]:
        return [(job.alert["n"], job.attempts) for job in delivery.Outbox(path).load()]

    outbox.save()  # the first save rewrites the file (replace_file fsyncs on its own)
    outbox.save()
    assert saved() == [(0, 0), (1, 0)]
    lane.jobs.append(delivery.Job(channel="log", kind="firing", alert={"n": 2}, created=2.0))
    synced.clear()
    outbox.save()
    assert len(synced) == 1 and saved() == [(0, 0), (1, 0), (2, 0)]
    lane.jobs.popleft()  # delivered
    lane.jobs[0].attempts = 1  # failed once
    synced.clear()
    outbox.save()
    assert synced == [] and saved() == [(1, 1), (2, 0)]
    lane.jobs.popleft()
    lane.jobs.append(delivery.Job(channel="log", kind="firing", alert={"n": 3}, created=3.0))
    outbox.save()  # a job done and one added: synced, the done line with it
    assert len(synced) == 1 and saved() == [(2, 0), (3, 0)]


# --------------------------------------------------------------------------- history and queries


def test_history_survives_restart_and_retention_prunes(tmp_path, metrics):
    clock = Clock()
    flags = {"ALERT_RETENTION_HOURS": 2}
    manager = manager_with(metrics, clock=clock)
    manager.enable(make_settings(tmp_path, **flags))
    old = manager.trigger_alert_sync(AlertType.BACKUP_FAILED, AlertSeverity.CRITICAL, "old", "old one")
    manager.resolve_alert(old)
    firing = manager.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.HIGH, "firing", "still full")
    clock.now += 3 * 3600
    new = manager.trigger_alert_sync(AlertType.INTEGRITY_FAILED, AlertSeverity.CRITICAL, "new", "new one")
    manager.disable()

    again = manager_with(Metrics(), clock=clock)
    again.enable(make_settings(tmp_path, **flags))
    try:  # the resolved one is gone; the one still firing stays: its resolution is still to be sent
        ids = [alert.id for alert in again.get_alerts()]
        assert ids == [new.id, firing.id] and old.id not in ids
    finally:
        again.disable()
    lines = (tmp_path / "state" / "alerts.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted([firing.id, new.id])
    assert [a.id for a in read_history(make_settings(tmp_path, **flags), clock=clock).query()] == [new.id, firing.id]


@pytest.mark.parametrize("damage", [b'{"type": "custom", "sev',  # a crash in the middle of a write
                                    b'{"type": "custom", "title": "\xff"}\n'],  # a byte that is not UTF-8
                         ids=["torn last line", "damaged byte"])
def test_a_damaged_history_line_is_skipped(tmp_path, metrics, damage):
    manager = manager_with(metrics)
    manager.enable(make_settings(tmp_path))
    kept = manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "kept", "kept")
    manager.disable()
    with open(tmp_path / "state" / "alerts.jsonl", "ab") as handle:
        handle.write(damage)
    again = manager_with(Metrics())
    again.enable(make_settings(tmp_path))
    try:
        assert [a.id for a in again.get_alerts()] == [kept.id]
        assert again.get_alerts(limit=0) == []
    finally:
        again.disable()


def test_alerts_past_the_cap_leave_no_trace_in_the_index(running, metrics):
    manager = running(max_alerts=10)
    for number in range(50):
        manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", f"message {'x' * number}")
    assert len(manager.get_alerts(limit=None)) == 10
    assert len(manager._state.by_fingerprint) == 10
    assert value(metrics, "bot_alerts_active", severity="low") == 10


def test_get_alerts_filters_and_summary_counts(running):
    clock = Clock()
    manager = running(clock=clock)
    manager.trigger_alert_sync(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "d", "reset", task_id="a")
    clock.now += 2 * 3600
    start = clock.now
    for _ in range(4):
        manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "api", "502 bad gateway")
    low = manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "fyi", "note")
    manager.resolve_alert(low)

    assert [a.type for a in manager.get_alerts(severity="high")] == [AlertType.DOWNLOAD_FAILED]
    assert [a.type for a in manager.get_alerts(type=AlertType.API_ERROR)] == [AlertType.API_ERROR]
    assert {a.type for a in manager.get_alerts(since=start)} == {AlertType.API_ERROR, AlertType.CUSTOM}
    assert AlertType.CUSTOM not in {a.type for a in manager.get_alerts(include_resolved=False)}
    assert len(manager.get_alerts(limit=1)) == 1
    with pytest.raises(AlertError, match="'huge'"):
        manager.get_alerts(severity="huge")

    summary = manager.get_alert_summary()
    assert summary["total"] == 6 and summary["distinct"] == 3
    assert summary["by_type"]["api_error"] == 4 and summary["by_severity"]["high"] == 1
    assert summary["last_hour"]["total"] == 5 and summary["last_hour"]["by_type"]["download_failed"] == 0
    assert summary["active"] == 2
    assert summary["top_repeating"][0]["type"] == "api_error" and summary["top_repeating"][0]["count"] == 4


# --------------------------------------------------------------------------- secrets


def test_secrets_never_reach_alert_text_or_history(tmp_path, metrics):
    token = "987654:SECRET-token-value"
    settings = load_settings({"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state")},
                             environ={"TELEGRAM_BOT_TOKEN": token})
    channel = RecordingChannel()
    manager = manager_with(metrics, {"log": channel})
    manager.enable(settings)
    try:
        alert = manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.LOW, f"call with {token}",
                                           f"GET /bot{token}/getMe failed", details={"url": f"/bot{token}/x"})
        assert manager.flush(5)
    finally:
        manager.disable()
    assert token not in alert.title + alert.message + json.dumps(alert.details)
    assert "****" in alert.message
    assert token not in (tmp_path / "state" / "alerts.jsonl").read_text()
    assert token not in channel.sent[0].message


# --------------------------------------------------------------------------- resource monitors


class FakeProbe:
    def __init__(self) -> None:
        self.free, self.used, self.rss = 0.5, 0.3, 100 * 2**20

    def disk_free_ratio(self, path):
        return self.free

    def memory_used_ratio(self):
        return self.used

    def process_rss(self):
        return self.rss


def test_resource_monitor_raises_and_resolves(tmp_path, metrics):
    from exporter.alert_manager.monitors import ResourceMonitor

    probe = FakeProbe()
    manager = manager_with(metrics)
    settings = make_settings(tmp_path, DISK_FREE_MIN_PERCENT=10, MEMORY_MAX_PERCENT=90, PROCESS_MEMORY_MAX="1GiB")
    manager.enable(settings)
    try:
        monitor = ResourceMonitor(manager, settings, metrics, probe)
        monitor.check()
        assert manager.get_alerts() == []
        path = str(monitor.paths[0])
        assert value(metrics, "bot_disk_free_ratio", path=path) == 0.5
        probe.free, probe.used, probe.rss = 0.05, 0.95, 2 * 2**30
        monitor.check()
        monitor.check()  # still bad: no second alert
        active = manager.get_alerts(include_resolved=False)
        assert sorted(a.type.value for a in active) == ["disk_full"] * len(monitor.paths) + ["memory_high"] * 2
        assert value(metrics, "bot_system_memory_used_ratio") == 0.95
        assert value(metrics, "bot_process_resident_memory_bytes") == 2 * 2**30
        probe.free, probe.used, probe.rss = 0.5, 0.3, 100 * 2**20
        monitor.check()
        assert manager.get_alerts(include_resolved=False) == []
    finally:
        manager.disable()


def test_monitor_runs_periodically_when_enabled(tmp_path, metrics):
    probe = FakeProbe()
    probe.free = 0.01
    manager = AlertManager(metrics=metrics, channel_factories=CHANNELS, resource_probe=probe)
    manager.enable(make_settings(tmp_path, RESOURCE_CHECK_INTERVAL=0.05))
    try:
        wait_until(lambda: manager.get_alerts(type="disk_full"), timeout=5, what="a disk_full alert of a periodic check")
    finally:
        manager.disable()


# --------------------------------------------------------------------------- the burst


def test_burst_of_ten_thousand_with_ten_subscribers_and_a_hanging_channel(tmp_path, metrics):
    hanging = RecordingChannel("slack", hang=True)
    good = RecordingChannel("webhook")
    manager = manager_with(metrics, {"slack": hanging, "webhook": good}, send_timeout=0.5)
    manager.enable(make_settings(tmp_path, ALERT_CHANNELS={"high": ["slack", "webhook"]}))
    calls = [[] for _ in range(10)]
    for bucket in calls:
        manager.subscribe(AlertType.DOWNLOAD_FAILED, bucket.append)
    tracemalloc.start()
    try:
        def burst(offset):
            for index in range(2500):
                manager.trigger_alert_sync(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "Download failed",
                                           f"connection reset after {offset + index} bytes")

        threads = [threading.Thread(target=burst, args=(n * 2500,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a caller was blocked"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        wait_until(lambda: good.sent and all(calls), what="the alert at every subscriber and the good channel")
        assert [len(bucket) for bucket in calls] == [1] * 10
        assert len(good.sent) == 1
        assert hanging.sent == []
        summary = manager.get_alert_summary()
        assert summary["total"] == 10_000 and summary["distinct"] == 1
        assert summary["top_repeating"][0]["count"] == 10_000
        assert value(metrics, "bot_alerts_deduplicated_total", type="download_failed") == 9_999
        assert peak < 20 * 2**20, f"burst used {peak / 2**20:.1f} MiB"
    finally:
        hanging.release.set()
        manager.disable(timeout=0.5)


def test_distinct_alerts_beyond_the_bounds_are_dropped_and_counted(tmp_path, metrics):
    hanging = RecordingChannel("webhook", hang=True)
    manager = manager_with(metrics, {"webhook": hanging}, lane_size=50, max_alerts=100, send_timeout=30)
    manager.enable(make_settings(tmp_path, ALERT_CHANNELS={"low": ["webhook"]}))
    try:
        for index in range(1000):
            manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m", task_id=f"task-{index}")
        wait_until(lambda: value(metrics, "bot_alert_notifications_total", channel="webhook",
                                 outcome="dropped") >= 950, what="the notifications past the lane dropped")
        assert manager.channel_stats()["webhook"]["pending"] <= 50
        summary = manager.get_alert_summary()
        assert summary["distinct"] == 100 and summary["evicted"] == 900
    finally:
        hanging.release.set()
        manager.disable(timeout=0.5)


# --------------------------------------------------------------------------- the CLI


def test_cli_list_summary_and_test(tmp_path, metrics, capsys, monkeypatch, webhook_receiver):
    from exporter.cli import main

    manager = manager_with(metrics)
    manager.enable(make_settings(tmp_path))
    manager.trigger_alert_sync(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "Download failed", "reset", task_id="d1")
    manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "API", "502")
    manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "API", "503")
    manager.disable()
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"{webhook_receiver.url}/hook")

    assert main(["alerts", "list", "--json", "--severity", "high"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["task_id"] for a in listed] == ["d1"]
    assert main(["alerts", "list"]) == 0
    assert "api_error        API x2: 502" in capsys.readouterr().out
    assert main(["alerts", "summary", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 3 and summary["by_type"]["api_error"] == 2
    assert main(["alerts", "list", "--severity", "urgent"]) == 1
    assert "'urgent'" in capsys.readouterr().err
    assert main(["alerts", "list", "--since", "yesterday-ish"]) == 1

    monkeypatch.setenv("ALERT_CHANNELS", '{"critical": ["webhook", "log"]}')
    assert main(["alerts", "test", "--json", "--timeout", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["channels"]["webhook"] == {"delivered": True, "error": None}
    assert webhook_receiver.requests[0]["json"]["alert"]["title"] == "opsstack test alert"
    webhook_receiver.stop()
    assert main(["alerts", "test", "--timeout", "1.5"]) == 1
    captured = capsys.readouterr()
    assert "webhook       FAILED: webhook: ConnectError" in captured.out
    assert "did not reach: webhook" in captured.err
    assert "/hook" not in captured.out + captured.err


def test_a_notification_refused_for_good_is_dropped_not_retried(running, metrics):
    class Refusing(RecordingChannel):
        async def send(self, alert):
            if alert.title == "bad":
                from exporter.channels._common import delivery_error

                raise delivery_error("webhook: the receiver answered HTTP 400", permanent=True)
            self.sent.append(alert)

    channel = Refusing()
    manager = running({"webhook": channel}, {"ALERT_CHANNELS": {"high": ["webhook"]}})
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.HIGH, "bad", "first")
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.HIGH, "good", "second")
    assert manager.flush(5)  # the refused one does not block the one behind it
    assert [a.title for a in channel.sent] == ["good"]
    assert value(metrics, "bot_alert_notifications_total", channel="webhook", outcome="dropped") == 1
    assert manager.channel_errors()["webhook"] == "webhook: the receiver answered HTTP 400"


def test_a_channel_that_cannot_make_the_message_drops_it_and_goes_on(running, metrics):
    class Particular(RecordingChannel):
        async def send(self, alert):
            if alert.title == "bad":
                raise ValueError("Header values may not contain linefeed or carriage return characters")
            self.sent.append(alert)

    channel = Particular()
    manager = running({"webhook": channel}, {"ALERT_CHANNELS": {"high": ["webhook"]}})
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.HIGH, "bad", "first")
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.HIGH, "good", "second")
    assert manager.flush(5)  # the same alert would fail the same way: not retried for a day
    assert [a.title for a in channel.sent] == ["good"]
    assert value(metrics, "bot_alert_notifications_total", channel="webhook", outcome="dropped") == 1
    assert "ValueError" in manager.channel_errors()["webhook"]


def test_a_queued_notification_that_no_longer_reads_is_dropped_and_the_lane_goes_on(tmp_path, running, metrics):
    state = tmp_path / "state"
    state.mkdir()
    unknown = {"channel": "webhook", "kind": "firing", "created": time.time(),
               "alert": {"type": "quota_exceeded", "severity": "high", "title": "t", "message": "m",
                         "first_seen": time.time(), "id": "0123456789abcdef"}}
    (state / "alert_outbox.jsonl").write_text(json.dumps(unknown) + "\n")
    channel = RecordingChannel()
    manager = running({"webhook": channel}, {"ALERT_CHANNELS": {"high": ["webhook"]}})
    manager.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.HIGH, "Disk almost full", "3% free")
    assert manager.flush(5)
    assert [a.title for a in channel.sent] == ["Disk almost full"]
    assert "quota_exceeded" in manager.channel_errors()["webhook"]


def test_unusable_state_dir_is_a_clear_error(tmp_path, metrics):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    manager = manager_with(metrics)
    with pytest.raises(AlertError, match="STATE_DIR"):
        manager.enable(load_settings({"STATE_DIR": str(blocker / "state")}, environ={}))
    assert not manager.enabled


def test_history_file_is_compacted_while_repeats_append(tmp_path, metrics, monkeypatch):
    from exporter.alert_manager import persistence

    monkeypatch.setattr(persistence, "COMPACT_SLACK_LINES", 5)
    clock = Clock()
    manager = manager_with(metrics, clock=clock)
    manager.enable(make_settings(tmp_path, ALERT_DEDUP_WINDOW=3600))
    path = tmp_path / "state" / "alerts.jsonl"

    def last_repeat_count() -> int:
        lines = path.read_text().splitlines() if path.exists() else []
        try:
            return json.loads(lines[-1])["repeat_count"] if lines else 0
        except ValueError:  # the line is being appended
            return 0

    try:
        for step in range(20):
            clock.now += 1
            manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "API", "502")
            wait_until(lambda: last_repeat_count() == step + 1, what="the persist loop to write the repeat")
        lines = path.read_text().splitlines()
        assert len(lines) < 10
        assert json.loads(lines[-1])["repeat_count"] == 20
    finally:
        manager.disable()
    assert [a.repeat_count for a in read_history(make_settings(tmp_path), clock=clock).query()] == [20]


def test_the_persisting_loop_sleeps_while_nothing_changes(tmp_path, metrics):
    """No timer while nothing changes (five ticks a second were most of the worker's CPU in a bot
    raising an alert every few seconds); a change then, even a repeat folded on the caller's
    thread (which wakes nothing else), is written at the next tick."""
    clock = Clock()
    manager = manager_with(metrics, clock=clock)
    manager.enable(make_settings(tmp_path, ALERT_DEDUP_WINDOW=3600))
    history, ticks = manager._state.history, []
    oversized = history.oversized
    history.oversized = lambda: ticks.append(time.monotonic()) or oversized()
    path = tmp_path / "state" / "alerts.jsonl"
    try:
        manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "API", "502")
        wait_until(lambda: ticks, what="the tick after the alert")
        time.sleep(0.5)
        settled = len(ticks)
        time.sleep(1.0)
        assert len(ticks) == settled, "ticks while nothing changed"
        clock.now += 1
        manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "API", "502")
        wait_until(lambda: '"repeat_count":2,' in path.read_text(), what="the repeat in the history")
        time.sleep(0.5)
        assert 1 <= len(ticks) - settled <= 2
    finally:
        manager.disable()


def test_producers_resolve_their_alerts_when_the_condition_clears(tmp_path, metrics):
    """A failed backup is resolved by the next success of the same action, an integrity failure
    by a passing check of the same path, each notified once as resolved; a firing alert is never
    pruned by the retention."""
    from exporter.backup_manager import BackupManager
    from exporter.recovery_manager import RecoveryManager
    from exporter.backup_manager import archives
    from tests.test_backup_manager import make_settings, make_tree

    sent = []

    class Spy:
        name = "spy"

        async def send(self, alert):
            sent.append(("firing", alert.type.value, alert.details.get("action")))

        async def send_resolved(self, alert):
            sent.append(("resolved", alert.type.value, alert.details.get("action")))

        async def close(self):
            pass

    settings = make_settings(tmp_path, ENABLE_ALERT_SYSTEM=True,
                             ALERT_CHANNELS={"high": ["webhook"], "critical": ["webhook"]})
    alerts = manager_with(metrics, {"webhook": Spy()})
    alerts.enable(settings)
    try:
        backups = BackupManager(settings, Metrics(), alerts=alerts)
        backups.enable(schedule=False)
        source = make_tree(tmp_path / "data")
        with pytest.raises(Exception):
            backups.create_backup_sync([str(tmp_path / "missing")], "broken")
        assert alerts.get_alert_summary()["active"] == 1
        backups.create_backup_sync([str(source)], "good")
        assert alerts.flush(10)
        assert sent == [("firing", "backup_failed", "create"), ("resolved", "backup_failed", "create")]
        assert alerts.get_alert_summary()["active"] == 0

        recovery = RecoveryManager(settings, Metrics(), backups=archives, alerts=alerts)
        recovery.enable(periodic=False)
        recovery.record_baseline([str(source)])
        (source / "config" / "token.txt").write_text("damaged")
        assert not recovery.verify_integrity_sync(str(source))[0]
        assert alerts.get_alert_summary()["active"] == 1
        (source / "config" / "token.txt").write_text("secret-token")
        assert recovery.verify_integrity_sync(str(source))[0]
        assert alerts.get_alert_summary()["active"] == 0

        firing = alerts.trigger_alert_sync("custom", "high", "Still firing", "no clear condition")
        alerts._state.store.retention = 0.0
        alerts._state.prune()
        assert [a.id for a in alerts.get_alerts(limit=None) if not a.resolved] == [firing.id]
    finally:
        alerts.disable()


def test_last_hour_counts_only_the_repeats_of_the_last_hour(running):
    clock = Clock()
    manager = running(clock=clock)
    for _ in range(10):  # ten repeats, then quiet for 50 minutes, then two more
        manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "api", "502 bad gateway")
    clock.now += 50 * 60
    for _ in range(2):
        manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.MEDIUM, "api", "502 bad gateway")
    summary = manager.get_alert_summary()
    assert summary["last_hour"]["by_type"]["api_error"] == 12 and summary["by_type"]["api_error"] == 12
    clock.now += 15 * 60  # the first ten are over an hour old now; the alert was last seen 15 min ago
    summary = manager.get_alert_summary()
    assert summary["last_hour"]["by_type"]["api_error"] == 2 and summary["last_hour"]["by_severity"]["medium"] == 2
    assert summary["by_type"]["api_error"] == 12


def test_telegram_flood_control_is_waited_out_as_asked(tmp_path, metrics, telegram_api):
    """A 429 with retry_after delays the next try at least that long (not the lane's own short
    backoff), and the alert is delivered once the wait is over."""
    import time as _time

    telegram_api.flood_until = _time.time() + 2.0  # "Too Many Requests: retry after 2"
    settings = make_settings(tmp_path, ENABLE_ALERT_SYSTEM=True, ALERT_CHANNELS={"high": ["telegram"]})
    settings = settings.replace(TELEGRAM_BOT_TOKEN=telegram_api.token, TELEGRAM_CHAT_ID="42",
                                TELEGRAM_API_URL=telegram_api.url)
    manager = manager_with(metrics)  # retry_base 0.05 s: without retry_after it would hammer
    manager.enable(settings)
    try:
        manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.HIGH, "api", "flooded")
        assert manager.flush(20)
        assert len(telegram_api.messages) == 1
        assert len(telegram_api.refused) <= 2, telegram_api.refused  # waited, did not hammer
        assert metrics.registry.get_sample_value(
            "bot_alert_notifications_total", {"channel": "telegram", "outcome": "success"}) == 1
    finally:
        manager.disable()


def test_backoff_has_jitter_within_half_and_all_of_the_step(metrics):
    from exporter.alert_manager.delivery import ChannelLane

    lane = ChannelLane.__new__(ChannelLane)
    lane.retry_base, lane.retry_max = 1.0, 60.0
    waits = [lane.backoff(3) for _ in range(200)]
    assert all(2.0 <= wait <= 4.0 for wait in waits) and len({round(w, 3) for w in waits}) > 50


def test_the_outbox_is_a_journal_of_what_changed_replayed_on_load(tmp_path, monkeypatch):
    from collections import deque
    from types import SimpleNamespace

    from exporter.alert_manager import delivery

    path = tmp_path / "alert_outbox.jsonl"
    outbox = delivery.Outbox(path)
    lane = SimpleNamespace(jobs=deque())
    outbox.lanes["log"] = lane

    def job(number: int) -> delivery.Job:
        return delivery.Job(channel="log", kind="firing", alert={"n": number}, created=float(number))

    def restored() -> list[tuple[int, int]]:
        return [(job.alert["n"], job.attempts) for job in delivery.Outbox(path).load()]

    outbox.save()  # the first save rewrites the file
    assert path.read_text() == ""
    lane.jobs.append(job(1))
    lane.jobs.popleft()  # queued and delivered between two saves: nothing to write
    outbox.save()
    assert path.read_text() == ""
    lane.jobs.extend([job(2), job(3), job(4)])
    outbox.save()
    size = path.stat().st_size
    outbox.save()  # nothing changed
    assert path.stat().st_size == size and restored() == [(2, 0), (3, 0), (4, 0)]
    lane.jobs.popleft()  # delivered
    lane.jobs[0].attempts = 1  # failed once
    outbox.save()
    assert len(path.read_text().splitlines()) == 5  # three jobs, one done, one changed: appended
    assert restored() == [(3, 1), (4, 0)]  # a changed job keeps its place
    monkeypatch.setattr(delivery, "JOURNAL_SLACK", 0)
    lane.jobs.append(job(5))
    outbox.save()  # past the slack: rewritten
    assert len(path.read_text().splitlines()) == 3 and restored() == [(3, 1), (4, 0), (5, 0)]
    lane.jobs.clear()
    outbox.save(compact=True)
    assert path.read_text() == "" and restored() == []
