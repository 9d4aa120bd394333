"""``python -m tests.harness prepare|up|down``: the harness for people and for ``make``.

- ``prepare``: install and build everything the tests need (Debian packages, Alertmanager, the embedded
  Elasticsearch launcher, the OpenTelemetry Collector); cached builds are reused.
- ``up``: start Elasticsearch, the Collector, Prometheus (scraping the demo on
  127.0.0.1:9464 with the project's rules) and Alertmanager on loopback; print their URLs
  and write them with their PIDs to ``.services/state.json``.
- ``down``: stop exactly the PIDs ``up`` wrote.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from . import alertmanager, prometheus
from .base import REPO_ROOT, ServiceUnavailable, require_command

STATE_DIR = REPO_ROOT / ".services"
STATE_FILE = STATE_DIR / "state.json"


def prepare() -> None:
    from . import elasticsearch, otelcol

    steps = [
        ("prometheus + promtool", lambda: (require_command("prometheus", "prometheus"),
                                           require_command("promtool", "prometheus"))),
        (f"alertmanager + amtool {alertmanager.VERSION}", alertmanager.build),
        ("redis-server", lambda: require_command("redis-server", "redis-server")),
        ("elasticsearch launcher", elasticsearch.build_launcher),
        ("opentelemetry collector", otelcol.build_collector),
    ]
    for name, step in steps:
        started = time.monotonic()
        result = step()
        print(f"ready: {name} ({time.monotonic() - started:.1f}s) {result if isinstance(result, Path) else ''}",
              flush=True)


def up() -> None:
    from . import elasticsearch, otelcol

    if STATE_FILE.exists():
        raise ServiceUnavailable(f"services already up ({STATE_FILE}); run `make services-down` first")
    STATE_DIR.mkdir(exist_ok=True)
    es = elasticsearch.start(STATE_DIR / "elasticsearch")
    collector = otelcol.start(STATE_DIR / "otelcol", elasticsearch_url=es.url)
    am = alertmanager.start(STATE_DIR / "alertmanager", {
        "route": {"receiver": "log", "group_wait": "5s"},
        "receivers": [{"name": "log"}],
    })
    rules = sorted((REPO_ROOT / "alert_rules").glob("*.yml"))
    prom = prometheus.start(STATE_DIR / "prometheus", {
        "global": {"scrape_interval": "5s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]}]},
        "scrape_configs": [{"job_name": "bot", "static_configs": [{"targets": ["127.0.0.1:9464"]}]}],
    }, tuple(rules), evaluation_interval="5s")
    state = {
        "elasticsearch": {"url": es.url, "pid": es.process.pid},
        "otelcol": {"url": collector.grpc_endpoint, "pid": collector.process.pid},
        "alertmanager": {"url": am.url, "pid": am.process.pid},
        "prometheus": {"url": prom.url, "pid": prom.process.pid},
    }
    STATE_FILE.write_text(json.dumps(state, indent=2))
    for name, entry in state.items():
        print(f"{name:<14} {entry['url']}  (pid {entry['pid']})")
    print(f"\nPoint the demo at them:\n  ELASTICSEARCH_URL={es.url} ALERTMANAGER_URL={am.url} "
          f"ENABLE_TRACING=true OTEL_EXPORTER_OTLP_ENDPOINT={collector.http_endpoint} make demo")


def down() -> None:
    if not STATE_FILE.exists():
        print("no services are up")
        return
    for name, entry in json.loads(STATE_FILE.read_text()).items():
        try:
            os.killpg(entry["pid"], signal.SIGTERM)
            print(f"stopped {name} (pid {entry['pid']})")
        except ProcessLookupError:
            print(f"{name} (pid {entry['pid']}) was not running")
    STATE_FILE.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness")
    parser.add_argument("action", choices=("prepare", "up", "down"))
    action = parser.parse_args().action
    try:
        {"prepare": prepare, "up": up, "down": down}[action]()
    except ServiceUnavailable as exc:
        print(f"harness {action}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
