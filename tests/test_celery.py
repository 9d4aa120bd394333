"""Celery with a real redis-server broker and real worker and beat processes: beat's backup runs
in a worker and is seen by another process; each task is measured, logged and traced, and the
caller's trace reaches the worker's log line."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.harness.base import ServiceProcess
from tests.test_backup_manager import make_tree

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def wait_for(condition, timeout: float, what: str, *processes: ServiceProcess):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        for process in processes:
            assert process.alive(), f"{process.name} died:\n{process.log_tail()}"
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in processes)
    raise AssertionError(f"no {what} after {timeout:.0f}s\n{tails}")


def log_lines(log_dir: Path) -> list[dict]:
    lines = []
    for path in sorted(log_dir.glob("bot.json*")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


@pytest.fixture
def bot_env(tmp_path, redis_server, monkeypatch):
    source = make_tree(tmp_path / "data")
    env = {
        "CELERY_BROKER_URL": f"{redis_server.url}/{os.getpid() % 16}",
        "PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"], "HOME": str(tmp_path),
        "ENABLE_ENHANCED_LOGGING": "true", "ENABLE_BACKUP_SYSTEM": "true", "ENABLE_PROFILER": "true",
        "ENABLE_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "LOG_DIR": str(tmp_path / "logs"), "BACKUP_DIR": str(tmp_path / "backups"),
        "STATE_DIR": str(tmp_path / "state"), "CRITICAL_BACKUP_PATHS": str(source),
        "BACKUP_FREQUENCY": "hourly", "TEST_BEAT_SECONDS": "3",
        "REDIS_URL": f"{redis_server.url}/{(os.getpid() + 1) % 16}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return tmp_path, env


def mirrored_names(env: dict, reader) -> set[str]:
    """The backups named in the catalog's copy in Redis (``opsstack:catalog:<set>``)."""
    import redis

    from exporter.backup_manager.catalog import set_name

    with redis.Redis.from_url(env["REDIS_URL"]) as client:
        raw = client.get(f"opsstack:catalog:{set_name(reader.backup_dir)}")
    return {entry["name"] for entry in json.loads(raw)["entries"]} if raw else set()


def celery(tmp_path: Path, env: dict, *args: str) -> ServiceProcess:
    return ServiceProcess(f"celery {args[0]}", [sys.executable, "-m", "celery", "-A", "tests.celery_app",
                                                *args, "--loglevel", "INFO"],
                          tmp_path / f"celery-{args[0]}.log", cwd=ROOT, env=env).start()


def test_beat_backs_up_in_a_worker_and_tasks_carry_the_callers_trace(bot_env):
    tmp_path, env = bot_env
    worker = celery(tmp_path, env, "worker", "--concurrency", "2", "--pool", "prefork",
                    "--without-heartbeat", "--without-gossip", "--without-mingle")
    beat = celery(tmp_path, env, "beat", "--schedule", str(tmp_path / "beat-schedule"))
    try:
        from exporter.backup_manager import BackupManager
        from exporter.config import load_settings
        from exporter.metrics import Metrics

        from exporter.shared_state import catalog_mirror

        # another process, the same BACKUP_DIR, reading the catalog the worker mirrored in Redis
        reader = BackupManager(load_settings(), Metrics(), catalog_mirror=catalog_mirror)
        reader.enable(schedule=False)
        backups = wait_for(lambda: [b for b in reader.list_backups() if b["verified"]], 90,
                           "verified backup from beat", worker, beat)
        assert backups[0]["tier"] == "hourly"
        assert backups[0]["source_paths"] == [env["CRITICAL_BACKUP_PATHS"]]
        assert mirrored_names(env, reader) >= {backups[0]["name"]}

        from exporter import tracing
        from tests.celery_app import app

        tracing.setup(load_settings())
        try:
            with tracing.span("bot.download") as span:
                caller_trace = format(span.get_span_context().trace_id, "032x")
                sent = app.send_task("bot.finish_download", args=("d-1", 4096))
            failed = app.send_task("bot.fail")
        finally:
            tracing.shutdown()

        def task_line(task_id):
            return next((line for line in log_lines(tmp_path / "logs")
                         if line.get("labels", {}).get("celery_task_id") == task_id), None)

        done = wait_for(lambda: task_line(sent.id), 60, "log line of the download task", worker)
        assert done["event"]["action"] == "celery-task" and done["event"]["outcome"] == "success"
        assert done["labels"]["celery_task_name"] == "bot.finish_download"
        assert done["trace"]["id"] == caller_trace
        download = next(line for line in log_lines(tmp_path / "logs")
                        if line.get("event", {}).get("action") == "download")
        assert download["trace"]["id"] == caller_trace  # the bot's line inside the task: same trace
        bad = wait_for(lambda: task_line(failed.id), 60, "log line of the failing task", worker)
        assert bad["event"]["outcome"] == "failure" and bad["log.level"] == "error"
        scheduled = [line for line in log_lines(tmp_path / "logs")
                     if line.get("labels", {}).get("celery_task_name") == "exporter.backup_manager.scheduled_backup"]
        assert scheduled and scheduled[0]["event"]["outcome"] == "success"
    finally:
        beat.stop()
        worker.stop()
    lines = (tmp_path / "celery-worker.log").read_text().splitlines()
    tracebacks = [n for n, line in enumerate(lines) if line.startswith("Traceback")]
    assert tracebacks, "the failing task's traceback is in the worker's log"
    assert all(any(line.startswith("RuntimeError: the peer went away") for line in lines[n:n + 20])
               for n in tracebacks), "a traceback other than the failing task's"


