"""The ``celery`` channel (*Alerts → Celery*): each alert sent as a Celery task of the bot's,
``ALERT_CELERY_TASK`` on the broker ``CELERY_BROKER_URL``, with keyword arguments
``status`` (``firing`` or ``resolved``) and ``alert`` (the alert as a dict). Celery loads when
the channel is configured; a broker that cannot take the message is a delivery failure, retried.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import OwnThread, delivery_error, json_safe, require

if TYPE_CHECKING:
    from ..config import AlertSettings

CONNECT_TIMEOUT = 5.0


class CeleryChannel:
    name = "celery"

    def __init__(self, broker_url, task: str) -> None:
        from .._extras import require_extra

        celery = require_extra("celery", "celery", "ALERT_CHANNELS names the celery channel")
        self._task = task
        self._app = celery.Celery("opsstack-alerts", broker=broker_url.get(), set_as_current=False)
        self._app.conf.update(broker_connection_timeout=CONNECT_TIMEOUT, broker_connection_retry=False,
                              broker_transport_options={"max_retries": 0},
                              task_publish_retry=False)
        self._thread = OwnThread(self.name)

    def _send(self, status: str, alert) -> None:
        try:
            self._app.send_task(self._task, kwargs={"status": status, "alert": json_safe(alert.to_dict())})
        except Exception as exc:  # kombu and redis raise many kinds, and their text may hold the URL
            raise delivery_error(f"celery: {type(exc).__name__} (the broker did not take the task)") from None

    async def send(self, alert) -> None:
        await self._thread.run(self._send, "firing", alert)

    async def send_resolved(self, alert) -> None:
        await self._thread.run(self._send, "resolved", alert)

    async def close(self) -> None:
        try:
            await self._thread.run(self._app.close)
        finally:
            self._thread.close()


def from_settings(alerts: AlertSettings) -> CeleryChannel:
    broker = require(alerts, "celery", "CELERY_BROKER_URL", "celery_broker_url", "a broker URL")
    task = require(alerts, "celery", "ALERT_CELERY_TASK", "celery_task", "a task name")
    return CeleryChannel(broker, task)
