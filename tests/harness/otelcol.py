"""A real OpenTelemetry Collector, built with the collector builder (ocb) from the Go module proxy.

``otelcol/builder-config.yaml`` names the components (OTLP receiver; debug, file and
Elasticsearch exporters; batch processor), each at one pinned release. The builder of that same
release is installed into ``cache_dir("otelcol", "builder-<version>")`` and the binary is built
into ``cache_dir("otelcol", <hash of the manifest>)``; once it is there, nothing runs ``go``.
The builder compiles with ``-trimpath -ldflags="-s -w"`` by default, so no flags are added.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .base import (ServiceProcess, ServiceUnavailable, cache_dir, content_hash, free_port, go_binary,
                   port_open, run_build)

MANIFEST = Path(__file__).with_name("otelcol") / "builder-config.yaml"
BINARY_NAME = "otelcol-opsstack"
# Where spans go in Elasticsearch: a plain index (or a data stream if a template says so).
TRACES_INDEX = "traces-bot-default"
START_TIMEOUT = 30.0

# The checksum database behind the module proxy reachable here has no entry for this
# dependency of the Elasticsearch exporter, so it is exempted from the lookup (GONOSUMDB) and
# pinned here instead: the hashes are the ones elasticsearchexporter v0.156.0's own go.sum lists.
# The build stops if the go.sum the builder resolves has any other line for the module.
UNLISTED_MODULE_SUMS = {
    "go.opentelemetry.io/ebpf-profiler": {
        "go.opentelemetry.io/ebpf-profiler v0.0.202623 h1:L85ki6PQiJyczuzM6+tU5g5Y4RLI23KVny4VWU0jS4w=",
        "go.opentelemetry.io/ebpf-profiler v0.0.202623/go.mod h1:DqHEtu1S8fTmyvvrSSum1lssLKwYM7aExPNZ/+vWZ6U=",
    },
}
BUILD_TIMEOUT = 1800.0  # seconds, for each builder step


def builder_version(manifest: Path = MANIFEST) -> str:
    """The release of the manifest's core components (``dist.version``), as ``vX.Y.Z``."""
    match = re.search(r"^dist:\s*\n(?:[ \t]+.*\n)*?[ \t]+version:\s*[\"']?v?([0-9][^\s\"']*)",
                      manifest.read_text(), re.MULTILINE)
    if not match:
        raise ServiceUnavailable(f"{manifest} has no dist.version")
    return "v" + match.group(1)


def _check_unlisted_sums(go_sum: Path) -> None:
    for module, pinned in UNLISTED_MODULE_SUMS.items():
        found = {line.strip() for line in go_sum.read_text().splitlines() if line.startswith(module + " ")}
        if found - pinned:
            raise ServiceUnavailable(f"{go_sum}: unexpected checksums for {module} (not verified by a "
                                     f"checksum database, so they must match the pinned ones):\n"
                                     + "\n".join(sorted(found - pinned)))


def build_collector() -> Path:
    """The path of the collector binary; built once per manifest (a cached binary is returned as is)."""
    target = cache_dir("otelcol", content_hash([MANIFEST]))
    binary = target / BINARY_NAME
    if binary.is_file():
        return binary
    with open(cache_dir("otelcol") / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same binary
        if binary.is_file():
            return binary
        _build(binary)
    return binary


def _build(binary: Path) -> None:
    version = builder_version()
    go = go_binary()
    gobin = cache_dir("otelcol", f"builder-{version}")
    nosumdb = ",".join(filter(None, [os.environ.get("GONOSUMDB", ""), *UNLISTED_MODULE_SUMS]))
    env = dict(os.environ, PATH=f"{Path(go).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               GOTOOLCHAIN="local", GONOSUMDB=nosumdb)
    builder = gobin / "builder"
    if not builder.is_file():
        run_build([go, "install", f"go.opentelemetry.io/collector/cmd/builder@{version}"], gobin,
             dict(env, GOBIN=str(gobin)), timeout=600)
    # Sources, go.mod and the binary stay in a scratch directory beside the cache entry (outside
    # the repository); only the finished binary is moved into place.
    scratch = Path(tempfile.mkdtemp(prefix="build-", dir=binary.parent.parent))
    try:
        shutil.copy2(MANIFEST, scratch / MANIFEST.name)
        config = ["--config", MANIFEST.name]
        # 1. generate the sources and resolve the modules; 2. check the unlisted sums; 3. compile.
        run_build([str(builder), *config, "--skip-compilation"], scratch, env, BUILD_TIMEOUT)
        _check_unlisted_sums(scratch / "build" / "go.sum")
        run_build([str(builder), *config, "--skip-generate", "--skip-get-modules"], scratch, env, BUILD_TIMEOUT)
        built = scratch / "build" / BINARY_NAME
        if not built.is_file():
            raise ServiceUnavailable(f"the builder reported success but wrote no {built}")
        os.replace(built, binary)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_config(path: Path, *, grpc_port: int, http_port: int, file_path: Path,
                 elasticsearch_url: str | None = None, telemetry_port: int) -> dict:
    """Write a collector config to ``path`` (JSON, which is YAML) and return it as a dict.

    OTLP on 127.0.0.1 (gRPC and HTTP); spans and log records as OTLP-JSON lines to
    ``file_path`` (flushed every 100ms); spans also to ``elasticsearch_url`` if given; the
    collector's own metrics on 127.0.0.1:``telemetry_port`` (the default is localhost:8888).
    """
    exporters: dict = {
        "file": {"path": str(file_path), "format": "json", "flush_interval": "100ms"},
    }
    trace_exporters = ["file"]
    if elasticsearch_url:
        exporters["elasticsearch"] = {
            "endpoint": elasticsearch_url,
            # Since v0.145 `mapping.mode` is ignored; the mode comes from request metadata or a
            # scope attribute, else the first allowed mode when `otel` is not allowed. Only
            # `none` (and `raw`) write without require_data_stream (otel and ecs need data
            # stream templates); `none` keeps the documents' fields namespaced
            # (TraceId, SpanId, Name, Attributes.*, Resource.*, @timestamp).
            "mapping": {"allowed_modes": ["none"]},
            "traces_index": TRACES_INDEX,
            "sending_queue": {"batch": {"flush_timeout": "1s"}},
            "retry": {"max_retries": 5},
        }
        trace_exporters.append("elasticsearch")
    config = {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
            "http": {"endpoint": f"127.0.0.1:{http_port}"},
        }}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": exporters,
        "service": {
            "telemetry": {
                "logs": {"level": "info"},
                "metrics": {"level": "basic", "readers": [{"pull": {"exporter": {"prometheus": {
                    "host": "127.0.0.1", "port": telemetry_port,
                }}}}]},
            },
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": trace_exporters},
                "logs": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["file"]},
            },
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return config


