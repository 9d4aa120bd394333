"""End to end with the real services: Prometheus -> rules -> Alertmanager -> Telegram/e-mail/webhook,
the bot's own channels to Alertmanager and Telegram, and delivery across outages and a restart."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import start_http_server

from exporter.alert_manager import AlertManager, AlertSeverity, AlertType
from exporter.channels import CHANNELS
from exporter.channels.telegram import escape_markdown_v2
from exporter.config import load_settings
from exporter.metrics import Metrics
from tests import probes
from tests.harness.base import free_port

pytestmark = [pytest.mark.slow, pytest.mark.services]

ROOT = Path(__file__).resolve().parent.parent
AM_DIR = ROOT / "deploy" / "alertmanager"
RULES = {rule["alert"]: rule for group in yaml.safe_load((ROOT / "alert_rules" / "bot.yml").read_text())["groups"]
         for rule in group["rules"] if "alert" in rule}
AM_CHAT = 4242  # the chat Alertmanager posts to; the bot posts to BOT_CHAT
BOT_CHAT = "-100777"


# Alertmanager groups and sends in seconds: a minute of patience, polled five times a second.
wait_until = functools.partial(probes.wait_until, timeout=60.0, interval=0.2)


def alertmanager_config(tmp_path: Path, telegram_api, smtp_server, webhook_receiver) -> dict:
    """deploy/alertmanager/alertmanager.yml as committed, pointed at the loopback services: its
    secret files written under ``tmp_path``, its non-secret settings (chat, SMTP server, addresses)
    replaced, and groups sent after 1 s instead of 30 s."""
    # through JSON: the receivers that share a YAML anchor become copies, each changed once
    config = json.loads(json.dumps(yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())))
    secrets = {"smtp_password": "", "telegram_bot_token": telegram_api.token,
               "alert_info_webhook_url": f"{webhook_receiver.url}/info",
               "alert_watchdog_url": f"{webhook_receiver.url}/watchdog"}
    for name, value in secrets.items():
        (tmp_path / name).write_text(value)

    def local(path: str) -> str:
        name = path.removeprefix("/run/secrets/")
        assert name in secrets, f"{path}: a secret file this test does not provide"
        return str(tmp_path / name)

    config["global"].update(telegram_api_url=telegram_api.url, smtp_smarthost=f"{smtp_server.host}:{smtp_server.port}",
                            smtp_require_tls=False, smtp_from="alertmanager@example.org",
                            smtp_auth_password_file=local(config["global"]["smtp_auth_password_file"]))
    config["templates"] = [str(AM_DIR / pattern) for pattern in config["templates"]]
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for item in receiver.get("telegram_configs", []):
            item.update(chat_id=AM_CHAT, bot_token_file=local(item["bot_token_file"]))
        for item in receiver.get("email_configs", []):
            item["to"] = "ops@example.org"
        for item in receiver.get("webhook_configs", []):
            item["url_file"] = local(item["url_file"])
    return config


def telegram_texts(telegram_api, chat) -> list[str]:
    with telegram_api.lock:
        return [m["text"] for m in telegram_api.messages if str(m["chat_id"]) == str(chat)]


@pytest.fixture
def exporter():
    metrics = Metrics()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    yield metrics, f"127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def fast_rules(tmp_path: Path) -> Path:
    """alert_rules/bot.yml with every `for:` shortened to 2s (the expressions unchanged)."""
    rules = yaml.safe_load((ROOT / "alert_rules" / "bot.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path = tmp_path / "bot-fast.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def test_prometheus_rules_reach_telegram_email_and_webhook(tmp_path, exporter, start_prometheus,
                                                           start_alertmanager, telegram_api, smtp_server,
                                                           webhook_receiver):
    metrics, target = exporter
    metrics.disk_free_ratio.labels("/data").set(0.03)  # below both 10% (warning) and 5% (critical)
    am = start_alertmanager(alertmanager_config(tmp_path, telegram_api, smtp_server, webhook_receiver))
    prometheus = start_prometheus({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "bot", "static_configs": [{"targets": [target]}]}],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}]},
    }, rule_files=[fast_rules(tmp_path)])

    # critical -> Telegram and e-mail
    wait_until(lambda: any("BotDiskAlmostFull" in t and "(critical)" in t for t in telegram_texts(telegram_api, AM_CHAT)),
               what="the critical disk alert on Telegram")
    text = next(t for t in telegram_texts(telegram_api, AM_CHAT) if "BotDiskAlmostFull" in t)
    assert "FIRING: BotDiskAlmostFull" in text and "/data on " in text and "3% free" in text
    runbook = RULES["BotDiskAlmostFull"]["annotations"]["runbook_url"]
    assert runbook.startswith("https://") and runbook.endswith("docs/runbook.md#botdiskalmostfull")
    assert runbook in text
    mail = wait_until(lambda: next((m for m in smtp_server.messages
                                    if "BotDiskAlmostFull" in m.message["Subject"]), None), what="the e-mail")
    assert mail.message["Subject"] == "[FIRING:1] BotDiskAlmostFull (critical)"
    assert mail.rcpt_tos == ["ops@example.org"]
    assert f"Runbook: {runbook}" in mail.message.get_body(("plain",)).get_content()

    # the watchdog -> its webhook
    watchdog = wait_until(lambda: [r for r in webhook_receiver.requests if r["path"] == "/watchdog"],
                          what="the watchdog webhook")
    assert watchdog[0]["json"]["commonLabels"]["alertname"] == "BotWatchdog"

    # the warning of the same alert is inhibited while the critical one fires
    def warning_state():
        for alert in am.alerts():
            if alert["labels"]["alertname"] == "BotDiskAlmostFull" and alert["labels"]["severity"] == "warning":
                return alert["status"]
        return None

    status = wait_until(warning_state, what="the warning in Alertmanager")
    assert status["state"] == "suppressed" and status["inhibitedBy"]
    assert not any("(warning)" in t and "BotDiskAlmostFull" in t for t in telegram_texts(telegram_api, AM_CHAT))
    assert prometheus.query('ALERTS{alertname="BotDiskAlmostFull", alertstate="firing"}')

    # the disk recovers: Telegram is told it is resolved
    metrics.disk_free_ratio.labels("/data").set(0.5)
    wait_until(lambda: any("RESOLVED: BotDiskAlmostFull" in t for t in telegram_texts(telegram_api, AM_CHAT)),
               what="the resolved notification")
    # Alertmanager understood the stand-in's answers: one firing message, no retried duplicates
    firing = [t for t in telegram_texts(telegram_api, AM_CHAT) if "FIRING: BotDiskAlmostFull" in t]
    assert len(firing) == 1


def bot_settings(tmp_path: Path, channels: dict, **env: str):
    return load_settings({"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state"),
                          "ALERT_CHANNELS": channels, "ALERT_DEDUP_WINDOW": 60}, environ=env)


def test_bot_alert_reaches_alertmanager_and_is_routed(tmp_path, start_alertmanager, telegram_api, smtp_server,
                                                      webhook_receiver):
    am = start_alertmanager(alertmanager_config(tmp_path, telegram_api, smtp_server, webhook_receiver))
    manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False, retry_base=0.2,
                           retry_max=1.0)
    manager.enable(bot_settings(tmp_path, {"critical": ["alertmanager"], "high": ["alertmanager"]},
                                ALERTMANAGER_URL=am.url))
    try:
        alert = manager.trigger_alert_sync(AlertType.BACKUP_FAILED, AlertSeverity.CRITICAL, "Backup failed",
                                           "no space left on device", task_id="nightly")
        assert manager.flush(15)
        listed = wait_until(lambda: [a for a in am.alerts() if a["labels"].get("fingerprint") == alert.fingerprint],
                            what="the alert in Alertmanager")
        assert listed[0]["labels"]["alertname"] == "BotBackupFailed"
        assert listed[0]["labels"]["severity"] == "critical" and listed[0]["labels"]["type"] == "backup_failed"
        assert listed[0]["annotations"]["summary"] == "Backup failed"
        assert listed[0]["receivers"][0]["name"] == "critical-telegram-email"
        wait_until(lambda: any("BotBackupFailed" in t for t in telegram_texts(telegram_api, AM_CHAT)),
                   what="Alertmanager's Telegram message for the bot's alert")
        wait_until(lambda: any("BotBackupFailed" in m.message["Subject"] for m in smtp_server.messages),
                   what="Alertmanager's e-mail for the bot's alert")

        manager.resolve_alert(alert)
        assert manager.flush(15)
        wait_until(lambda: not [a for a in am.alerts() if a["labels"].get("fingerprint") == alert.fingerprint],
                   what="the alert to end in Alertmanager")
        wait_until(lambda: any("RESOLVED: BotBackupFailed" in t for t in telegram_texts(telegram_api, AM_CHAT)),
                   what="the resolved message")
    finally:
        manager.disable()


def test_every_alert_is_delivered_after_outages_and_a_bot_restart(tmp_path, start_alertmanager, telegram_api,
                                                                  smtp_server, webhook_receiver):
    am = start_alertmanager(alertmanager_config(tmp_path, telegram_api, smtp_server, webhook_receiver))
    am.stop()
    telegram_api.stop()
    channels = {"critical": ["alertmanager", "telegram"], "high": ["alertmanager", "telegram"]}
    env = {"ALERTMANAGER_URL": am.url, "TELEGRAM_BOT_TOKEN": telegram_api.token, "TELEGRAM_CHAT_ID": BOT_CHAT,
           "TELEGRAM_API_URL": telegram_api.url}
    first_metrics = Metrics()
    first = AlertManager(metrics=first_metrics, channel_factories=CHANNELS, monitor_resources=False,
                         retry_base=0.2, retry_max=1.0)
    first.enable(bot_settings(tmp_path, channels, **env))
    sent = [first.trigger_alert_sync(AlertType.INTEGRITY_FAILED, AlertSeverity.CRITICAL, "Integrity check failed",
                                     f"{name} changed", task_id=name)
            for name in ("config.py", "data/users.db", "tokens")]
    assert not first.flush(1.5)
    failures = first_metrics.registry.get_sample_value("bot_alert_notifications_total",
                                                       {"channel": "alertmanager", "outcome": "failure"})
    assert failures and failures >= 1
    assert first_metrics.registry.get_sample_value("bot_alert_delivery_queue_size") == 6
    first.disable(timeout=0.2)  # the bot restarts while both receivers are still down

    second = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                          retry_base=0.2, retry_max=1.0)
    second.enable(bot_settings(tmp_path, channels, **env))
    try:
        am.start()
        telegram_api.start()
        assert second.flush(30), second.channel_stats()
        texts = telegram_texts(telegram_api, BOT_CHAT)
        for alert in sent:  # each exactly once: nothing lost, nothing doubled by the restart
            assert sum(f"task: {escape_markdown_v2(alert.task_id)}" in t for t in texts) == 1, texts
        fingerprints = {a["labels"].get("fingerprint") for a in am.alerts()}
        assert {alert.fingerprint for alert in sent} <= fingerprints
        stats = second.channel_stats()
        assert stats["alertmanager"] == stats["telegram"] == {"delivered": 3, "pending": 0}
    finally:
        second.disable()


def test_alertmanager_client_contract_resend_escalation_and_end(tmp_path, start_alertmanager, telegram_api,
                                                               smtp_server, webhook_receiver):
    """Firing alerts are re-sent with endsAt ahead (Alertmanager keeps them firing as long as the
    bot does), a severity rise ends the old label set, resolving ends the alert; job/instance set."""
    from datetime import datetime

    from exporter.channels.alertmanager import AlertmanagerChannel
    from exporter.config import Secret

    am = start_alertmanager(alertmanager_config(tmp_path, telegram_api, smtp_server, webhook_receiver))
    target = {"job": "bot", "instance": "bot-host:9464"}
    factories = {**CHANNELS, "alertmanager": lambda settings: AlertmanagerChannel(
        Secret(am.url), target=target, resend_interval=0.5)}
    manager = AlertManager(metrics=Metrics(), channel_factories=factories, monitor_resources=False,
                           retry_base=0.2, retry_max=1.0)
    manager.enable(bot_settings(tmp_path, {"critical": ["alertmanager"], "high": ["alertmanager"]},
                                ALERTMANAGER_URL=am.url))

    def mine(fingerprint):
        return [a for a in am.alerts() if a["labels"].get("fingerprint") == fingerprint]

    def ends(alert):
        return datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()

    try:
        alert = manager.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.HIGH, "Disk filling",
                                           "/data at 91%", task_id="disk:/data")
        assert manager.flush(15)
        first = wait_until(lambda: mine(alert.fingerprint), what="the alert in Alertmanager")
        assert first[0]["labels"]["job"] == "bot" and first[0]["labels"]["instance"] == "bot-host:9464"
        assert ends(first[0]) > time.time()  # firing, with an end ahead
        wait_until(lambda: ends(mine(alert.fingerprint)[0]) > ends(first[0]) + 0.4,
                   what="the end moved ahead by a re-send")

        manager.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.CRITICAL, "Disk filling",
                                   "/data at 91%", task_id="disk:/data")  # the same alert, worse
        assert manager.flush(15)
        wait_until(lambda: [a["labels"]["severity"] for a in mine(alert.fingerprint)] == ["critical"],
                   what="the warning label set ended, the critical one firing")

        manager.resolve_alert(alert.fingerprint)
        assert manager.flush(15)
        wait_until(lambda: not mine(alert.fingerprint), what="the alert ended in Alertmanager")
        time.sleep(1.5)  # three re-send intervals: a resolved alert is not sent again
        assert not mine(alert.fingerprint)
    finally:
        manager.disable()


def test_alerts_still_firing_after_a_bot_restart_stay_alive_in_alertmanager(tmp_path, start_alertmanager,
                                                                            telegram_api, smtp_server,
                                                                            webhook_receiver):
    """Found by the rehearsal: a restarted bot never sent again the alerts still firing from its
    earlier run, so Alertmanager ended them (or, restarted itself, never had them again) while
    get_alerts() still said firing. The new process renews them like its own."""
    from exporter.channels.alertmanager import AlertmanagerChannel
    from exporter.config import Secret

    am = start_alertmanager(alertmanager_config(tmp_path, telegram_api, smtp_server, webhook_receiver))
    factories = {**CHANNELS, "alertmanager": lambda settings: AlertmanagerChannel(Secret(am.url),
                                                                                   resend_interval=0.5)}
    settings = bot_settings(tmp_path, {"high": ["alertmanager"]}, ALERTMANAGER_URL=am.url)

    def in_alertmanager(fingerprint):
        return [a for a in am.alerts() if a["labels"].get("fingerprint") == fingerprint]

    first = AlertManager(metrics=Metrics(), channel_factories=factories, monitor_resources=False)
    first.enable(settings)
    alert = first.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.HIGH, "Disk filling", "/data at 93%")
    assert first.flush(15)
    wait_until(lambda: in_alertmanager(alert.fingerprint), what="the alert in Alertmanager")
    first.disable()
    am.stop()
    am.start()  # Alertmanager keeps alerts in memory only: this one is gone
    assert not in_alertmanager(alert.fingerprint)
    second = AlertManager(metrics=Metrics(), channel_factories=factories, monitor_resources=False)
    second.enable(settings)
    try:
        assert [a.fingerprint for a in second.get_alerts(include_resolved=False)] == [alert.fingerprint]
        wait_until(lambda: in_alertmanager(alert.fingerprint), what="the firing alert renewed by the new process")
    finally:
        second.disable()
