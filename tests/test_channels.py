"""Each notification channel against the harness's real stand-ins (SMTP, Bot API, webhook)."""
from __future__ import annotations

import logging

import pytest

from exporter.alert_manager import Alert, AlertSeverity, AlertType
from exporter.channels import alertmanager as am_channel
from exporter.channels import discord as discord_channel
from exporter.channels import email as email_channel
from exporter.channels import log as log_channel
from exporter.channels import slack as slack_channel
from exporter.channels import telegram as telegram_channel
from exporter.channels import webhook as webhook_channel
from exporter.config import Secret, load_settings
from exporter.errors import DeliveryError
from tests.harness.smtp import SMTPServer
from tests.harness.telegram import markdown_v2_error

NASTY = "Disk *almost* full_ [50%] (see `df`) > #1 + a-b = c | {x}. ~ok! \\ done"


def make_alert(**overrides) -> Alert:
    values = dict(type=AlertType.DISK_FULL, severity=AlertSeverity.CRITICAL, title="Disk almost full",
                  message=NASTY, first_seen=1_800_000_000.0, task_id="disk:/data",
                  details={"path": "/data"})
    values.update(overrides)
    return Alert(**values)


# --------------------------------------------------------------------------- telegram


def test_markdown_v2_escaping_parses_for_every_reserved_character():
    text = telegram_channel.escape_markdown_v2("_*[]()~`>#+-=|{}.!\\ plain")
    assert markdown_v2_error(text) is None
    assert markdown_v2_error(telegram_channel.format_message(make_alert())) is None
    assert markdown_v2_error(telegram_channel.format_message(make_alert(repeat_count=3), resolved=True)) is None
    long = telegram_channel.format_message(make_alert(message="." * 5000))
    assert len(long) <= telegram_channel.MAX_LENGTH and markdown_v2_error(long) is None


@pytest.mark.parametrize("overrides", [{"title": "T*" * 3000}, {"message": "💥." * 3000},
                                       {"title": "🚨" * 3000, "message": "\\" * 5000}])
def test_a_long_alert_is_cut_to_telegrams_limit_and_still_parses(overrides):
    text = telegram_channel.format_message(make_alert(**overrides))
    assert len(text.encode("utf-16-le")) // 2 <= telegram_channel.MAX_LENGTH  # Telegram counts UTF-16 units
    assert markdown_v2_error(text) is None
    title = text.split("\n")[0]
    assert title.startswith("*") and title.endswith("*")  # the bold title is closed


async def test_telegram_delivers_to_the_bot_api(telegram_api):
    channel = telegram_channel.TelegramChannel(Secret(telegram_api.token), "-1001", telegram_api.url)
    try:
        await channel.send(make_alert())
        await channel.send_resolved(make_alert())
    finally:
        await channel.close()
    assert len(telegram_api.messages) == 2
    first = telegram_api.messages[0]
    assert first["chat_id"] == "-1001" and first["parse_mode"] == "MarkdownV2"
    assert "Disk almost full" in first["text"] and "\\*almost\\*" in first["text"]
    assert "RESOLVED" in telegram_api.messages[1]["text"]


