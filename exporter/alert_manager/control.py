"""Requests to the running bot's alert manager from another process (``opsstack alerts resolve``).

The bot runs elsewhere; what both share is ``STATE_DIR``. A request is one small JSON file in
``STATE_DIR/alert_requests/`` (written atomically, 0600, in a 0700 folder: a reader never sees
half of one, and two writers never meet). The running manager takes the folder's requests every
second, applies each once (it resolves the alerts, and its channels are told as for any
resolution) and deletes it; a request made while no bot runs waits for the next start.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import make_dirs, read_json, replace_file

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("exporter.alert_manager")

REQUESTS_DIR = "alert_requests"
POLL_INTERVAL = 1.0  # seconds between two looks at the folder (a person waits for it; the bot wakes for it)


def submit(state_dir: Path, request: dict[str, Any]) -> Path:
    """Queue ``request`` (``{"action": "resolve", "keys": [alert id or fingerprint, ...]}``) for
    the running bot; the file it was written to."""
    folder = make_dirs(Path(state_dir) / REQUESTS_DIR)
    path = folder / f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}.json"
    replace_file(path, json.dumps({**request, "requested_at": time.time()}).encode())
    return path


def take(state_dir: Path) -> list[dict[str, Any]]:
    """The queued requests, oldest first, each removed from the folder as it is read."""
    folder = Path(state_dir) / REQUESTS_DIR
    try:
        names = sorted(entry.name for entry in os.scandir(folder)
                       if entry.name.endswith(".json") and not entry.name.startswith("."))
    except FileNotFoundError:
        return []
    requests = []
    for name in names:
        request = read_json(folder / name)
        try:
            os.unlink(folder / name)
        except FileNotFoundError:  # another process of the same bot took it
            continue
        if isinstance(request, dict):
            requests.append(request)
        else:
            log.warning("alert request %s could not be read; removed it", name)
    return requests


async def serve(state_dir: Path, apply: Callable[[dict[str, Any]], int], metrics: Metrics) -> None:
    """Every POLL_INTERVAL, ``apply`` each queued request (on the manager's loop)."""
    import asyncio

    from ..metrics import worker_failed

    while True:
        try:
            for request in take(state_dir):
                resolved = apply(request)
                log.info("alert request %s from another process: %d alert(s) resolved",
                         request.get("action"), resolved)
        except OSError as exc:
            log.warning("alert requests in %s could not be read: %s", state_dir, exc.strerror)
        except Exception:  # task boundary: report with its traceback, count it, keep serving
            worker_failed(metrics, "alert_intake", log, "applying alert requests")
        await asyncio.sleep(POLL_INTERVAL)
