"""A real OpenTelemetry Collector, built with the collector builder from the Go module proxy.

``otelcol/builder-config.yaml`` names the components (OTLP receiver; debug, file and
Elasticsearch exporters; batch processor), each at one pinned release. The binary goes to
``cache_dir("otelcol", <hash of the manifest>)`` and is reused.
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

from .base import ServiceProcess, ServiceUnavailable, cache_dir, content_hash, free_port, port_open

MANIFEST = Path(__file__).with_name("otelcol") / "builder-config.yaml"
BUILDER_VERSION = "v0.156.0"
BINARY_NAME = "otelcol-opsstack"
NO_SUMDB_MODULES = "go.opentelemetry.io/ebpf-profiler"
TRACES_DATA_STREAM = "traces-bot-default"


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceUnavailable(f"{' '.join(argv)} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def build_collector() -> Path:
    """The path of the collector binary; built once per manifest change."""
    target = cache_dir("otelcol", content_hash([MANIFEST], extra=BUILDER_VERSION))
    binary = target / BINARY_NAME
    if binary.is_file():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ServiceUnavailable("go is not installed (needed to build the OpenTelemetry Collector)")
    env = dict(os.environ, GOBIN=str(cache_dir("otelcol", f"builder-{BUILDER_VERSION}")), CGO_ENABLED="0",
               PATH=f"{Path(go).parent}:{os.environ.get('PATH', '')}",
               # The checksum database reachable here has no entry for this one dependency of
               # the Elasticsearch exporter; its hash is still pinned in the build's go.sum.
               GONOSUMDB=NO_SUMDB_MODULES)
    builder = Path(env["GOBIN"]) / "builder"
    if not builder.is_file():
        _run([go, "install", f"go.opentelemetry.io/collector/cmd/builder@{BUILDER_VERSION}"], Path.cwd(), env)
    with tempfile.TemporaryDirectory(prefix="otelcol-build-") as scratch:
        shutil.copy2(MANIFEST, Path(scratch) / "builder-config.yaml")
        _run([str(builder), "--config", "builder-config.yaml"], Path(scratch), env)
        built = Path(scratch) / "build" / BINARY_NAME
        partial = binary.with_name(BINARY_NAME + ".partial")
        shutil.copy2(built, partial)
        partial.rename(binary)
    return binary


def collector_config(*, grpc_port: int, http_port: int, spans_file: Path,
                     elasticsearch_url: str | None = None) -> dict:
    """Receive OTLP on loopback; write spans to a JSON-lines file and, if given, Elasticsearch."""
    exporters: dict = {"file": {"path": str(spans_file), "format": "json", "flush_interval": "100ms"}}
    trace_exporters = ["file"]
    if elasticsearch_url:
        exporters["elasticsearch"] = {
            "endpoint": elasticsearch_url,
            # The exporter's otel mapping writes with require_data_stream: the data stream
            # template is installed by start() (the mapping mode setting is ignored since v0.15x).
            "traces_index": TRACES_DATA_STREAM,
            "sending_queue": {"enabled": True, "batch": {"flush_timeout": "500ms"}},
        }
        trace_exporters.append("elasticsearch")
    return {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
            "http": {"endpoint": f"127.0.0.1:{http_port}"},
        }}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": exporters,
        "service": {
            # No self-metrics endpoint: by default it would bind port 8888.
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": trace_exporters}},
        },
    }


def validate(config_path: Path) -> subprocess.CompletedProcess:
    """``<collector> validate --config=...``: a dry run of a configuration."""
    return subprocess.run([str(build_collector()), "validate", f"--config={config_path}"],
                          capture_output=True, text=True, timeout=60)


@dataclass
class RunningCollector:
    grpc_endpoint: str
    http_endpoint: str
    spans_file: Path
    process: ServiceProcess

    def stop(self) -> None:
        self.process.stop()

    def spans(self) -> list[dict]:
        """Every span the file exporter has written so far, flattened."""
        found = []
        if not self.spans_file.exists():
            return found
        for line in self.spans_file.read_text().splitlines():
            for resource in json.loads(line).get("resourceSpans", []):
                for scope in resource.get("scopeSpans", []):
                    found.extend(scope.get("spans", []))
        return found


def install_traces_template(elasticsearch_url: str) -> None:
    """A data stream template for the spans (the exporter requires a data stream)."""
    template = {"index_patterns": ["traces-bot-*"], "data_stream": {}, "priority": 500,
                "template": {"mappings": {"properties": {"@timestamp": {"type": "date"},
                                                          "trace_id": {"type": "keyword"},
                                                          "span_id": {"type": "keyword"}}}}}
    request = urllib.request.Request(f"{elasticsearch_url}/_index_template/traces-bot", method="PUT",
                                     data=json.dumps(template).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except OSError as exc:
        raise ServiceUnavailable(f"installing the traces template into {elasticsearch_url} failed: {exc}") from exc


def start(workdir: Path, elasticsearch_url: str | None = None) -> RunningCollector:
    binary = build_collector()
    if elasticsearch_url:
        install_traces_template(elasticsearch_url)
    workdir.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port = free_port(), free_port()
    spans_file = workdir / "spans.jsonl"
    config_path = workdir / "collector.yaml"
    config_path.write_text(json.dumps(collector_config(grpc_port=grpc_port, http_port=http_port,
                                                       spans_file=spans_file,
                                                       elasticsearch_url=elasticsearch_url), indent=2))
    process = ServiceProcess("otelcol", [str(binary), f"--config={config_path}"],
                             workdir / "collector.log").start()
    process.wait_until(lambda: port_open(grpc_port) and port_open(http_port), timeout=60,
                       what="listening")
    return RunningCollector(grpc_endpoint=f"127.0.0.1:{grpc_port}", http_endpoint=f"http://127.0.0.1:{http_port}",
                            spans_file=spans_file, process=process)
