"""A real ``redis-server`` (Debian's package) on loopback, as the Celery broker of the tests."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from .base import ServiceProcess, free_port, require_command


def _answers_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


@dataclass
class RunningRedis:
    url: str
    port: int
    workdir: Path
    process: ServiceProcess | None = None

    def start(self) -> "RunningRedis":
        binary = require_command("redis-server", "redis-server")
        self.process = ServiceProcess(
            "redis-server",
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
             "--save", "", "--appendonly", "yes", "--protected-mode", "yes"],
            self.workdir / "redis.log").start()
        self.process.wait_until(lambda: _answers_ping(self.port), timeout=20, what="answering PING")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def start(workdir: Path) -> RunningRedis:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return RunningRedis(url=f"redis://127.0.0.1:{port}", port=port, workdir=workdir).start()
