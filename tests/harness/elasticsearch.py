"""A real Elasticsearch 8.15.0 node, embedded in a small JVM launcher built with Maven.

The launcher (``tests/harness/elasticsearch/``) runs the server jar and the Netty4 transport
from Maven Central on the classpath. It is built once per change of its sources into
``cache_dir("es-launcher", <hash>)``, outside the repository, and reused from there.

Such a node has what the server jar has: indices, mappings, ``_bulk``, ``_search``,
``_count``, ``_refresh``, composable ``_index_template`` and cluster health. It lacks the
modules that are not on Maven Central: ``GET /``, painless, ingest processors, ILM and the
``_data_stream`` REST API. Readiness is therefore checked with cluster health.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .base import ServiceProcess, ServiceUnavailable, cache_dir, content_hash, free_port, require_command

VERSION = "8.15.0"
SOURCE_DIR = Path(__file__).with_name("elasticsearch")
MAIN_CLASS = "org.elasticsearch.node.LauncherNode"
JVM_OPTIONS = (
    "-Xms512m",
    "-Xmx512m",
    # As in ES's own jvm.options: use the JNA jar on the classpath, never a system libjnidispatch.
    "-Djna.nosys=true",
)
READY_TIMEOUT = 90.0
BUILD_TIMEOUT = 900.0


def launcher_sources() -> list[Path]:
    """The files the launcher is built from; their hash names its cache directory."""
    return [SOURCE_DIR / "pom.xml", *sorted((SOURCE_DIR / "src").rglob("*.java"))]


def build_launcher() -> Path:
    """The directory with ``launcher.jar`` and ``lib/*.jar``; runs Maven only on a cache miss."""
    target = cache_dir("es-launcher", content_hash(launcher_sources()))
    if (target / "launcher.jar").is_file():
        return target
    require_command("java", "openjdk-17-jdk-headless")
    require_command("javac", "openjdk-17-jdk-headless")
    mvn = require_command("mvn", "maven")
    # Maven writes into a fresh directory next to the cache entry, never into the repository;
    # the finished files are moved in, launcher.jar last, so a half-built entry is never used.
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.building-", dir=target.parent))
    try:
        command = [mvn, "-q", "-B", "package", "-f", str(SOURCE_DIR / "pom.xml"),
                   f"-Dlauncher.build.dir={staging}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise ServiceUnavailable(f"mvn package took more than {BUILD_TIMEOUT:.0f}s:\n"
                                     f"{_text(exc.stdout)[-3000:]}{_text(exc.stderr)[-3000:]}") from exc
        if result.returncode != 0 or not (staging / "launcher.jar").is_file():
            raise ServiceUnavailable(f"mvn package of the Elasticsearch launcher failed "
                                     f"(exit {result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")
        if not (target / "launcher.jar").is_file():  # another process may have finished first
            shutil.rmtree(target / "lib", ignore_errors=True)
            os.replace(staging / "lib", target / "lib")
            os.replace(staging / "launcher.jar", target / "launcher.jar")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def _healthy(url: str) -> bool:
    # 408 (not yellow within 1s) and 503 (no master yet) raise HTTPError, an OSError: not ready.
    with urllib.request.urlopen(f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=5) as response:
        return json.load(response).get("status") in ("yellow", "green")


@dataclass
class RunningElasticsearch:
    """A node on 127.0.0.1; ``stop()`` then ``start()`` brings it back on the same port and data."""

    url: str
    port: int
    workdir: Path
    launcher: Path
    process: ServiceProcess

    def start(self, timeout: float = READY_TIMEOUT) -> "RunningElasticsearch":
        """(Re)start the JVM and wait until the cluster is at least yellow."""
        if self.process.alive():
            return self
        self.process = _launch(self.launcher, self.workdir, self.port)
        self.process.wait_until(lambda: _healthy(self.url), timeout=timeout, what="healthy (cluster yellow)")
        return self

    def stop(self) -> None:
        """SIGTERM: the launcher closes the node (flushes, releases the data lock) before exiting."""
        self.process.stop(timeout=30)


def _launch(launcher: Path, workdir: Path, port: int) -> ServiceProcess:
    java = require_command("java", "openjdk-17-jdk-headless")
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    return ServiceProcess(
        "elasticsearch",
        [
            java, *JVM_OPTIONS,
            f"-Djava.io.tmpdir={workdir / 'tmp'}",
            "-cp", f"{launcher / 'lib'}/*:{launcher / 'launcher.jar'}",
            MAIN_CLASS, str(workdir), str(port),
        ],
        workdir / "elasticsearch.log",
        cwd=workdir,
    ).start()


def start(workdir: Path, port: int | None = None, timeout: float = READY_TIMEOUT) -> RunningElasticsearch:
    """Build (or reuse) the launcher and start a node whose data and log are under ``workdir``."""
    launcher = build_launcher()
    workdir = workdir.resolve()
    port = port or free_port()
    node = RunningElasticsearch(url=f"http://127.0.0.1:{port}", port=port, workdir=workdir, launcher=launcher,
                                process=_launch(launcher, workdir, port))
    node.process.wait_until(lambda: _healthy(node.url), timeout=timeout, what="healthy (cluster yellow)")
    return node
