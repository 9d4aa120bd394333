"""`exporter.runtime`: what the flags turn on, and a bounded exit when every backend is away."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from exporter.config import KEYS_BY_NAME
from tests.harness.base import free_port

BOT = textwrap.dedent("""
    import logging, sys, time
    if sys.argv[1] != "baseline":
        from exporter import runtime, tracing
        from exporter.alert_manager import AlertSeverity, AlertType, alert_manager
        handle = runtime.start()
        assert sorted(handle.enabled) == ["alerts", "logging", "tracing"], handle.enabled
        for number in range(500):
            logging.getLogger("bot").warning("line %d", number)
        alert_manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.CRITICAL, "title", "message")
        with tracing.span("work"):
            pass
        from exporter.metrics import default_metrics
        sample = default_metrics().registry.get_sample_value
        deadline = time.monotonic() + 20  # until the shipper and the alert lane met the unreachable services
        while not (sample("bot_log_shipping_retried_total") and sample(
                "bot_alert_notifications_total", {"channel": "alertmanager", "outcome": "failure"})):
            assert time.monotonic() < deadline, "no attempt to reach Elasticsearch and Alertmanager"
            time.sleep(0.02)
        if sys.argv[1] == "stop":
            handle.stop()
    print(f"EXITING {time.time()}", flush=True)
""")


def _exit_delay(mode: str, env: dict[str, str]) -> float:
    process = subprocess.run([sys.executable, "-c", BOT, mode], env=env, capture_output=True, text=True,
                             timeout=60)
    ended = time.time()
    assert process.returncode == 0, process.stderr[-2000:]
    return ended - float(process.stdout.split("EXITING ")[1])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stop", "atexit"])
def test_exit_is_bounded_with_elasticsearch_alertmanager_and_collector_unreachable(mode, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in KEYS_BY_NAME}
    env.update(ENABLE_ENHANCED_LOGGING="1", LOG_DIR=str(tmp_path / "logs"), LOG_CONSOLE="0",
               STATE_DIR=str(tmp_path / "state"), ELASTICSEARCH_URL=dead, ENABLE_ALERT_SYSTEM="1",
               ALERTMANAGER_URL=dead, ALERT_CHANNELS='{"critical": ["log", "alertmanager"]}',
               ENABLE_TRACING="1", OTEL_EXPORTER_OTLP_ENDPOINT=dead)
    baseline = _exit_delay("baseline", env)
    with_project = _exit_delay(mode, env)
    assert with_project - baseline <= 2.0, (baseline, with_project)
    # Nothing was lost on the way out: the log lines wait in the spool, the alert in the outbox.
    assert list((tmp_path / "state" / "spool").glob("*.spool"))
    assert (tmp_path / "state" / "alert_outbox.jsonl").read_text().strip()


def test_enabled_features_are_marked_in_the_given_metrics(tmp_path):
    from exporter import runtime
    from exporter.config import default_settings
    from exporter.metrics import Metrics

    metrics = Metrics()
    handle = runtime.start(default_settings().replace(ENABLE_PROFILER=True, STATE_DIR=str(tmp_path)), metrics)
    try:
        assert handle.metrics is metrics
        assert handle.enabled == ["profiler"]
        assert metrics.registry.get_sample_value("bot_feature_enabled", {"feature": "profiler"}) == 1.0
        assert metrics.registry.get_sample_value("bot_feature_enabled", {"feature": "alerts"}) == 0.0
    finally:
        handle.stop()


def test_with_every_feature_off_the_metrics_are_built_only_when_asked_for():
    from exporter import runtime
    from exporter.config import default_settings
    from exporter.metrics import default_metrics

    handle = runtime.start(default_settings())
    assert handle.enabled == [] and handle.metrics_server is None
    assert handle.metrics is default_metrics()
    handle.stop()


def test_enabled_managers_write_to_the_metrics_given_to_start(tmp_path):
    from exporter import runtime
    from exporter.alert_manager import alert_manager
    from exporter.backup_manager import backup_manager
    from exporter.config import default_settings
    from exporter.errors import BackupError
    from exporter.logger_manager import logger_manager
    from exporter.metrics import Metrics
    from exporter.profiler import profiler
    from exporter.recovery_manager import recovery_manager

    data = tmp_path / "data"
    data.mkdir()
    (data / "state.db").write_bytes(b"rows")
    settings = default_settings().replace(
        STATE_DIR=str(tmp_path / "state"), ENABLE_ENHANCED_LOGGING=True, LOG_DIR=str(tmp_path / "logs"),
        LOG_CONSOLE=False, ENABLE_ALERT_SYSTEM=True, ALERT_CHANNELS={"low": ["log"]},
        ENABLE_PROFILER=True, ENABLE_BACKUP_SYSTEM=True, BACKUP_DIR=str(tmp_path / "backups"),
        ENABLE_RECOVERY_MANAGER=True)
    metrics = Metrics()
    handle = runtime.start(settings, metrics)
    try:
        logger_manager.log_download("t1", "a.zip", 10, 1.0, 10.0, "completed")
        alert_manager.trigger_alert_sync("custom", "low", "title", "message")
        with profiler.profile_sync("parse"):
            pass
        backup_manager.create_backup_sync([str(data)])
        recovery_manager.record_baseline([str(data)])
        recovery_manager.verify_integrity_sync(str(data))
        with pytest.raises(BackupError):  # the module-level managers are wired to each other
            backup_manager.create_backup_sync([str(data)], "-bad name")
        assert [alert.type.value for alert in alert_manager.get_alerts()] == ["backup_failed", "custom"]
        alert_manager.flush()
        features = {name: metrics.registry.get_sample_value("bot_feature_enabled", {"feature": name})
                    for name in handle.enabled}
    finally:
        handle.stop()
    assert features == dict.fromkeys(["logging", "alerts", "profiler", "backups", "recovery"], 1.0)
    value = metrics.registry.get_sample_value
    assert value("bot_downloads_total", {"outcome": "success"}) == 1.0
    assert value("bot_transferred_bytes_total", {"direction": "download"}) == 10.0
    assert value("bot_log_records_total", {"level": "info"}) >= 1.0
    assert value("bot_alerts_total", {"type": "custom", "severity": "low"}) == 1.0
    assert value("bot_operation_duration_seconds_count", {"operation": "parse"}) == 1.0
    assert value("bot_backups_total", {"outcome": "success"}) == 1.0
    assert value("bot_backup_last_files") == 1.0
    assert value("bot_integrity_checks_total", {"outcome": "success"}) == 1.0
    assert value("bot_integrity_last_check_ok") == 1.0
