"""``opsstack demo``: the simulated bot with every feature on and embedded defaults."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ..config import load_settings
from ..tracing import otlp_endpoint
from ._types import DURATION, RATE

# Embedded defaults: used for every flag the user left at its default (environment and
# config file still win), so `make demo` needs no service and no configuration.
DEMO_DEFAULTS = {
    "ENABLE_ENHANCED_LOGGING": True,
    "ENABLE_ALERT_SYSTEM": True,
    "ENABLE_BACKUP_SYSTEM": True,
    "ENABLE_PROFILER": True,
    "ENABLE_RECOVERY_MANAGER": True,
    "ENABLE_AUTO_RECOVERY": True,
    "LOG_DIR": "logs",
    "LOG_CONSOLE": False,
    "OTEL_RESOURCE_ATTRIBUTES": {"deployment.environment.name": "demo"},  # service.environment of its lines
    "BACKUP_DIR": "backups",
    "STATE_DIR": "state",
    "BACKUP_FREQUENCY": "hourly",
    "BACKUP_RETENTION": {"hourly": 6, "daily": 7, "weekly": 4, "manual": 10},
    # No CRITICAL_BACKUP_PATHS: the demo backs up its data every 20 s itself (then verifies,
    # drills every fifth and applies the retention); the in-process scheduler would race it.
    "RECOVERY_CRITICAL_PATHS": ["demo-data/config", "demo-data/media"],
    "INTEGRITY_CHECK_INTERVAL": 15,
    "PROFILE_THRESHOLD": 0.5,
    "METRICS_PORT": 9464,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run a simulated bot with every feature on")
    parser.add_argument("--duration", type=DURATION, default=60.0,
                        help="seconds to run, up to 30 days (default 60; 0 runs until Ctrl-C)")
    parser.add_argument("--rate", type=RATE, default=4.0, help="operations started per second, 0.01 to 1000")
    parser.add_argument("--seed", type=int, default=7, help="random seed (same seed, same run)")
    parser.add_argument("--failures-for", type=DURATION, default=None, metavar="SECONDS",
                        help="inject failures for this many seconds only, then let them clear and their "
                             "alerts resolve (default: the whole run)")
    parser.add_argument("--data-dir", default="demo-data", help="the sample data folder")
    parser.set_defaults(handler=run)


def demo_settings(config_file: str | None):
    settings = load_settings(config_file=config_file)
    chosen = {key: value for key, value in DEMO_DEFAULTS.items() if settings.sources[key] == "default"}
    if settings.shipping.enabled:
        chosen.setdefault("ENABLE_TRACING", bool(settings.tracing.traces_endpoint or settings.tracing.endpoint))
    if settings.alerts.alertmanager_url is not None and settings.sources["ALERT_CHANNELS"] == "default":
        chosen["ALERT_CHANNELS"] = {"critical": ["log", "alertmanager"], "high": ["log", "alertmanager"],
                                    "medium": ["log"], "low": ["log"]}
    return settings.replace(**chosen)


def where_to_look(settings, data_dir: Path) -> str:
    lines = [
        "opsstack demo: a simulated Telegram file bot with every feature on.",
        f"  ECS JSON logs      {settings.logging.dir.resolve()}/bot.json (errors: errors.json)",
        f"  backups            {settings.backups.dir.resolve()}/",
        f"  state and alerts   {settings.general.state_dir.resolve()}/",
        f"  sample data        {data_dir.resolve()}/",
        f"  Prometheus metrics http://{settings.metrics.addr}:{settings.metrics.port}/metrics",
    ]
    if settings.shipping.enabled:
        lines.append("  Elasticsearch      shipping logs to logs-bot-" + settings.shipping.namespace)
    if settings.tracing.enabled:
        lines.append(f"  OpenTelemetry      spans over OTLP to {otlp_endpoint(settings.tracing)}")
    if settings.alerts.alertmanager_url is not None:
        lines.append("  Alertmanager       high and critical alerts are posted to it")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .. import runtime
    from ..demo import DemoBot, DemoOptions, run_demo

    settings = demo_settings(args.config)
    data_dir = Path(args.data_dir)
    options = DemoOptions(duration=args.duration or None, rate=args.rate, seed=args.seed,
                          failures_for=args.failures_for)
    print(where_to_look(settings, data_dir), flush=True)
    bot = DemoBot(settings, options, data_dir)  # its data first: the scheduler backs it up at once
    handle = runtime.start(settings)
    try:
        asyncio.run(run_demo(bot))
    except KeyboardInterrupt:
        print("\nopsstack demo: stopping (Ctrl-C)", flush=True)
    finally:
        handle.stop()
    print("opsstack demo: stopped cleanly", flush=True)
    return 0
