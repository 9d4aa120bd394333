"""Cost of raising an alert on the caller's thread, against a prometheus_client Counter.inc().

    .venv/bin/python bench/bench_alerts.py

Prints per-call times and ratios to the baseline measured in the same run: a repeated alert
(folded by dedup), a new alert each call (history, subscriber and channel queues), and a
call while the manager is disabled.
"""
from __future__ import annotations

import tempfile
import time

from exporter.alert_manager import AlertManager, AlertSeverity, AlertType
from exporter.channels import CHANNELS
from exporter.config import load_settings
from exporter.metrics import Metrics

N = 20_000


def per_call(function, n: int = N) -> float:
    started = time.perf_counter()
    for index in range(n):
        function(index)
    return (time.perf_counter() - started) / n


def main() -> None:
    metrics = Metrics()
    counter = metrics.alerts.labels("custom", "low")
    baseline = per_call(lambda i: counter.inc())

    disabled = AlertManager(metrics=Metrics(), monitor_resources=False)
    off = per_call(lambda i: disabled.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m"))

    with tempfile.TemporaryDirectory() as state:
        manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                               max_alerts=N + 10, intake_size=N + 10, lane_size=N + 10)
        manager.enable(load_settings({"STATE_DIR": state, "ALERT_CHANNELS": {"low": []}}, environ={}))
        manager.subscribe(AlertType.CUSTOM, lambda alert: None)
        repeated = per_call(lambda i: manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t",
                                                                 f"retry after {i} s"))
        fresh = per_call(lambda i: manager.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m",
                                                              task_id=f"task-{i}"))
        manager.flush(60)
        manager.disable()

    print(f"baseline Counter.inc()        {baseline * 1e6:8.2f} us")
    for name, cost in (("disabled trigger_alert_sync", off), ("repeated alert (folded)", repeated),
                       ("new alert each call", fresh)):
        print(f"{name:<29} {cost * 1e6:8.2f} us  x{cost / baseline:6.1f} baseline")


if __name__ == "__main__":
    main()