def test_alerts_reach_a_celery_task_through_the_celery_channel(bot_env):
    from exporter.alert_manager import AlertManager, AlertSeverity, AlertType
    from exporter.channels import CHANNELS
    from exporter.config import load_settings
    from exporter.metrics import Metrics

    tmp_path, env = bot_env
    out = tmp_path / "alerts.jsonl"
    worker = celery(tmp_path, {**env, "ALERT_OUT": str(out)}, "worker", "--concurrency", "1",
                    "--pool", "solo", "--without-heartbeat", "--without-gossip", "--without-mingle")
    metrics = Metrics()
    settings = load_settings({"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "alerts"),
                              "ALERT_CHANNELS": {"high": ["log", "celery"]},
                              "ALERT_CELERY_TASK": "bot.on_alert"},
                             environ={"CELERY_BROKER_URL": env["CELERY_BROKER_URL"]})
    manager = AlertManager(metrics=metrics, channel_factories=CHANNELS, monitor_resources=False)
    manager.enable(settings)
    try:
        manager.trigger_alert_sync(AlertType.DOWNLOAD_FAILED, AlertSeverity.HIGH, "Downloads failing",
                                   "peer reset")
        assert manager.flush(30)
        lines = wait_for(lambda: out.exists() and out.read_text().splitlines(), 60,
                         "the alert in the worker", worker)
        assert [json.loads(line) for line in lines] == [{"status": "firing", "title": "Downloads failing"}]
        assert metrics.registry.get_sample_value(
            "bot_alert_notifications_total", {"channel": "celery", "outcome": "success"}) == 1
    finally:
        manager.disable()
        worker.stop()


async def test_a_broker_that_is_down_is_a_delivery_failure_without_its_password():
    from exporter.channels.celery import CeleryChannel
    from exporter.config import Secret
    from exporter.errors import DeliveryError
    from tests.harness.base import free_port
    from tests.test_channels import make_alert

    channel = CeleryChannel(Secret(f"redis://:hunter2-broker@127.0.0.1:{free_port()}/0"), "bot.on_alert")
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        await channel.send(make_alert())
    await channel.close()
    assert time.monotonic() - started < 30
    assert "hunter2" not in str(caught.value) and "celery" in str(caught.value)


def events(log_dir: Path, action: str) -> list[dict]:
    return [line for line in log_lines(log_dir) if line.get("event", {}).get("action") == action]


