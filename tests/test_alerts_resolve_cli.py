"""``opsstack alerts resolve`` against a running bot in another process: the bot resolves the
alerts named and its channel (the Telegram stand-in) gets one resolved message for each; bad
input is one line and a non-zero exit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.config import KEYS_BY_NAME
from tests.probes import wait_until

pytestmark = pytest.mark.slow

BOT = textwrap.dedent("""
    import sys
    from exporter.alert_manager import alert_manager
    from exporter.config import load_settings

    alert_manager.enable(load_settings())
    raised = [alert_manager.trigger_alert_sync("backup_failed", "critical", "Backup failed", "no space left",
                                               details={"action": "create"}),
              alert_manager.trigger_alert_sync("integrity_failed", "critical", "Integrity check failed",
                                               "config.py changed", details={"path": "/srv/config.py"})]
    assert alert_manager.flush(20)
    print(" ".join(alert.fingerprint for alert in raised), flush=True)
    sys.stdin.read()  # runs until the test closes its stdin
    assert alert_manager.flush(20)
    alert_manager.disable()
""")


def env_for(tmp_path: Path, telegram_api) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEYS_BY_NAME and k != "OPSSTACK_CONFIG"}
    env.update(ENABLE_ALERT_SYSTEM="true", STATE_DIR=str(tmp_path / "state"), ALERT_CHANNELS="critical=telegram",
               TELEGRAM_BOT_TOKEN=telegram_api.token, TELEGRAM_CHAT_ID="-100555", TELEGRAM_API_URL=telegram_api.url,
               DISK_FREE_MIN_PERCENT="0", MEMORY_MAX_PERCENT="100", PROCESS_MEMORY_MAX="65536MiB")
    return env


def opsstack(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "alerts", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def resolved_texts(telegram_api) -> list[str]:
    with telegram_api.lock:
        return [m["text"] for m in telegram_api.messages if "RESOLVED" in m["text"]]


def test_resolve_reaches_the_running_bot_and_its_channel_once(tmp_path, telegram_api):
    env = env_for(tmp_path, telegram_api)
    bot = subprocess.Popen([sys.executable, "-c", BOT], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
    try:
        backup_fp, integrity_fp = bot.stdout.readline().split()
        assert len(telegram_api.messages) == 2  # both firing

        done = opsstack(env, "resolve", backup_fp, "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["applied"] is True and [a["fingerprint"] for a in answer["alerts"]] == [backup_fp]
        wait_until(lambda: len(resolved_texts(telegram_api)) == 1, what="the resolved message")

        by_type = opsstack(env, "resolve", "--type", "integrity_failed", "--detail", "path=/srv/config.py")
        assert by_type.returncode == 0, by_type.stderr
        assert integrity_fp in by_type.stdout and "resolved 1 alert(s)" in by_type.stdout

        again = opsstack(env, "resolve", backup_fp)
        assert again.returncode != 0
        assert again.stderr.strip() == f"opsstack alerts: the alert '{backup_fp}' is already resolved"
    finally:
        bot.stdin.close()
        assert bot.wait(30) == 0
    texts = resolved_texts(telegram_api)
    assert len(texts) == 2 and "Backup failed" in texts[0] and "Integrity check failed" in texts[1]
    listed = json.loads(opsstack(env, "list", "--json").stdout)
    assert all(alert["resolved"] for alert in listed) and len(listed) == 2
    assert not list((tmp_path / "state" / "alert_requests").iterdir())  # every request taken


@pytest.mark.parametrize("args,message", [
    (("resolve", "0123456789abcdef"), "no alert has the fingerprint or id '0123456789abcdef'"),
    (("resolve", "--type", "meteor_strike"), "unknown alert type 'meteor_strike'"),
    (("resolve", "--type", "backup_failed"), "no firing backup_failed alert"),
    (("resolve", "--type", "backup_failed", "--detail", "action"), "--detail 'action' is not KEY=VALUE"),
    (("resolve",), "name the alerts to resolve"),
])
def test_bad_input_is_one_line_and_a_failure(tmp_path, args, message):
    env = {k: v for k, v in os.environ.items() if k not in KEYS_BY_NAME and k != "OPSSTACK_CONFIG"}
    env["STATE_DIR"] = str(tmp_path / "state")
    result = opsstack(env, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_a_request_waits_for_a_bot_that_is_not_running(tmp_path):
    from exporter.alert_manager import AlertManager, AlertSeverity, AlertType, control
    from exporter.channels import CHANNELS
    from exporter.config import load_settings
    from exporter.metrics import Metrics

    settings = load_settings({"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state")}, environ={})
    first = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False)
    first.enable(settings)
    alert = first.trigger_alert_sync(AlertType.CUSTOM, AlertSeverity.LOW, "t", "m")
    assert first.flush(5)
    first.disable()
    path = control.submit(settings.general.state_dir, {"action": "resolve", "keys": [alert.fingerprint]})
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"

    second = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False)
    second.enable(settings)
    try:
        wait_until(lambda: second.get_alerts(include_resolved=False) == [], what="the request applied")
        assert not path.exists()
    finally:
        second.disable()
