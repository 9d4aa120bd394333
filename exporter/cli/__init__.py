"""The ``opsstack`` command: one module per subcommand, one catch-all in :func:`main`.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` to a function ``(args) -> int``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import OpsError
from . import alerts, assets, backup, check_config, demo, logs, recover, serve

SUBCOMMANDS = (check_config, demo, serve, backup, recover, alerts, logs, assets)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line naming the option and the value (argparse prints the usage
    before it; ``--help`` still shows it). Subcommand parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opsstack",
        description="Operations toolkit for long-running Python bots.",
    )
    parser.add_argument("--version", action="version", version=f"opsstack {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="a config.py module or a TOML file (default: $OPSSTACK_CONFIG)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except OpsError as exc:
        print(f"opsstack {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"opsstack {args.command}: interrupted", file=sys.stderr)
        return 130
