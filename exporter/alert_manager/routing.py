"""Routing of the alert manager, on its worker: each recorded alert to the subscribers of its
type and the handlers (a callback lane each), and to the channels its severity is routed to (a
channel lane each, its pending jobs kept in the outbox)."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..ports import LOCAL_ONLY
from .model import FIRING, Alert, AlertSeverity, AlertType

if TYPE_CHECKING:
    import asyncio

    from ..metrics import Metrics
    from ..ports import Channel, SharedMarks
    from .callbacks import CallbackLane, Subscription
    from .delivery import ChannelLane, Job, Outbox, RateLimiter
    from .shared import SharedNotifier

log = logging.getLogger("exporter.alert_manager")


class Router:
    """The lanes of the channels and subscribers. ``lane_options`` are the :class:`ChannelLane`
    keywords (size, rate, timeouts, retries)."""

    def __init__(self, channels: Mapping[str, Channel], routes: Mapping[AlertSeverity, tuple[str, ...]],
                 outbox: Outbox, metrics: Metrics, *, lane_size: int, callback_timeout: float,
                 lane_options: dict[str, Any], marks: SharedMarks | None = None, window: float = 0.0,
                 gather: float = 0.0) -> None:
        self.channels = dict(channels)
        self.routes = dict(routes)
        self.outbox = outbox
        self.metrics = metrics
        self.lane_size = lane_size
        self.callback_timeout = callback_timeout
        self.lane_options = lane_options
        self.lanes: dict[str, ChannelLane] = {}
        self.callback_lanes: dict[int, CallbackLane] = {}
        self.shared: SharedNotifier | None = None  # shared across workers (Redis): one notifies per window
        if marks is not None and marks is not LOCAL_ONLY:
            from .shared import OffLoop, SharedNotifier

            # the notifier waits ``gather`` seconds for the others' count
            self.shared = SharedNotifier(OffLoop(marks), self._put, metrics, window=window,
                                         gather=min(gather, window / 2))

    def start(self, saved_jobs: list[Job]) -> list[asyncio.Task]:
        """Start a lane per channel (on the worker's loop) with the jobs saved in the outbox."""
        import asyncio

        from .delivery import ChannelLane

        tasks = []
        for name, channel in self.channels.items():
            lane = ChannelLane(channel, self.outbox, self.metrics, max_jobs=self.lane_size,
                               limiter=self._shared_limiter(name), **self.lane_options)
            self.lanes[name] = lane
            self.outbox.lanes[name] = lane
            tasks.append(asyncio.get_running_loop().create_task(lane.run()))
        restored = 0
        for job in saved_jobs:
            lane = self.lanes.get(job.channel)
            if lane is None:
                log.warning("alert outbox: channel %s is no longer configured; dropped a notification",
                            job.channel)
                continue
            job.next_at = 0.0
            lane.put(job)
            restored += 1
        if restored:
            log.info("alert outbox: %d notification(s) restored for delivery", restored)
        return tasks

    def _shared_limiter(self, channel: str) -> RateLimiter | None:
        """With shared marks (Redis), ``ALERT_RATE_LIMIT`` holds for all workers together."""
        if self.shared is None:
            return None
        from .delivery import SharedRateLimiter

        return SharedRateLimiter(self.lane_options["rate_per_minute"], self.shared.asker, f"channel:{channel}")

    def adopt_firing(self, alerts: list[Alert]) -> None:
        """Hand the alerts still firing from an earlier run to each channel routed to them that
        keeps firing alerts alive itself (one with an ``adopt`` method: Alertmanager's)."""
        for name, channel in self.channels.items():
            adopt = getattr(channel, "adopt", None)
            routed = [alert for alert in alerts if name in self.routes.get(alert.severity, ())]
            if adopt is not None and routed:
                adopt(routed)

    def route(self, items: Iterable[tuple[str, Alert]], subscribers: Mapping[AlertType, list[Subscription]],
              handlers: list[Subscription]) -> None:
        """Hand each ``(FIRING or RESOLVED, alert)`` to its lanes; close the lanes of subscriptions gone."""
        live = {id(sub) for subs in subscribers.values() for sub in subs} | {id(sub) for sub in handlers}
        for key in [key for key in self.callback_lanes if key not in live]:
            self.callback_lanes.pop(key).close()
        for kind, alert in items:
            if kind == FIRING:
                for sub in subscribers.get(alert.type, []) + handlers:
                    self._callback_lane(sub).put(alert.copy())
            if self.shared is not None and self.routes.get(alert.severity):
                self.shared.route(kind, alert)  # a resolution after its firing notification
            else:
                self._put(kind, alert)

    def _put(self, kind: str, alert: Alert) -> None:
        from .delivery import Job

        for name in self.routes.get(alert.severity, ()):
            lane = self.lanes.get(name)
            if lane is not None:
                lane.put(Job(channel=name, kind=kind, alert=alert.to_dict(), created=time.time()))

    def _callback_lane(self, sub: Subscription) -> CallbackLane:
        import asyncio

        from .callbacks import CallbackLane

        lane = self.callback_lanes.get(id(sub))
        if lane is None:
            lane = CallbackLane(sub, self.metrics, max_items=self.lane_size, timeout=self.callback_timeout)
            lane.task = asyncio.get_running_loop().create_task(lane.run())
            self.callback_lanes[id(sub)] = lane
        return lane

    def idle(self, now: float, due_only: bool = False) -> bool:
        """No callback pending, no notification in flight or waiting (``due_only``: due by ``now``)."""
        if self.shared is not None and self.shared.busy():
            return False
        if any(not lane.idle() for lane in self.callback_lanes.values()):
            return False
        for lane in self.lanes.values():
            if lane.in_flight:
                return False
            if lane.jobs and (not due_only or lane.jobs[0].next_at <= now):
                return False
        return True

    def stop(self) -> list[asyncio.Task]:
        """Stop taking work; the callback lanes' tasks, for the caller to cancel."""
        if self.shared is not None:  # into the outbox, saved for the next start
            self.shared.stop()
        for lane in self.lanes.values():
            lane.stopping = True
        for callback_lane in self.callback_lanes.values():
            callback_lane.close()
        return [lane.task for lane in self.callback_lanes.values() if lane.task is not None]

    async def close_channels(self) -> None:
        import asyncio

        for channel in self.channels.values():
            try:
                await asyncio.wait_for(channel.close(), 1.0)
            except Exception as exc:  # plug-in boundary
                log.warning("alert channel %s did not close cleanly: %s", channel.name, type(exc).__name__)

    def retry_now(self) -> None:
        for lane in self.lanes.values():
            lane.retry_now()

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: {"delivered": lane.delivered, "pending": len(lane.jobs)} for name, lane in self.lanes.items()}

    def errors(self) -> dict[str, str | None]:
        return {name: lane.last_error for name, lane in self.lanes.items()}
