"""Alertmanager and amtool from Debian's ``prometheus-alertmanager`` package."""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .base import ServiceProcess, answers_ok, free_port, require_command


def amtool() -> str:
    return require_command("amtool", "prometheus-alertmanager")


@dataclass
class RunningAlertmanager:
    """An Alertmanager that can be stopped and started again on the same port and data."""

    url: str
    port: int
    config_path: Path
    workdir: Path
    process: ServiceProcess | None = None

    def start(self) -> "RunningAlertmanager":
        binary = require_command("prometheus-alertmanager", "prometheus-alertmanager")
        self.process = ServiceProcess(
            "alertmanager",
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Empty: no gossip cluster (the default binds 0.0.0.0:9094).
                "--cluster.listen-address=",
            ],
            self.workdir / "alertmanager.log",
        ).start()
        self.process.wait_until(lambda: answers_ok(f"{self.url}/-/ready"), timeout=30, what="ready")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def alerts(self) -> list[dict]:
        """The alerts Alertmanager holds now (``GET /api/v2/alerts``)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            return json.load(response)


def start(workdir: Path, config: dict) -> RunningAlertmanager:
    """Start Alertmanager with ``config`` (an alertmanager.yml as a dict)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(json.dumps(config, indent=2))
    port = free_port()
    manager = RunningAlertmanager(url=f"http://127.0.0.1:{port}", port=port,
                                  config_path=config_path, workdir=workdir)
    return manager.start()
