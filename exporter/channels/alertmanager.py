"""The ``alertmanager`` channel: POST ``/api/v2/alerts`` to a Prometheus Alertmanager (or every
Alertmanager of a highly available cluster), as its client contract asks.

Labels ``alertname`` (``Bot`` + the type in CamelCase), ``severity`` (mapped onto the routing
severities critical / warning / info), ``type``, ``bot_severity``, ``fingerprint``, ``job``
(``bot``, the scrape job of the deploy/ Prometheus) and ``instance`` (``ALERTMANAGER_INSTANCE``);
annotations ``summary`` and ``description``.

A firing alert is sent with ``endsAt`` four ``ALERTMANAGER_RESEND_INTERVAL`` ahead and sent
again every interval while it fires, so Alertmanager keeps it firing exactly as long as the bot
does (and ends it on its own if the bot dies, or re-creates it after a restart). A severity
change changes the labels: the old label set is ended in the same request. Resolving sends
``endsAt`` = the resolution time.

``ALERTMANAGER_URL`` may name several Alertmanagers (comma-separated): each gets every alert,
concurrently, as Prometheus does. A delivery succeeds when one of them took it; one that was
down gets what it missed (the firing alerts, the resolutions) at the next re-send round, so it
delays none of the others. One that is slow or hangs does not either: once one took the alert,
the others get ``SPREAD`` seconds, and a request still unanswered then goes on in the
background. Each Alertmanager has at most one request on its way and one waiting for it; a
notification finding both taken goes with its next round instead (a hanging one holds no more
than that, however many alerts fire).

Order: Alertmanager keeps the state of the request it got last, so a round still on its way
with an alert as firing must not arrive after that alert's resolution (it would be active
again for four intervals). Requests to one Alertmanager go one at a time, a round's content is
read when its turn comes, and every resolution goes once more with the next round, before the
firing alerts (a request that timed out may still arrive late; a later alert of the same
fingerprint fires again after it).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..errors import ChannelConfigError, DeliveryError
from ._common import HttpPoster, mask, require

if TYPE_CHECKING:
    from ..config import AlertSettings

log = logging.getLogger("exporter.alerts")
ROUTING_SEVERITY = {"critical": "critical", "high": "warning", "medium": "info", "low": "info"}
RESEND_INTERVAL = 60.0  # seconds between two sends of a firing alert (Alertmanager asks 30 s to 3 min)
ENDED_MAX = 1000  # resolutions kept per Alertmanager for its next round
AHEAD = 4  # endsAt this many intervals ahead: three missed rounds in a row end the alert
SPREAD = 0.25  # seconds the other Alertmanagers get to answer once one took a notification
BUSY = "busy with an earlier request (this one goes with its next round)"


def alertname(alert_type: str) -> str:
    return "Bot" + "".join(part.capitalize() for part in alert_type.split("_"))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(alert, resolved_at: float | None = None, *, ends_at: float | None = None,
            target: dict[str, str] | None = None) -> dict:
    labels = {
        "alertname": alertname(alert.type.value),
        "severity": ROUTING_SEVERITY[alert.severity.value],
        "type": alert.type.value,
        "bot_severity": alert.severity.value,
        "fingerprint": alert.fingerprint,
        "source": "bot",
        **(target or {}),
    }
    description = alert.message
    if alert.task_id:
        description += f" (task {alert.task_id})"
    if alert.repeat_count > 1:
        description += f"; repeated {alert.repeat_count} times"
    item = {"labels": labels, "annotations": {"summary": alert.title, "description": description},
            "startsAt": _iso(alert.first_seen)}
    if resolved_at is not None or ends_at is not None:
        item["endsAt"] = _iso(resolved_at if resolved_at is not None else ends_at)
    return item


def split_urls(value: str) -> list[str]:
    """The Alertmanager base URLs of ``ALERTMANAGER_URL`` (comma-separated)."""
    urls = [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
    for number, url in enumerate(urls, 1):
        if not url.startswith(("http://", "https://")):  # never show it: it may hold a password
            raise ChannelConfigError("ALERTMANAGER_URL", "setting", "****",
                                     f"URL number {number} is not an http:// or https:// URL")
    return urls


class AlertmanagerChannel:
    name = "alertmanager"

    def __init__(self, url, timeout: float = 10.0, *, target: dict[str, str] | None = None,
                 resend_interval: float = RESEND_INTERVAL) -> None:
        self._urls = split_urls(url.get())  # each may carry basic-auth credentials
        for one in self._urls:
            mask(one)
        self._http = HttpPoster(self.name, timeout)
        self._target = target or {}
        self._interval = resend_interval
        self._firing: dict[str, object] = {}  # fingerprint -> the alert as last sent firing
        self._ended: dict[int, list[dict]] = {}  # Alertmanager number -> resolutions for its next round
        self._turns = [asyncio.Lock() for _ in self._urls]  # one request at a time per Alertmanager
        self._waiting = [0] * len(self._urls)  # requests waiting for their turn, per Alertmanager
        self._background: set[asyncio.Task] = set()  # requests left to finish after another took them
        self._resender: asyncio.Task | None = None
        self._rounds: list[asyncio.Task | None] = [None] * len(self._urls)  # each one's last round

    def _firing_item(self, alert) -> dict:
        return payload(alert, ends_at=time.time() + self._interval * AHEAD, target=self._target)

    async def _post(self, number: int, items: Callable[[], list[dict]]) -> str | None:
        """Post ``items()`` (read when this Alertmanager's turn comes) to Alertmanager ``number``;
        the reason it failed, or None. :data:`BUSY` at once when a request is on its way to it
        and another already waits (of a cluster: with one Alertmanager, the lane and the round
        are the only two)."""
        turn = self._turns[number]
        if turn.locked() and self._waiting[number] and len(self._urls) > 1:
            return BUSY
        self._waiting[number] += 1
        try:
            await turn.acquire()
        finally:
            self._waiting[number] -= 1
        try:
            body = items()
            if not body:
                return None
            await self._http.post(self._urls[number] + "/api/v2/alerts", body)
        except DeliveryError as exc:
            return str(exc)
        finally:
            turn.release()
        return None

    async def _answers(self, items: list[dict]) -> list[str | None]:
        """Post ``items`` to every Alertmanager; each one's reason of failure, or None. Returns
        when all answered, or :data:`SPREAD` seconds after the first that took them: the ones
        still on their way go on in the background (and count as missed here)."""
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(self._post(n, lambda: items)): n for n in range(len(self._urls))}
        reasons: list[str | None] = [f"no answer within {SPREAD:g}s of another Alertmanager"] * len(tasks)
        pending, deadline = set(tasks), None
        try:
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
                for task in done:
                    reasons[tasks[task]] = task.result()
                    if deadline is None and task.result() is None:
                        deadline = loop.time() + SPREAD
        except BaseException:  # the lane gave up (timeout, stop): nothing is left running
            for task in tasks:
                task.cancel()
            raise
        for task in pending:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return reasons

    async def _post_all(self, items: list[dict], ended: list[dict]) -> None:
        """Post to every Alertmanager at once; DeliveryError when none took it. Each gets the
        ``ended`` items again at its next round (the ones that failed get the firing ones then too)."""
        reasons = await self._answers(items)
        failed = [n for n, reason in enumerate(reasons) if reason is not None]
        if len(failed) == len(self._urls):
            raise DeliveryError(f"{reasons[0]} (all {len(failed)} Alertmanager(s))" if len(failed) > 1
                                else reasons[0])
        for n in failed:
            log.warning("Alertmanager #%d of %d missed a notification (sent again next round): %s",
                        n + 1, len(self._urls), reasons[n])
        for n in range(len(self._urls)):
            self._keep_ended(n, ended)

    def _keep_ended(self, number: int, items: list[dict]) -> None:
        ended = self._ended.setdefault(number, [])
        ended.extend(items)
        del ended[:-ENDED_MAX]  # one down for good: its oldest ends give way (they expire anyway)

    def _start_resending(self) -> None:
        if (self._firing or any(self._ended.values())) and (self._resender is None or self._resender.done()):
            self._resender = asyncio.get_running_loop().create_task(self._resend(), name="opsstack-am-resend")

    async def send(self, alert) -> None:
        items = [self._firing_item(alert)]
        before = self._firing.get(alert.fingerprint)
        if before is not None and before.severity != alert.severity:  # the old label set ends now
            items.append(payload(before, resolved_at=time.time(), target=self._target))
        # Re-sent from now on, whoever takes it: a round after this request carries the new label
        # set, never the old one it ends.
        self._firing[alert.fingerprint] = alert.copy()
        try:
            await self._post_all(items, ended=items[1:])
        except BaseException:  # none took it: the retry ends the old label set again
            if before is None:
                self._firing.pop(alert.fingerprint, None)
            else:
                self._firing[alert.fingerprint] = before
            raise
        self._start_resending()

    def adopt(self, alerts) -> None:
        """Alerts still firing when the bot starts again (an earlier process sent them): renewed
        from now on like the ones it sends, or Alertmanager ends them at their endsAt while the
        bot still says they fire. Called on the delivery loop."""
        for alert in alerts:
            self._firing.setdefault(alert.fingerprint, alert.copy())
        self._start_resending()

    async def send_resolved(self, alert) -> None:
        ended = alert.resolved_at or alert.last_seen
        items = [payload(alert, resolved_at=ended, target=self._target)]
        before = self._firing.pop(alert.fingerprint, None)
        if before is not None and before.severity != alert.severity:
            items.append(payload(before, resolved_at=ended, target=self._target))
        await self._post_all(items, ended=items)
        self._start_resending()

    async def _resend(self) -> None:
        """Each interval, send every firing alert again (its endsAt moved ahead) to each
        Alertmanager, with the resolutions it missed. Each Alertmanager's round goes on its own:
        one that hangs skips its next rounds while its last is on its way, and never holds back
        the others' (their alerts would end at their endsAt)."""
        loop = asyncio.get_running_loop()
        while self._firing or any(self._ended.values()):
            await asyncio.sleep(self._interval)
            for number, last in enumerate(self._rounds):
                if last is None or last.done():
                    self._rounds[number] = loop.create_task(self._resend_to(number))

    async def _resend_to(self, number: int) -> None:
        """One round to Alertmanager ``number``: its resolutions, then the alerts firing when its
        turn comes (a later alert of a resolved fingerprint fires again after the end)."""
        ended: list[dict] = []

        def items() -> list[dict]:
            ended[:] = self._ended.pop(number, [])
            return ended + [self._firing_item(alert) for alert in self._firing.values()]

        reason = await self._post(number, items)
        if reason is not None:  # the next round tries again; the endsAt ahead covers the firing ones
            self._ended[number] = (ended + self._ended.get(number, []))[-ENDED_MAX:]
            log.warning("re-sending alerts to Alertmanager #%d failed (again next round): %s", number + 1, reason)

    async def close(self) -> None:
        for task in [self._resender, *self._rounds, *self._background]:
            if task is not None:
                task.cancel()
        self._resender = None
        self._rounds = [None] * len(self._urls)
        await self._http.close()


def from_settings(alerts: AlertSettings) -> AlertmanagerChannel:
    target = {"job": "bot", "instance": alerts.alertmanager_instance}
    url = require(alerts, "alertmanager", "ALERTMANAGER_URL", "alertmanager_url", "the Alertmanager base URL")
    return AlertmanagerChannel(url, target=target, resend_interval=alerts.alertmanager_resend_interval)
