"""The rehearsal's Celery app, as a bot's would be: the installed wheel's ``install(app)``, a
download the bot starts and a worker finishes, and a beat entry of its own.

Copied into the work directory and imported from there by the bot, the worker and beat (each
with the installed wheel first on its path). Each task run appends one line (a single
``write`` under ``O_APPEND``, atomic at this size) to ``REHEARSAL_CELERY_DIR``: what the
checks count, independently of the log shipping they also check.

Delivery is at least once: ``task_acks_late`` acknowledges a message after its task ran, so a
worker killed in between gets it again from Redis once ``VISIBILITY_TIMEOUT`` has passed (kombu
looks for such messages every ``unacked_restore_interval``, 10 s, with the throttle at 1); a
task that ran before the kill then runs twice (the checks count such duplicates). The transport
is the integration's (``exporter.integrations.celery_redis``): a message a worker was taking
when Redis stopped goes back onto its queue instead of being lost.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from celery import Celery

import exporter
from exporter.integrations.celery import install
from exporter.logger_manager import logger_manager

VISIBILITY_TIMEOUT = 20  # seconds before Redis hands an unacknowledged message to a worker again
FINISHING = 0.2  # seconds a download's end waits (its file's last write): a worker kill finds one in hand
BEAT_ENTRY = "rehearsal-tick"
DOWNLOAD_TASK, TICK_TASK = "rehearsal.finish_download", "rehearsal.beat_tick"

app = Celery("rehearsal", broker=os.environ["CELERY_BROKER_URL"])
install(app)
app.conf.update(
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    task_ignore_result=True, worker_hijack_root_logger=False,
    broker_transport="exporter.integrations.celery_redis:Transport",
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT, "unacked_restore_throttle": 1},
    broker_connection_retry_on_startup=True, broker_connection_timeout=3,
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                               "interval_max": 1},
    beat_schedule={BEAT_ENTRY: {"task": TICK_TASK,
                                "schedule": float(os.environ.get("REHEARSAL_BEAT_SECONDS", "5"))}})


def _record(file: str, task, **fields) -> None:
    line = json.dumps({"id": task.request.id, "pid": os.getpid(), "t": time.time(),
                       "redelivered": bool((task.request.delivery_info or {}).get("redelivered")),
                       "exporter_file": exporter.__file__, **fields}) + "\n"
    fd = os.open(Path(os.environ["REHEARSAL_CELERY_DIR"]) / file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(name=DOWNLOAD_TASK, bind=True)
def finish_download(self, name: str, size: int) -> int:
    """The end of a download the bot started: its ECS line (in the bot's trace), then the record."""
    time.sleep(FINISHING)
    logger_manager.log_download(name, f"{name}.bin", size, 0.01, size / 0.01, "completed")
    _record("done.jsonl", self, name=name)
    return size


@app.task(name=TICK_TASK, bind=True)
def beat_tick(self) -> None:
    _record("ticks.jsonl", self)
