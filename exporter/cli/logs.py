"""``opsstack logs stats|cleanup``: the log files under ``LOG_DIR`` (no manager needs to run)."""
from __future__ import annotations

import argparse
import json

from ..config import load_settings
from ..errors import OpsError
from ..logger_manager import LoggerManager
from ._types import DAYS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logs", help="show or clean up the JSON log files under LOG_DIR")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="files and bytes per log file family")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    cleanup = actions.add_parser("cleanup", help="delete rotated log files older than --days")
    cleanup.add_argument("--days", type=DAYS, required=True, metavar="N",
                         help="delete rotated files last written more than N days ago")
    cleanup.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=getattr(args, "config", None))
    manager = LoggerManager(settings)
    if args.action == "stats":
        stats = manager.get_log_stats()
        if args.json:
            print(json.dumps({key: stats[key] for key in ("log_dir", "log_file_count", "total_bytes", "handlers")},
                             indent=2, sort_keys=True))
        else:
            print(f"{stats['log_dir']}: {stats['log_file_count']} files, {stats['total_bytes']} bytes")
            for name, entry in stats["handlers"].items():
                print(f"  {name:7s} {entry['path']}: {entry['files']} files, {entry['bytes']} bytes")
        return 0
    if args.action == "cleanup":
        try:
            deleted = manager.cleanup_old_logs(args.days)
        except OSError as exc:
            raise OpsError(f"cannot clean up {settings.logging.dir}: {exc}") from exc
        if args.json:
            print(json.dumps({"log_dir": str(settings.logging.dir), "days": args.days, "deleted": deleted}))
        else:
            print(f"deleted {deleted} rotated log files older than {args.days:g} days from {settings.logging.dir}")
        return 0
    raise OpsError(f"unknown action {args.action!r}")
