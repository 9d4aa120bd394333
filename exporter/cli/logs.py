"""PLACEHOLDER: `opsstack logs`, replaced by the work that builds it (keep `register(subparsers)`)."""
from __future__ import annotations

import argparse

from ..errors import OpsError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logs", help="(not built yet)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise OpsError("this subcommand is not built yet")
