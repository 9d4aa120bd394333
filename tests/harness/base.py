"""What every service of the harness shares: ports, the build cache, child processes."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceUnavailable(RuntimeError):
    """A service could not be installed, built or started; the message carries its log tail."""


def skip_or_fail(message: str) -> None:
    """A test that needs a missing service: skipped on a developer's machine, failed when ``CI`` is set."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def cache_dir(*parts: str) -> Path:
    """Where built artefacts live between runs (``OPSSTACK_CACHE`` or ``~/.cache/opsstack``)."""
    root = Path(os.environ.get("OPSSTACK_CACHE", Path.home() / ".cache" / "opsstack"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_hash(paths: Iterable[Path], extra: str = "") -> str:
    """A short digest of files' contents: the cache key of a build made from them."""
    digest = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def go_binary() -> str:
    """The Go toolchain (for the services built from the module proxy)."""
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if found is None:
        raise ServiceUnavailable("go is not installed (needed to build the OpenTelemetry Collector and Alertmanager)")
    return found


def run_build(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> None:
    try:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or "") + (exc.stderr or "")
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
        raise ServiceUnavailable(f"{' '.join(argv)} timed out after {timeout:.0f}s:\n{output[-3000:]}") from exc
    if result.returncode != 0:
        raise ServiceUnavailable(f"{' '.join(argv)} failed (exit {result.returncode}):\n"
                                 f"{(result.stdout + result.stderr)[-3000:]}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def answers_ok(url: str) -> bool:
    """True when ``url`` answers 200 (the ``/-/ready`` probe of Prometheus and Alertmanager)."""
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status == 200


def require_command(name: str, apt_package: str) -> str:
    """The path of ``name``, installing ``apt_package`` from Debian's archive when missing."""
    found = shutil.which(name)
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", apt_package]):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceUnavailable(
                f"installing {apt_package} failed ({' '.join(command)}):\n{result.stderr[-2000:]}"
            )
    found = shutil.which(name)
    if not found:
        raise ServiceUnavailable(f"{apt_package} installed but {name} is not on PATH")
    return found


@dataclass
class ServiceProcess:
    """A child process with its output in a log file; stopped by its own PID only."""

    name: str
    argv: list[str]
    log_path: Path
    cwd: Path | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> "ServiceProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until true; raise ServiceUnavailable with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServiceUnavailable(
                    f"{self.name} exited with code {self.process.returncode} before {what}:\n"
                    f"{self.log_tail()}"
                )
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServiceUnavailable(f"{self.name} not {what} after {timeout:.0f}s:\n{self.log_tail()}")

    def _signal_group(self, signum: int) -> bool:
        """Send ``signum`` to this process and its own group; False when it has already exited."""
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL this process (and its own group) and reap it: a crash, not a shutdown."""
        if self._signal_group(signal.SIGKILL):
            self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; only this process (and its own group)."""
        if not self._signal_group(signal.SIGTERM):
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
