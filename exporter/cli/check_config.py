"""``opsstack check-config``: the effective settings, secrets masked, and where each came from."""
from __future__ import annotations

import argparse
import json

from ..config import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check-config", help="print the effective settings and their sources")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    rows = settings.describe()
    if args.json:
        print(json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows], indent=2))
        return 0
    width = max(len(key) for key, _, _ in rows)
    value_width = min(48, max(len(value) for _, value, _ in rows))
    for key, value, source in rows:
        print(f"{key:<{width}}  {value:<{value_width}}  {source}")
    return 0
