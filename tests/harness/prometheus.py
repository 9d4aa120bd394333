"""Prometheus and promtool from Debian's ``prometheus`` package, on a free loopback port."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .base import ServiceProcess, answers_ok, free_port, require_command


def promtool() -> str:
    return require_command("promtool", "prometheus")


@dataclass
class RunningPrometheus:
    url: str
    port: int
    config_path: Path
    process: ServiceProcess

    def stop(self) -> None:
        self.process.stop()

    def query(self, expr: str) -> list[dict]:
        """The result vector of an instant query (raises on a query error)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return body["data"]["result"]

    def get(self, api_path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}{api_path}", timeout=10) as response:
            return json.load(response)


def start(workdir: Path, config: dict, rule_files: tuple[Path, ...] = (), *,
          evaluation_interval: str = "1s") -> RunningPrometheus:
    """Start Prometheus with ``config`` (a prometheus.yml as a dict; JSON is valid YAML)."""
    binary = require_command("prometheus", "prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config.setdefault("global", {}).setdefault("evaluation_interval", evaluation_interval)
    if rule_files:
        config["rule_files"] = [str(Path(path).resolve()) for path in rule_files]
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2))
    port = free_port()
    process = ServiceProcess(
        "prometheus",
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # The first notification goes out before the Alertmanager is discovered and is
            # dropped; the default resend delay would then hold the alert back for a minute.
            "--rules.alert.resend-delay=1s",
            "--web.enable-lifecycle",
        ],
        workdir / "prometheus.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_until(lambda: answers_ok(f"{url}/-/ready"), timeout=30, what="ready")
    return RunningPrometheus(url=url, port=port, config_path=config_path, process=process)