async def test_telegram_errors_never_show_the_token(telegram_api, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "999999:WRONG-token-for-the-test"
    channel = telegram_channel.TelegramChannel(Secret(wrong), "-1001", telegram_api.url)
    with pytest.raises(DeliveryError) as refused:
        await channel.send(make_alert())
    assert "Unauthorized" in str(refused.value)
    telegram_api.stop()
    with pytest.raises(DeliveryError) as unreachable:
        await channel.send(make_alert())
    await channel.close()
    for error in (refused.value, unreachable.value):
        assert wrong not in str(error) and wrong not in repr(error.__cause__)
    assert wrong not in caplog.text
    # httpx logged the request, with the token in the URL masked
    assert any(record.name == "httpx" and "/bot****/sendMessage" in record.getMessage() for record in caplog.records)


def test_telegram_from_settings(tmp_path):
    settings = load_settings({"TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_URL": "http://127.0.0.1:1/"},
                             environ={"TELEGRAM_BOT_TOKEN": "1:x"})
    channel = telegram_channel.from_settings(settings.alerts)
    assert channel.chat_id == "42" and channel.api_url == "http://127.0.0.1:1"
    assert "1:x" not in repr(vars(channel))


# --------------------------------------------------------------------------- email


async def test_email_delivers_to_the_smtp_server(smtp_server):
    channel = email_channel.EmailChannel(smtp_server.host, smtp_server.port, "bot@example.org",
                                         ("ops@example.org", "oncall@example.org"), starttls=False)
    await channel.send(make_alert())
    await channel.send_resolved(make_alert())
    assert len(smtp_server.messages) == 2
    mail = smtp_server.messages[0]
    assert mail.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    assert mail.message["Subject"] == "[opsstack CRITICAL] Disk almost full"
    assert NASTY in mail.message.get_content()
    assert smtp_server.messages[1].message["Subject"] == "[opsstack RESOLVED] Disk almost full"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_email_logs_in_and_hides_the_password():
    server = SMTPServer(credentials=("alerts", "s3cret-pass")).start()
    try:
        good = email_channel.EmailChannel(server.host, server.port, "bot@example.org", ("ops@example.org",),
                                          starttls=False, username="alerts", password=Secret("s3cret-pass"))
        await good.send(make_alert())
        assert len(server.messages) == 1
        bad = email_channel.EmailChannel(server.host, server.port, "bot@example.org", ("ops@example.org",),
                                         starttls=False, username="alerts", password=Secret("wrong-pass"),
                                         timeout=2)
        with pytest.raises(DeliveryError, match="535|Disconnected") as caught:
            await bad.send(make_alert())
        assert "wrong-pass" not in str(caught.value) and len(server.messages) == 1
    finally:
        server.stop()


def test_an_email_subject_is_one_line_whatever_the_title():
    channel = email_channel.EmailChannel("127.0.0.1", 25, "bot@example.org", ("ops@example.org",))
    message = channel.message(make_alert(title="Disk full\r\non /data"))
    assert message["Subject"] == "[opsstack CRITICAL] Disk full on /data"


def test_json_payloads_carry_non_finite_numbers_as_text():
    from exporter.channels._common import json_safe

    assert json_safe({"a": [float("nan"), 1.5, {"b": float("-inf")}], "c": "x"}) == \
        {"a": ["nan", 1.5, {"b": "-inf"}], "c": "x"}


async def test_email_to_a_closed_port_is_a_delivery_error():
    from tests.harness.base import free_port

    channel = email_channel.EmailChannel("127.0.0.1", free_port(), "a@b.c", ("d@e.f",), starttls=False, timeout=2)
    with pytest.raises(DeliveryError, match="ConnectionRefusedError"):
        await channel.send(make_alert())


# --------------------------------------------------------------------------- webhook, slack, log


async def test_webhook_posts_json(webhook_receiver):
    channel = webhook_channel.WebhookChannel(Secret(f"{webhook_receiver.url}/hook?token=abc"))
    try:
        await channel.send(make_alert())
        await channel.send_resolved(make_alert(resolved_at=1_800_000_060.0))
    finally:
        await channel.close()
    firing, resolved = (request["json"] for request in webhook_receiver.requests)
    assert firing["status"] == "firing" and firing["alert"]["type"] == "disk_full"
    assert firing["alert"]["message"] == NASTY and firing["alert"]["severity"] == "critical"
    assert resolved["status"] == "resolved" and resolved["alert"]["resolved"] is True


async def test_webhook_failure_hides_the_url(webhook_receiver):
    url = f"{webhook_receiver.url}/hook?token=very-secret-token"
    webhook_receiver.stop()
    channel = webhook_channel.WebhookChannel(Secret(url))
    with pytest.raises(DeliveryError) as caught:
        await channel.send(make_alert())
    await channel.close()
    assert "very-secret-token" not in str(caught.value)


async def test_a_webhook_url_is_masked_in_httpx_logs_as_httpx_writes_it(webhook_receiver, caplog):
    caplog.set_level(logging.DEBUG)
    url = webhook_receiver.url.replace("http://", "HTTP://") + "/hooks/s3cretWebhookToken42"
    channel = webhook_channel.WebhookChannel(Secret(url))
    await channel.send(make_alert())
    await channel.close()
    assert len(webhook_receiver.requests) == 1
    assert any(record.name.startswith("httpx") for record in caplog.records)
    assert "s3cretWebhookToken42" not in caplog.text


async def test_slack_posts_text(webhook_receiver):
    channel = slack_channel.SlackChannel(Secret(f"{webhook_receiver.url}/services/T0/B0/XYZ"))
    await channel.send(make_alert())
    await channel.close()
    [request] = webhook_receiver.requests
    assert request["path"] == "/services/T0/B0/XYZ"
    assert request["json"]["text"].startswith("🚨 [CRITICAL] Disk almost full")


async def test_log_channel_writes_one_line(caplog):
    caplog.set_level(logging.INFO, logger="exporter.alerts")
    channel = log_channel.LogChannel()
    await channel.send(make_alert(repeat_count=4))
    await channel.send_resolved(make_alert(severity=AlertSeverity.HIGH))
    firing, resolved = caplog.records
    assert firing.levelno == logging.CRITICAL and "repeated=4" in firing.getMessage()
    assert resolved.levelno == logging.INFO and "resolved" in resolved.getMessage()
    assert getattr(firing, "event.kind") == "alert" and getattr(firing, "event.action") == "alert.firing"
    assert getattr(resolved, "event.action") == "alert.resolved" and getattr(resolved, "event.severity") == 3


def test_every_alert_type_but_custom_has_an_ecs_category():
    assert set(log_channel.CATEGORIES) == {kind.value for kind in AlertType} - {"custom"}
    assert set(log_channel.SEVERITIES) == set(log_channel.LEVELS) == {s.value for s in AlertSeverity}


# --------------------------------------------------------------------------- alertmanager payload


def test_alertmanager_payload_labels_and_resolve():
    alert = make_alert(type=AlertType.DOWNLOAD_FAILED, severity=AlertSeverity.HIGH, task_id="d-7")
    item = am_channel.payload(alert)
    assert item["labels"] == {"alertname": "BotDownloadFailed", "severity": "warning", "type": "download_failed",
                              "bot_severity": "high", "fingerprint": alert.fingerprint, "source": "bot"}
    assert item["annotations"]["summary"] == "Disk almost full"
    assert item["annotations"]["description"].endswith("(task d-7)")
    assert item["startsAt"] == "2027-01-15T08:00:00.000Z" and "endsAt" not in item
    ended = am_channel.payload(alert, resolved_at=1_800_000_060.0)
    assert ended["endsAt"] == "2027-01-15T08:01:00.000Z"
    assert {am_channel.ROUTING_SEVERITY[s.value] for s in AlertSeverity} == {"critical", "warning", "info"}


def test_channels_are_imported_only_when_used():
    import subprocess
    import sys

    # the registry (exporter.channels itself) is loaded with the settings; no channel module is
    code = ("import sys; from exporter.alert_manager import alert_manager; "
            "print(sorted(m for m in sys.modules if m.startswith('exporter.channels.') or m in ('httpx', 'smtplib')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_registry_names_every_channel_module_and_the_settings_accept_them():
    import pkgutil

    import exporter.channels
    from exporter.channels import CHANNELS
    from exporter.config import load_settings

    modules = {m.name for m in pkgutil.iter_modules(exporter.channels.__path__) if not m.name.startswith("_")}
    assert set(CHANNELS) == modules
    settings = load_settings({"ALERT_CHANNELS": {"critical": sorted(CHANNELS)}}, environ={})
    assert settings.alerts.channels["critical"] == tuple(sorted(CHANNELS))


async def test_a_message_telegram_refuses_is_marked_permanent(telegram_api):
    channel = telegram_channel.TelegramChannel(Secret(telegram_api.token), "", telegram_api.url)
    with pytest.raises(DeliveryError, match="chat_id is empty") as caught:
        await channel.send(make_alert())
    await channel.close()
    assert caught.value.permanent is True


# --------------------------------------------------------------------------- discord


@pytest.fixture
def discord():
    from tests.harness.discord import DiscordWebhook

    server = DiscordWebhook().start()
    yield server
    server.stop()


@pytest.mark.parametrize("overrides", [
    {}, {"title": "T" * 5000, "message": "m" * 9000},
    {"details": {f"key{n}": "v" * 2000 for n in range(40)}, "message": "x" * 5000},
    {"details": {"k" * 400: "v\n" * 800}, "task_id": "t" * 3000, "repeat_count": 7},
])
async def test_discord_messages_fit_discords_limits(discord, overrides):
    from tests.harness.discord import form_error

    alert = make_alert(**overrides)
    for resolved in (False, True):
        body = discord_channel.message(alert, resolved=resolved)
        assert form_error(body) is None, form_error(body)
        assert len(body["content"]) <= 2000
    channel = discord_channel.DiscordChannel(Secret(discord.webhook_url))
    try:
        await channel.send(alert)
        await channel.send_resolved(alert)
    finally:
        await channel.close()
    firing, resolved = discord.messages
    assert firing["content"].startswith("🚨 **CRITICAL**") and resolved["content"].startswith("✅ **RESOLVED**")
    assert firing["embeds"][0]["description"].startswith(alert.message[:100])
    assert resolved["embeds"][0]["color"] == discord_channel.COLOUR["resolved"]


def test_the_discord_stand_in_refuses_what_discord_refuses():
    from tests.harness.discord import form_error

    assert form_error({"content": "x" * 2001})[1]["code"] == 50035
    assert form_error({"content": " "})[1]["code"] == 50006
    assert form_error({"embeds": [{"title": "t" * 257}]})[1]["code"] == 50035
    assert form_error({"embeds": [{"description": "d" * 4000, "fields": [{"name": "n", "value": "v" * 1000}] * 3}]})
    assert form_error({"embeds": [{"title": "ok"}] * 11})


async def test_discord_waits_out_its_rate_limit_and_delivers_each_alert_once(tmp_path, discord):
    from exporter.alert_manager import AlertManager
    from exporter.channels import CHANNELS
    from exporter.metrics import Metrics

    discord.limit, discord.window = 2, 1.0
    metrics = Metrics()
    manager = AlertManager(metrics=metrics, channel_factories=CHANNELS, monitor_resources=False,
                           retry_base=0.05, retry_max=0.1)
    manager.enable(load_settings({"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state"),
                                  "ALERT_CHANNELS": {"high": ["discord"]}, "ALERT_RATE_LIMIT": 1000},
                                 environ={"DISCORD_WEBHOOK_URL": discord.webhook_url}))
    try:
        for n in range(7):
            manager.trigger_alert_sync(AlertType.API_ERROR, AlertSeverity.HIGH, "API error", f"call {n} failed",
                                       task_id=f"call-{n}")
        assert manager.flush(30), manager.channel_stats()
    finally:
        manager.disable()
    titles = [m["embeds"][0]["fields"][1]["value"] for m in discord.messages]
    assert titles == [f"call-{n}" for n in range(7)]  # each once, in order
    # The bucket's reset was waited for, not hammered: at most one refused try per window
    # (the channel's own backoff alone, 0.05-0.1 s, would have been refused ~10 times a window).
    assert len(discord.refused) <= 2, discord.refused
    starts = sorted(discord.sent_at)
    for earlier, later in zip(starts, starts[2:]):  # never more than 2 in any 1 s
        assert later - earlier >= 1.0 - 0.01


async def test_discord_answers_429_with_the_wait_from_its_body(discord):
    discord.limit = 1
    channel = discord_channel.DiscordChannel(Secret(discord.webhook_url))
    discord.sent_at.append(__import__("time").time())  # the bucket is already empty
    try:
        with pytest.raises(DeliveryError) as caught:
            await channel.send(make_alert())
    finally:
        await channel.close()
    assert "429" in str(caught.value) and 0 < caught.value.retry_after <= discord.window
    assert not caught.value.permanent


async def test_discord_errors_never_show_the_webhook_token(discord, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = discord.webhook_url.replace(discord.token, "not-the-token-of-this-hook")
    channel = discord_channel.DiscordChannel(Secret(wrong))
    with pytest.raises(DeliveryError) as unknown:
        await channel.send(make_alert())
    assert "Unknown Webhook" in str(unknown.value) and unknown.value.permanent
    discord.stop()
    with pytest.raises(DeliveryError) as unreachable:
        await channel.send(make_alert())
    await channel.close()
    for error in (unknown.value, unreachable.value):
        assert "not-the-token" not in str(error)
    assert "not-the-token" not in caplog.text


# --------------------------------------------------------------------------- alertmanager cluster


def test_alertmanager_url_takes_several_and_never_shows_one():
    from exporter.errors import ChannelConfigError

    assert am_channel.split_urls(" http://a:9093/ ,https://u:p@b:9093") == ["http://a:9093", "https://u:p@b:9093"]
    with pytest.raises(ChannelConfigError, match="URL number 2") as caught:
        am_channel.split_urls("http://a:9093,ftp://user:secret@b")
    assert "secret" not in str(caught.value)
    settings = load_settings({"ALERTMANAGER_RESEND_INTERVAL": 5}, environ={})
    assert settings.alerts.alertmanager_resend_interval == 5.0
    assert load_settings({}, environ={}).alerts.alertmanager_resend_interval == 60.0


async def test_an_alertmanager_that_was_down_gets_the_resolution_it_missed():
    import asyncio
    import time

    from tests.harness.base import free_port
    from tests.harness.webhook import WebhookReceiver

    up, down = WebhookReceiver().start(), WebhookReceiver().start()
    down.stop()
    channel = am_channel.AlertmanagerChannel(Secret(f"{up.url}, {down.url}"), resend_interval=0.2)
    alert = make_alert()
    try:
        await channel.send(alert)  # one took it: delivered
        alert.resolved_at = 1_800_000_100.0
        await channel.send_resolved(alert)
        down.start()  # same port: back
        deadline = time.monotonic() + 10
        while not any(item.get("endsAt") == "2027-01-15T08:01:40.000Z" for request in down.requests
                      for item in request["json"]):
            assert time.monotonic() < deadline, "the resolution never reached the one that was down"
            await asyncio.sleep(0.05)
    finally:
        await channel.close()
        up.stop()
        down.stop()
    assert [r["path"] for r in up.requests][:2] == ["/api/v2/alerts"] * 2
    nowhere = am_channel.AlertmanagerChannel(Secret(f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(DeliveryError, match="all 2 Alertmanager"):
            await nowhere.send(make_alert())
    finally:
        await nowhere.close()
