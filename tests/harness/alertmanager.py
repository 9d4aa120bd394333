"""Alertmanager and amtool of the release ``docker-compose.yml`` runs, built with Go from the
module proxy into ``cache_dir("alertmanager", "v<VERSION>")``; once they are there, nothing runs
``go``. (Debian's package is 0.25, which has no ``bot_token_file`` or ``url_file``: the committed
``deploy/alertmanager/alertmanager.yml`` needs 0.26 or later.)
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .base import ServiceProcess, answers_ok, cache_dir, free_port, go_binary, run_build

# The prom/alertmanager image of docker-compose.yml is this release (tests/test_compose_stack.py).
VERSION = "0.27.0"
MODULE = "github.com/prometheus/alertmanager"
BUILD_TIMEOUT = 900.0


def build() -> Path:
    """The folder holding ``alertmanager`` and ``amtool`` of VERSION (built once, then cached)."""
    target = cache_dir("alertmanager", f"v{VERSION}")
    if all((target / name).is_file() for name in ("alertmanager", "amtool")):
        return target
    with open(cache_dir("alertmanager") / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same release
        if all((target / name).is_file() for name in ("alertmanager", "amtool")):
            return target
        go = go_binary()
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
        try:
            env = dict(os.environ, GOTOOLCHAIN="local", GOBIN=str(scratch),
                       PATH=f"{Path(go).parent}{os.pathsep}{os.environ.get('PATH', '')}")
            stamp = f"-s -w -X github.com/prometheus/common/version.Version={VERSION}"
            run_build([go, "install", "-trimpath", f"-ldflags={stamp}", f"{MODULE}/cmd/alertmanager@v{VERSION}",
                       f"{MODULE}/cmd/amtool@v{VERSION}"], scratch, env, BUILD_TIMEOUT)
            for name in ("amtool", "alertmanager"):  # alertmanager last: its presence marks the build done
                os.replace(scratch / name, target / name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def amtool() -> str:
    return str(build() / "amtool")


@dataclass
class RunningAlertmanager:
    """An Alertmanager that can be stopped and started again on the same port and data."""

    url: str
    port: int
    config_path: Path
    workdir: Path
    process: ServiceProcess | None = None

    def start(self) -> "RunningAlertmanager":
        binary = str(build() / "alertmanager")
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
