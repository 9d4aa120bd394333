"""`opsstack demo` end to end: a short run leaves logs, metrics, backups and alerts to inspect."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from exporter.config import KEYS_BY_NAME
from tests.harness.base import free_port
from tests.probes import wait_until

pytestmark = pytest.mark.slow


def _demo_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEYS_BY_NAME and k != "OPSSTACK_CONFIG"}
    env["METRICS_PORT"] = str(port)
    return env


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _find(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    prefix = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return None


def _sample(text: str, name: str, **labels: str) -> float:
    value = _find(text, name, **labels)
    assert value is not None, f"{name} {labels} not in the scrape"
    return value


def _scrape_or_none(port: int) -> str | None:
    try:
        return _scrape(port)
    except OSError:  # not serving yet
        return None


def _served(port: int) -> str | None:
    """The demo's scrape once it shows a download, a backup and an operation timing, else None."""
    text = _scrape_or_none(port) or ""
    moved = (_find(text, "bot_downloads_total", outcome="success") or 0) > 0 and \
        (_find(text, "bot_backup_last_success_timestamp_seconds") or 0) > 0
    return text if moved and "bot_operation_duration_seconds_bucket" in text else None


def test_demo_run_produces_logs_metrics_backups_and_alerts(tmp_path: Path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--duration", "14", "--rate", "20", "--seed", "3"],
        cwd=tmp_path, env=_demo_env(port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scraped = wait_until(lambda: _served(port), timeout=12, what="the demo's downloads, backup and timings",
                         interval=0.5)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert f"http://127.0.0.1:{port}/metrics" in stdout
    assert "stopped cleanly" in stdout

    # Metrics were served while it ran, and moved.
    assert _sample(scraped, "bot_downloads_total", outcome="success") > 0
    assert _sample(scraped, "bot_backup_last_success_timestamp_seconds") > 0
    assert "bot_operation_duration_seconds_bucket" in scraped

    # ECS logs, owner-only.
    log_file = tmp_path / "logs" / "bot.json"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    actions = {line.get("event", {}).get("action") for line in lines}
    assert {"download", "upload"} <= actions
    assert oct(log_file.stat().st_mode & 0o777) == "0o600"

    # Backups that list and verify.
    manifests = sorted((tmp_path / "backups").glob("*.manifest.json"))
    assert manifests
    listed = subprocess.run([sys.executable, "-m", "exporter", "backup", "list", "--json"], cwd=tmp_path,
                            env=_demo_env(port) | {"BACKUP_DIR": "backups"}, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == len(manifests)

    # Alerts went to the log channel and into the history.
    history = subprocess.run([sys.executable, "-m", "exporter", "alerts", "list", "--json"], cwd=tmp_path,
                             env=_demo_env(port) | {"STATE_DIR": "state"}, capture_output=True, text=True,
                             timeout=60)
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)


def test_demo_stops_cleanly_on_ctrl_c(ctrl_c_reaches_children, tmp_path: Path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--duration", "0"], cwd=tmp_path,
                               env=_demo_env(port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _scrape_or_none(port), timeout=20, what="the demo serving /metrics", interval=0.3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr[-3000:]
    assert "stopped cleanly" in stdout
    assert "Traceback" not in stderr


def _active_bot_alerts(text: str) -> float | None:
    """What the Overview's *Active bot alerts* panel shows for this scrape: sum(bot_alerts_active)."""
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("bot_alerts_active{")]
    return sum(values) if values else None


def test_active_bot_alerts_return_to_zero_when_the_injected_failures_clear(ctrl_c_reaches_children, tmp_path: Path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--duration", "0", "--rate", "20", "--seed", "3",
         "--failures-for", "8"],
        cwd=tmp_path, env=_demo_env(port) | {"DISK_FREE_MIN_PERCENT": "0", "MEMORY_MAX_PERCENT": "100"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (_active_bot_alerts(_scrape_or_none(port) or "") or 0) > 0, timeout=20,
                   what="alerts firing while failures are injected", interval=0.3)
        # Failures stop after 8 s; each producer then clears its alerts on its next success (a
        # transfer, an API call, a thumbnail job in time, the integrity check repairing, every 15 s).
        wait_until(lambda: _active_bot_alerts(_scrape_or_none(port) or "") == 0, timeout=45,
                   what="Active bot alerts back to 0 on a scrape", interval=0.3)
        cleared_at = time.time()
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr[-3000:]
    history = subprocess.run([sys.executable, "-m", "exporter", "alerts", "list", "--json"], cwd=tmp_path,
                             env=_demo_env(port) | {"STATE_DIR": "state"}, capture_output=True, text=True,
                             timeout=60)
    alerts = [alert for alert in json.loads(history.stdout) if alert["first_seen"] < cleared_at]
    assert alerts and all(alert["resolved"] for alert in alerts), [a for a in alerts if not a["resolved"]]
    assert {"download_failed", "slow_operation"} <= {alert["type"] for alert in alerts}  # they did fire
