"""The Celery app of the lost-task reproduction (celloss_repro.py): rehearsal_celery.py's broker
settings, without the exporter, each run appended to ``CELLOSS_DIR/done.jsonl``."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from celery import Celery

app = Celery("celloss", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    task_ignore_result=True, worker_hijack_root_logger=False,
    broker_transport_options={"visibility_timeout": 20,
                              **json.loads(os.environ.get("CELLOSS_TRANSPORT_OPTIONS", "{}"))},
    broker_connection_retry_on_startup=True, broker_connection_timeout=3,
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                               "interval_max": 1},
    **json.loads(os.environ.get("CELLOSS_CONF", "{}")))


@app.task(name="celloss.finish", bind=True)
def finish(self, name: str) -> None:
    time.sleep(float(os.environ.get("CELLOSS_TASK_SECONDS", "0.2")))
    line = json.dumps({"id": self.request.id, "pid": os.getpid(), "t": time.time(),
                       "redelivered": bool((self.request.delivery_info or {}).get("redelivered"))}) + "\n"
    fd = os.open(Path(os.environ["CELLOSS_DIR"]) / "done.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
