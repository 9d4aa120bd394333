"""What commands made of actions share: ``opsstack backup <action>``, ``opsstack recover <action>``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from ..errors import NotConfirmedError


def action_parsers(subparsers: argparse._SubParsersAction, command: str, help_text: str,
                   handler: Callable[[argparse.Namespace], int],
                   json_help: str = "print JSON") -> Callable[[str, str], argparse.ArgumentParser]:
    """Add ``command`` (run by ``handler``); return a function adding an action with ``--json``."""
    parser = subparsers.add_parser(command, help=help_text)
    actions = parser.add_subparsers(dest=f"{command}_command", metavar="ACTION", required=True)
    parser.set_defaults(handler=handler)

    def action(name: str, action_help: str) -> argparse.ArgumentParser:
        added = actions.add_parser(name, help=action_help)
        added.add_argument("--json", action="store_true", help=json_help)
        return added

    return action


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def add_confirmation(parser: argparse.ArgumentParser) -> None:
    """``--dry-run`` and ``--yes`` for an action that deletes or replaces data."""
    parser.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def confirm(args: argparse.Namespace, question: str) -> None:
    """Ask ``question`` on the terminal unless ``--yes`` was given; raise NotConfirmedError on
    anything but yes, or when there is no terminal to ask."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmedError(f"{question} Not confirmed: pass --yes (standard input is not a terminal)")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise NotConfirmedError("not confirmed; nothing changed")