def test_redis_flushed_stopped_and_restarted_under_running_workers_and_beat(bot_env, tmp_path_factory):
    """Redis is the broker and the shared state: flushed, the catalog is rebuilt from the files;
    down, beat's sends fail (logged, counted, the runs skipped), lists come from the files and
    backups wait; back on the same port, beat sends again and the workers back up again."""
    import redis
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from exporter.backup_manager import BackupManager, read_catalog
    from exporter.config import load_settings
    from exporter.metrics import Metrics
    from exporter.shared_state import catalog_mirror
    from tests.harness import redis as redis_harness

    tmp_path, env = bot_env
    server = redis_harness.start(tmp_path_factory.mktemp("own-redis"))  # this test stops it
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    env = {**env, "CELERY_BROKER_URL": f"{server.url}/0", "REDIS_URL": f"{server.url}/1",
           "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "TEST_BEAT_SECONDS": "2"}
    worker = celery(tmp_path, env, "worker", "--concurrency", "2", "--pool", "prefork",
                    "--without-heartbeat", "--without-gossip", "--without-mingle")
    beat = celery(tmp_path, env, "beat", "--schedule", str(tmp_path / "beat-schedule"))
    reader = BackupManager(load_settings({"REDIS_URL": env["REDIS_URL"]}), Metrics(),
                           catalog_mirror=catalog_mirror)
    reader.enable(schedule=False)
    client = redis.Redis.from_url(env["REDIS_URL"])
    logs = tmp_path / "logs"

    def verified_since(moment: float) -> list[dict]:
        return [b for b in reader.list_backups() if b["verified"] and b["created_at"] > moment]

    try:
        wait_for(lambda: verified_since(0), 90, "a verified backup", worker, beat)
        client.flushall()
        wait_for(lambda: names(reader.list_backups()) == names(reversed(read_catalog(reader.backup_dir))),
                 30, "the catalog rebuilt from the files")
        assert mirrored_names(env, reader)  # and mirrored again
        flushed_at = time.time()
        wait_for(lambda: verified_since(flushed_at), 60, "a backup after FLUSHALL", worker, beat)

        server.stop()
        assert names(reader.list_backups()) == names(reversed(read_catalog(reader.backup_dir)))
        failed = wait_for(lambda: [e for e in events(logs, "celery-beat-send")
                                   if e["event"]["outcome"] == "failure"], 60,
                          "beat's failed send logged", beat)
        assert failed[0]["labels"]["celery_beat_entry"] == "opsstack-scheduled-backup"
        assert "redis://" not in json.dumps(failed) and worker.alive()

        server.start()  # the same port, its append-only file reloaded
        back_at = time.time()
        wait_for(lambda: verified_since(back_at), 120, "a backup after Redis came back", worker, beat)
        sends = events(logs, "celery-beat-send")
        recovered = [e for e in sends if "broker is back" in e["message"]]
        assert recovered and recovered[0]["@timestamp"] > failed[0]["@timestamp"]
    finally:
        beat.stop()
        worker.stop()
        server.stop()
    server.start()
    try:
        assert not list(client.scan_iter("opsstack:lock:*"))  # no lock outlives its holder
        assert int(client.get(f"opsstack:fence:{_set(reader)}") or 0) >= 2
    finally:
        client.close()
        server.stop()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(multiproc))
    assert registry.get_sample_value("bot_operation_errors_total",
                                     {"operation": "celery.beat opsstack-scheduled-backup"}) >= 1
    assert not [line for line in log_lines(logs) if line["log"]["logger"] == "celery.redirected"]


def names(backups) -> list[str]:
    return [b["name"] for b in backups]


def _set(manager) -> str:
    from exporter.backup_manager.catalog import set_name

    return set_name(manager.backup_dir)


def test_a_worker_killed_mid_backup_holds_the_lock_no_longer_than_its_ttl(bot_env):
    import signal

    from exporter.backup_manager import BackupManager
    from exporter.config import load_settings
    from exporter.errors import BackupLockedError
    from exporter.metrics import Metrics
    from exporter.shared_state import shared_locks
    from tests.celery_app import app

    tmp_path, env = bot_env
    worker = celery(tmp_path, {**env, "SHARED_LOCK_TTL": "5"}, "worker", "--concurrency", "1",
                    "--pool", "prefork", "--without-heartbeat", "--without-gossip", "--without-mingle")
    other = BackupManager(load_settings({"SHARED_LOCK_TTL": 5}), Metrics(), shared_locks=shared_locks)
    other.enable(schedule=False)
    source = env["CRITICAL_BACKUP_PATHS"]
    ready = tmp_path / "hung.pid"
    try:
        app.send_task("bot.backup_and_hang", args=(str(ready),))
        pid = int(wait_for(lambda: ready.exists() and ready.read_text(), 60, "the backup under way", worker))
        with pytest.raises(BackupLockedError, match=f"held by [0-9]+ \\S+ {pid}"):
            other.create_backup_sync([source], "too-early")
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def backed_up() -> bool:
            try:
                other.create_backup_sync([source], "after-expiry")
            except BackupLockedError:
                return False
            return True

        wait_for(backed_up, 15, "the killed worker's lock to expire", worker)
        assert time.monotonic() - killed_at >= 3  # held until it expired (TTL 5 s, renewed every 1.7 s)
        assert [b["name"] for b in other.list_backups()] == ["after-expiry"]  # the killed one never shows
        assert worker.alive()  # Celery's pool replaced the killed child
    finally:
        worker.stop()