def validate(config_path: Path) -> subprocess.CompletedProcess:
    """``<collector> validate --config=...``: a dry run of a configuration (builds the collector)."""
    return subprocess.run([str(build_collector()), "validate", f"--config={Path(config_path).resolve()}"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def _records(path: Path, key: str, scope_key: str, item_key: str) -> list[dict]:
    found: list[dict] = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        try:
            payload = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line may be half-flushed
        for resource in payload.get(key, []):
            for scope in resource.get(scope_key, []):
                found.extend(scope.get(item_key, []))
    return found


@dataclass
class RunningCollector:
    grpc_endpoint: str  # "127.0.0.1:PORT"
    http_endpoint: str  # "http://127.0.0.1:PORT"
    spans_file: Path  # OTLP-JSON lines: resourceSpans and resourceLogs
    process: ServiceProcess
    config_path: Path | None = None
    telemetry_url: str | None = None  # the collector's own Prometheus metrics

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> "RunningCollector":
        """Start it again (after ``stop()``) with the same configuration and ports."""
        self.process.start()
        ports = [int(endpoint.rsplit(":", 1)[1]) for endpoint in (self.grpc_endpoint, self.http_endpoint)]
        self.process.wait_until(lambda: all(port_open(port) for port in ports), timeout=START_TIMEOUT,
                                what="listening on its OTLP ports")
        return self

    def spans(self) -> list[dict]:
        """Every span the file exporter has written so far (OTLP JSON: traceId, spanId, name...)."""
        return _records(self.spans_file, "resourceSpans", "scopeSpans", "spans")

    def log_records(self) -> list[dict]:
        """Every log record the file exporter has written so far."""
        return _records(self.spans_file, "resourceLogs", "scopeLogs", "logRecords")

    def wait_for_span(self, trace_id: str, timeout: float = 15.0) -> list[dict]:
        """The spans of ``trace_id`` (32 hex digits), waiting until at least one was written."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [s for s in self.spans() if s.get("traceId") == trace_id]
            if spans or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)


PORT_ATTEMPTS = 3  # free ports are picked, then bound by the collector: another process may win one


def start(workdir: Path, elasticsearch_url: str | None = None) -> RunningCollector:
    """Start the collector on free loopback ports; spans go to ``workdir/spans.jsonl``. A port
    taken by another process between its pick and the collector's bind: again on other ports."""
    binary = build_collector()
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, PORT_ATTEMPTS):
        try:
            return _start_once(binary, workdir, elasticsearch_url)
        except ServiceUnavailable:
            log = workdir / "collector.log"
            if "address already in use" not in log.read_text(errors="replace"):
                raise
            log.rename(workdir / f"collector-port-taken-{attempt}.log")
    return _start_once(binary, workdir, elasticsearch_url)


def _start_once(binary: Path, workdir: Path, elasticsearch_url: str | None) -> RunningCollector:
    grpc_port, http_port, telemetry_port = free_port(), free_port(), free_port()
    spans_file = workdir / "spans.jsonl"
    config_path = workdir / "collector.yaml"
    write_config(config_path, grpc_port=grpc_port, http_port=http_port, file_path=spans_file,
                 elasticsearch_url=elasticsearch_url, telemetry_port=telemetry_port)
    process = ServiceProcess("otelcol", [str(binary), f"--config={config_path}"],
                             workdir / "collector.log", cwd=workdir).start()
    process.wait_until(lambda: port_open(grpc_port) and port_open(http_port), timeout=START_TIMEOUT,
                       what="listening on its OTLP ports")
    return RunningCollector(grpc_endpoint=f"127.0.0.1:{grpc_port}", http_endpoint=f"http://127.0.0.1:{http_port}",
                            spans_file=spans_file, process=process, config_path=config_path,
                            telemetry_url=f"http://127.0.0.1:{telemetry_port}/metrics")
