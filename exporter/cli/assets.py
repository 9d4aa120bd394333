"""``opsstack assets export DIR``: the stack's configuration files (alert rules and their tests,
dashboards and their provisioning, the Prometheus, Alertmanager, Collector, Elasticsearch and
Kibana files) written out from the installed package, in the repository's layout."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("assets", help="write out the packaged configs of the stack")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write alert_rules/, dashboards/ and deploy/ under DIR")
    export.add_argument("dir", metavar="DIR", type=Path, help="the folder to write into (created if missing)")
    export.add_argument("--force", action="store_true", help="overwrite files that already exist")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .. import assets  # importlib.resources: only for this command

    written = assets.export(args.dir, force=args.force)
    print(f"wrote {len(written)} files under {args.dir} (alert_rules/, dashboards/, deploy/)")
    return 0
