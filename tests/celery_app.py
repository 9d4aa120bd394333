"""The Celery app of the tests: the README's "Celery and Redis" code run as written, plus a bot's
tasks, and beat's backup period shortened by ``TEST_BEAT_SECONDS`` so a test sees it fire."""
from __future__ import annotations

import os
import re
from pathlib import Path

from exporter.logger_manager import logger_manager

README = Path(__file__).resolve().parents[1] / "README.md"
_section = README.read_text().split("## Celery and Redis", 1)[1]
_namespace: dict = {}
exec(re.search(r"```python\n(.*?)```", _section, re.S).group(1), _namespace)  # as users run it
app = _namespace["app"]
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
app.conf.beat_schedule = {
    name: {**entry, "schedule": float(os.environ.get("TEST_BEAT_SECONDS", entry["schedule"]))}
    for name, entry in app.conf.beat_schedule.items()
}


@app.task(name="bot.finish_download")
def finish_download(name: str, size: int) -> int:
    logger_manager.log_download(name, f"{name}.bin", size, 0.01, size / 0.01, "completed")
    return size


@app.task(name="bot.fail")
def fail() -> None:
    raise RuntimeError("the peer went away")


@app.task(name="bot.on_alert")
def on_alert(status: str, alert: dict) -> None:
    """Alerts → Celery: the bot's own handling of an alert (here: a line in a file)."""
    import json

    with open(os.environ["ALERT_OUT"], "a") as out:
        out.write(json.dumps({"status": status, "title": alert["title"]}) + "\n")


@app.task(name="bot.backup_and_hang")
def backup_and_hang(ready: str) -> None:
    """A backup that stops half-way with its lock held, its pid in ``ready`` (a test kills it there)."""
    import time

    from exporter.backup_manager import backup_manager

    def hang(*_progress) -> None:
        Path(ready).write_text(str(os.getpid()))
        time.sleep(3600)

    backup_manager.create_backup_sync(list(backup_manager.settings.backups.critical_paths), "hung",
                                      progress=hang)
