"""A background worker that meets an unexpected error logs it, counts it in
``bot_worker_errors_total{worker}`` and goes on: it never dies silently. Each test injects a
failure into a real worker and waits (bounded) for the count and for the work after it."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from exporter.alert_manager import AlertManager, AlertSeverity, AlertType
from exporter.backup_manager import archives
from exporter.backup_manager.scheduler import Job, Scheduler
from exporter.errors import BackupError
from exporter.metrics import WORKERS, Metrics
from exporter.recovery_manager import RecoveryManager
from exporter.sinks.elasticsearch import ElasticsearchSink
from tests.probes import wait_until
from tests.test_alert_manager import RecordingChannel, manager_with
from tests.test_alert_manager import make_settings as alert_settings
from tests.test_backup_manager import make_settings
from tests.test_shipping import _closed_port_url, _line
from tests.test_shipping import _settings as shipping_settings


def errors(metrics: Metrics, worker: str) -> float:
    return metrics.registry.get_sample_value("bot_worker_errors_total", {"worker": worker})


def failing(times: int, then, error: type[Exception] = RuntimeError):
    """A callable that raises ``error`` its first ``times`` calls, then calls ``then``."""
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) <= times:
            raise error("injected failure")
        return then(*args, **kwargs)

    call.calls = calls
    return call


def test_every_worker_series_starts_at_zero():
    metrics = Metrics()
    assert [errors(metrics, worker) for worker in WORKERS] == [0.0] * len(WORKERS)


def test_the_integrity_thread_reports_a_failure_and_keeps_checking(tmp_path, caplog):
    metrics = Metrics()
    recovery = RecoveryManager(make_settings(tmp_path, RECOVERY_CRITICAL_PATHS=[str(tmp_path)],
                                             INTEGRITY_CHECK_INTERVAL=0.01), metrics, backups=archives)
    recovery.auto_recover_sync = check = failing(2, lambda paths: {})
    with caplog.at_level(logging.ERROR, "exporter.recovery_manager"):
        recovery.enable()
        recovery.record_baseline([str(tmp_path)])  # a path with no baseline is not checked yet
        try:
            wait_until(lambda: len(check.calls) >= 4)
            assert recovery._thread.is_alive()
        finally:
            recovery.disable()
    assert errors(metrics, "integrity_check") == 2
    reported = [r for r in caplog.records if "periodic integrity check failed unexpectedly" in r.getMessage()]
    assert len(reported) == 2 and reported[0].exc_info[0] is RuntimeError


class Client:
    def close(self) -> None:
        pass


def test_the_log_shipper_reports_a_failure_and_still_spools_everything(tmp_path, caplog):
    metrics = Metrics()
    sink = ElasticsearchSink(shipping_settings(tmp_path, _closed_port_url(), LOG_SHIP_INTERVAL=0.01), metrics,
                             client=Client())
    sink._worker._round = rounds = failing(2, sink._worker._round)
    with caplog.at_level(logging.ERROR, "exporter.sinks.elasticsearch"):
        sink.start()
        wait_until(lambda: len(rounds.calls) >= 4)
        assert sink._thread.is_alive()
        for number in range(50):
            sink.submit(_line(number), logging.INFO)
        sink.close(1.0)
    assert errors(metrics, "log_shipper") == 2
    assert sink.stats()["spooled"] == 50 and sink.stats()["dropped"] == {}
    assert sum("shipping a batch failed unexpectedly" in r.getMessage() for r in caplog.records) == 2


def test_the_backup_scheduler_reports_a_failure_and_keeps_its_schedule():
    metrics = Metrics()
    done = threading.Event()
    # The catalog cannot be read once; then a backup is due until one has run, then in an hour.
    last_run = failing(1, lambda: time.time() + 3600 if done.is_set() else None)
    job_errors = [BackupError("disk full"), KeyError("a bug")]

    def job() -> None:
        if job_errors:
            raise job_errors.pop(0)
        done.set()

    scheduler = Scheduler([Job("backup", 0.01, last_run, job)], metrics)
    scheduler.start()
    try:
        assert done.wait(10)
    finally:
        scheduler.stop()
    # The unreadable catalog and the KeyError are unexpected; a BackupError the job has reported.
    assert errors(metrics, "backup_scheduler") == 2


@pytest.fixture
def alerts(tmp_path):
    """Start an alert manager (``alerts(channels, **flags)``) on its own metrics; disabled after."""
    started = []

    def start(channels: dict | None = None, **flags) -> AlertManager:
        manager = manager_with(Metrics(), channels)
        manager.enable(alert_settings(tmp_path, **flags))
        started.append(manager)
        return manager

    yield start
    for manager in started:
        manager.disable(timeout=0.5)


def test_an_alert_lane_reports_a_failure_and_delivers_after_it(alerts):
    channel = RecordingChannel("webhook")
    manager = alerts({"webhook": channel}, ALERT_CHANNELS={"critical": ["webhook"]})
    limiter = manager._router.lanes["webhook"].limiter
    limiter.delay = failing(1, limiter.delay)
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.CRITICAL, "title", "message")
    wait_until(lambda: len(channel.sent) == 1)
    assert errors(manager.metrics, "alert_delivery") == 1


def test_the_alert_intake_reports_a_failure_and_routes_the_next_alerts(alerts):
    channel = RecordingChannel("webhook")
    manager = alerts({"webhook": channel}, ALERT_CHANNELS={"critical": ["webhook"]})
    manager._router.route = failing(1, manager._router.route)
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.CRITICAL, "first", "one message")
    wait_until(lambda: errors(manager.metrics, "alert_intake") == 1)
    manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.CRITICAL, "second", "another message")
    wait_until(lambda: sorted(alert.title for alert in channel.sent) == ["first", "second"])
    assert errors(manager.metrics, "alert_intake") == 1


def test_alert_persistence_reports_a_failure_and_goes_on(alerts):
    manager = alerts()
    history = manager._state.history
    history.oversized = checks = failing(1, history.oversized)
    for number in range(3):  # each alert wakes the persisting loop for a tick
        manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "title", f"message {number}",
                                   task_id=str(number))
        wait_until(lambda: len(checks.calls) > number)
    assert errors(manager.metrics, "alert_persistence") == 1


def test_the_alert_loop_starts_its_io_threads_up_front_and_never_more():
    """Found by the rehearsal: the loop's default pool started a thread whenever two blocking
    calls (an SMTP delivery, the resource check) happened to overlap, so the bot's thread count
    rose at a random moment long after enable(). Now all its threads run from start()."""
    from exporter.alert_manager.worker import IO_THREADS, LoopThread

    def io_threads():
        return [t for t in threading.enumerate() if t.name.startswith("test-loop-io")]

    worker = LoopThread("test-loop").start()
    try:
        assert len(io_threads()) == IO_THREADS
        before = io_threads()  # this loop's own: an earlier test's threads may end meanwhile

        async def overlapping_calls():
            import asyncio

            await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(3 * IO_THREADS)))

        worker.run(overlapping_calls(), timeout=10)
        assert io_threads() == before
    finally:
        worker.stop(timeout=5)
    wait_until(lambda: not io_threads(), 5, "the loop's io threads to end after stop()")
