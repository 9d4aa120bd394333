"""One slow or hanging receiver delays no other: against a real TCP server that accepts and never
answers (``tests/harness/hanging.py``), the other channels, and the other Alertmanagers of a
cluster, still get each notification within ``BOUND`` seconds, once each and in order; and so
does every channel while the shared marks' Redis hangs (a real redis-server suspended with
SIGSTOP, or the hanging server as Redis)."""
from __future__ import annotations

import functools
import os
import signal
import time

import pytest

from exporter.alert_manager import AlertManager, AlertSeverity, AlertType
from exporter.channels import CHANNELS
from exporter.config import load_settings
from exporter.metrics import Metrics
from exporter.shared_state import shared_locks
from tests import probes
from tests.harness.hanging import HangingServer

pytestmark = [pytest.mark.slow]

BOUND = 1.0  # seconds from raising an alert to the other receivers having it
PACED = 12  # alerts raised one a second while Redis does not answer
SEND_TIMEOUT = 5.0  # the lane's timeout: a notification to the hanging one waits that long
RESEND = 0.5  # ALERTMANAGER_RESEND_INTERVAL of these tests
HTTP_TIMEOUT = 10.0  # the Alertmanager channel's: a request to the hanging one gives up after it
wait_until = functools.partial(probes.wait_until, interval=0.01)


@pytest.fixture
def hanging():
    server = HangingServer().start()
    yield server
    server.stop()


@pytest.fixture
def bot(tmp_path):
    started = []

    def start(channels: list[str], **env) -> AlertManager:
        manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                               send_timeout=SEND_TIMEOUT, retry_base=0.2, retry_max=1.0,
                               shared_marks=shared_locks)
        manager.enable(load_settings({"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state"),
                                      "ALERT_CHANNELS": {"high": channels}, "ALERT_RATE_LIMIT": 1000,
                                      "ALERTMANAGER_RESEND_INTERVAL": RESEND, **env}, environ={}))
        started.append(manager)
        return manager

    yield start
    for manager in started:
        manager.disable(timeout=0.5)


def raise_alert(manager: AlertManager, number: int):
    return manager.trigger_alert_sync(AlertType.DISK_FULL, AlertSeverity.HIGH, "Disk filling",
                                      f"/data{number} at 91%", task_id=f"disk:/data{number}")


def hook_events(webhook_receiver) -> list[tuple[str, str]]:
    with webhook_receiver.lock:
        return [(r["json"]["status"], r["json"]["alert"]["fingerprint"]) for r in webhook_receiver.requests]


def received(channel: str, webhook_receiver, telegram_api, smtp_server) -> list[str]:
    """The states (firing, resolved) a receiver got, in order."""
    if channel == "webhook":
        return [state for state, _ in hook_events(webhook_receiver)]
    if channel == "telegram":
        return ["resolved" if "RESOLVED" in m["text"] else "firing" for m in list(telegram_api.messages)]
    return ["resolved" if "RESOLVED" in m.message["Subject"] else "firing" for m in list(smtp_server.messages)]


RECEIVERS = ("webhook", "telegram", "email")


@pytest.mark.services
@pytest.mark.parametrize("hung", ["alertmanager", *RECEIVERS])
def test_a_hanging_channel_delays_no_other(bot, hanging, webhook_receiver, telegram_api, smtp_server, hung):
    receivers = {"webhook": {"ALERT_WEBHOOK_URL": f"{webhook_receiver.url}/hook"},
                 "telegram": {"TELEGRAM_BOT_TOKEN": telegram_api.token, "TELEGRAM_CHAT_ID": "-1001",
                              "TELEGRAM_API_URL": telegram_api.url},
                 "email": {"SMTP_HOST": smtp_server.host, "SMTP_PORT": smtp_server.port, "SMTP_STARTTLS": False,
                           "ALERT_EMAIL_FROM": "bot@example.org", "ALERT_EMAIL_TO": ["ops@example.org"]}}
    receivers.update(alertmanager={"ALERTMANAGER_URL": hanging.url})
    receivers[hung] = {**receivers[hung], **{"webhook": {"ALERT_WEBHOOK_URL": f"{hanging.url}/hook"},
                                             "telegram": {"TELEGRAM_API_URL": hanging.url},
                                             "email": {"SMTP_PORT": hanging.port}}.get(hung, {})}
    channels = sorted({hung, *RECEIVERS})
    others = [name for name in RECEIVERS if name != hung]
    manager = bot(channels, **{key: value for name in channels for key, value in receivers[name].items()})
    want, late = [], []

    def arrived() -> bool:
        return all(received(name, webhook_receiver, telegram_api, smtp_server) == want for name in others)

    for number in range(10):
        raised = time.monotonic()
        alert = raise_alert(manager, number)
        want.append("firing")
        if number % 3 == 2:  # and some resolved, right behind their firing notification
            manager.resolve_alert(alert)
            want.append("resolved")
        wait_until(arrived, timeout=SEND_TIMEOUT, what=f"the other channels ({', '.join(others)})")
        late.append(time.monotonic() - raised)
    assert max(late) < BOUND, [round(x, 3) for x in late]  # and once each, in order (arrived)
    stats = manager.channel_stats()
    assert stats[hung]["delivered"] == 0 and stats[hung]["pending"] > 0  # it did hang
    assert hanging.connections >= 1


