"""``opsstack alerts list|summary|test|resolve``: the alert history, its counts, a channel test,
and resolving alerts of the running bot (:mod:`.alerts_resolve`).

``list`` and ``summary`` read the history file under ``STATE_DIR`` without starting anything.
``test`` sends one test alert through the configured channels (using a temporary state
directory, so a running bot's history and retry queue are left alone) and reports each channel.
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from datetime import datetime, timezone

from ..config import load_settings
from ..errors import AlertError, DeliveryError
from . import alerts_resolve
from ._types import LIMIT, TIMEOUT

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("alerts", help="list, count, test or resolve the bot's alerts")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="stored alerts, newest first")
    listing.add_argument("--limit", type=LIMIT, default=20, help="at most this many, 1 to 1000000 (default 20)")
    listing.add_argument("--severity", help="low, medium, high or critical")
    listing.add_argument("--type", dest="alert_type", metavar="TYPE", help="an alert type such as download_failed")
    listing.add_argument("--since", help="a span (30m, 2h, 1d) or an ISO timestamp")
    listing.add_argument("--active", action="store_true", help="only unresolved alerts")
    listing.add_argument("--json", action="store_true", help="print JSON")
    summary = actions.add_parser("summary", help="counts by type and severity, top repeating")
    summary.add_argument("--json", action="store_true", help="print JSON")
    test = actions.add_parser("test", help="send a test alert through the configured channels")
    test.add_argument("--severity", default="critical", help="route as this severity (default critical)")
    test.add_argument("--timeout", type=TIMEOUT, default=30.0, help="seconds to wait for delivery, 0.1 to 3600")
    test.add_argument("--json", action="store_true", help="print JSON")
    alerts_resolve.register(actions)
    parser.set_defaults(handler=run)


def parse_since(raw: str | None, now: float) -> float | None:
    if raw is None:
        return None
    match = _SPAN.match(raw.strip())
    if match:
        return now - float(match[1]) * _UNIT[match[2]]
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise AlertError(f"--since {raw!r} is neither a span like 2h nor an ISO timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=getattr(args, "config", None))
    if args.action == "test":
        return _test(settings, args)
    if args.action == "resolve":
        return alerts_resolve.resolve(settings, args)
    from ..alert_manager import read_history

    store = read_history(settings)
    now = time.time()
    if args.action == "list":
        alerts = store.query(args.limit, args.severity, args.alert_type, parse_since(args.since, now),
                             include_resolved=not args.active)
        if args.json:
            print(json.dumps([alert.to_dict() for alert in alerts], indent=2))
            return 0
        if not alerts:
            print(f"no alerts in {settings.general.state_dir}")
        for alert in alerts:
            state = "resolved" if alert.resolved else "active"
            repeats = f" x{alert.repeat_count}" if alert.repeat_count > 1 else ""
            task = f" [{alert.task_id}]" if alert.task_id else ""
            print(f"{_when(alert.last_seen)}  {alert.severity.value:<8} {state:<8} {alert.type.value:<16} "
                  f"{alert.title}{task}{repeats}: {alert.message}")
        return 0
    summary = store.summary(now)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['total']} alerts ({summary['distinct']} distinct, {summary['active']} active) in the last "
          f"{summary['retention_hours']:g} h; {summary['last_hour']['total']} in the last hour")
    for name, count in summary["by_severity"].items():
        if count:
            print(f"  {name:<10} {count}")
    for name, count in summary["by_type"].items():
        if count:
            print(f"  {name:<18} {count}")
    for item in summary["top_repeating"]:
        print(f"  repeating: {item['type']} '{item['title']}' x{item['count']}")
    return 0


def _test(settings, args: argparse.Namespace) -> int:
    from ..alert_manager import AlertManager, AlertType, parse_severity
    from ..channels import CHANNELS
    from ..metrics import Metrics

    severity = parse_severity(args.severity)
    with tempfile.TemporaryDirectory(prefix="opsstack-alert-test-") as state:
        manager = AlertManager(metrics=Metrics(), channel_factories=CHANNELS, monitor_resources=False,
                               retry_base=1.0, retry_max=5.0)
        manager.enable(settings.replace(STATE_DIR=state, ENABLE_ALERT_SYSTEM=True))
        try:
            manager.trigger_alert_sync(AlertType.CUSTOM, severity, "opsstack test alert",
                                       f"Sent by `opsstack alerts test` at {_when(time.time())} UTC.")
            manager.flush(args.timeout)
            stats, errors = manager.channel_stats(), manager.channel_errors()
        finally:
            manager.disable(timeout=0.5)
    routed = settings.alerts.channels[severity.value]
    result = {name: {"delivered": stats[name]["delivered"] > 0, "error": None if stats[name]["delivered"] else errors[name]}
              for name in routed}
    if args.json:
        print(json.dumps({"severity": severity.value, "channels": result}, indent=2))
    else:
        if not routed:
            print(f"no channel is configured for severity {severity.value}")
        for name, outcome in result.items():
            print(f"  {name:<13} {'delivered' if outcome['delivered'] else 'FAILED: ' + str(outcome['error'])}")
    failed = [name for name, outcome in result.items() if not outcome["delivered"]]
    if failed:
        raise DeliveryError(f"the test alert did not reach: {', '.join(failed)}")
    return 0