@pytest.mark.services
def test_one_hanging_alertmanager_of_a_cluster_delays_none_of_the_others(bot, hanging, start_alertmanager,
                                                                         webhook_receiver):
    am = start_alertmanager({"route": {"receiver": "hook"},
                             "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook_receiver.url}]}]})
    manager = bot(["alertmanager"], ALERTMANAGER_URL=f"{am.url},{hanging.url}")
    late = []
    for number in range(8):
        raised = time.monotonic()
        alert = raise_alert(manager, number)
        wait_until(lambda: manager.channel_stats()["alertmanager"]["delivered"] == number + 1,
                   timeout=3 * SEND_TIMEOUT, what="the notification delivered")
        late.append(time.monotonic() - raised)
        firing = {a["labels"]["fingerprint"] for a in am.alerts() if a["status"]["state"] == "active"}
        assert alert.fingerprint in firing
    assert max(late) < BOUND, late
    # rounds to the healthy one go on every interval, whatever the hanging one holds: the alerts
    # outlive their endsAt (four intervals, 2 s) several times over
    kept_until = time.monotonic() + HTTP_TIMEOUT + 4 * RESEND
    while time.monotonic() < kept_until:
        firing = {a["labels"]["fingerprint"] for a in am.alerts() if a["status"]["state"] == "active"}
        assert len(firing) == 8, "an alert expired in the healthy Alertmanager"
        time.sleep(0.1)
    # at most one request on its way to the hanging one and one waiting at a time
    assert hanging.connections <= 3, hanging.connections


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test alone (it gets suspended)."""
    from tests.harness import redis as redis_harness

    server = redis_harness.start(tmp_path / "redis")
    yield server
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.mark.services
@pytest.mark.parametrize("how", ["suspended", "hanging"])
def test_redis_that_stops_answering_delays_no_notification(bot, own_redis, hanging, webhook_receiver, how):
    """The shared marks and rate limits (Redis) are asked off the delivery loop and waited for at
    most a moment: a redis-server suspended with SIGSTOP (its connection open, no answer), or a
    server that never answers, delays no notification beyond ``BOUND``, for longer than the
    client's breaker keeps it away (5 s) too."""
    url = own_redis.url if how == "suspended" else f"redis://127.0.0.1:{hanging.port}"
    manager = bot(["webhook"], REDIS_URL=f"{url}/0", ALERT_SHARED_GATHER=0.05,
                  ALERT_WEBHOOK_URL=f"{webhook_receiver.url}/hook")
    want, late = [], []
    for number in range(PACED):
        if number == 1 and how == "suspended":  # the first one went through Redis: a connection is open
            os.kill(own_redis.process.pid, signal.SIGSTOP)
        raised = time.monotonic()
        alert = raise_alert(manager, number)
        want.append(("firing", alert.fingerprint))
        if number % 3 == 2:
            manager.resolve_alert(alert)
            want.append(("resolved", alert.fingerprint))
        wait_until(lambda: len(hook_events(webhook_receiver)) == len(want), timeout=30, what="the notification")
        late.append(time.monotonic() - raised)
        time.sleep(max(0.0, raised + 1.0 - time.monotonic()))  # one a second
    assert max(late) < BOUND, [round(x, 3) for x in late]
    assert hook_events(webhook_receiver) == want  # once each, in order


@pytest.mark.services
def test_a_hung_blocking_client_delays_no_other_channel(tmp_path, own_redis, smtp_server):
    """The Celery channel's broker suspended (SIGSTOP) after the first task: each publish hangs
    in the blocking client for good, and the lane, giving up after its timeout, tries again and
    again. Those calls must not take the threads the e-mail channel's client runs on."""
    manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                           send_timeout=0.3, retry_base=0.05, retry_max=0.1)
    manager.enable(load_settings(
        {"ENABLE_ALERT_SYSTEM": True, "STATE_DIR": str(tmp_path / "state"), "ALERT_RATE_LIMIT": 1000,
         "ALERT_CHANNELS": {"high": ["celery", "email"]}, "ALERT_CELERY_TASK": "bot.on_alert",
         "SMTP_HOST": smtp_server.host, "SMTP_PORT": smtp_server.port, "SMTP_STARTTLS": False,
         "ALERT_EMAIL_FROM": "bot@example.org", "ALERT_EMAIL_TO": ["ops@example.org"]},
        environ={"CELERY_BROKER_URL": f"{own_redis.url}/0"}))
    try:
        raise_alert(manager, 99)
        assert manager.flush(15)  # the broker took the first: its connection is open
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        late = []
        for number in range(PACED):  # the celery lane retries some 30 times meanwhile
            raised = time.monotonic()
            raise_alert(manager, number)
            wait_until(lambda: len(smtp_server.messages) == number + 2, timeout=30, what="the e-mail")
            late.append(time.monotonic() - raised)
            time.sleep(max(0.0, raised + 0.5 - time.monotonic()))
        assert max(late) < BOUND, [round(x, 3) for x in late]
        assert manager.channel_stats()["celery"]["delivered"] == 1  # it did hang
    finally:
        manager.disable(timeout=0.5)
