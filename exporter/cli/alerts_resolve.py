"""``opsstack alerts resolve``: resolve alerts of the running bot from another shell.

The alerts to resolve are found in the history under ``STATE_DIR`` (by id or fingerprint, or by
type and details) and handed to the running bot as a request in ``STATE_DIR`` (see
:mod:`exporter.alert_manager.control`): the bot resolves them and tells its channels once, as
for any resolution. The command waits (``--wait``) until the history shows them resolved.
"""
from __future__ import annotations

import argparse
import json
import time

from ..errors import AlertError
from ._types import DURATION


def register(actions: argparse._SubParsersAction) -> None:
    resolve = actions.add_parser("resolve", help="resolve firing alerts of the running bot")
    resolve.add_argument("key", nargs="?", metavar="FINGERPRINT",
                         help="the alert's fingerprint or id (opsstack alerts list --json shows both)")
    resolve.add_argument("--type", dest="alert_type", metavar="TYPE",
                         help="every firing alert of this type (with --detail: those matching)")
    resolve.add_argument("--detail", action="append", default=[], metavar="KEY=VALUE",
                         help="with --type: only alerts whose detail KEY is VALUE (repeatable)")
    resolve.add_argument("--wait", type=DURATION, default=10.0,
                         help="seconds to wait for the running bot to apply it (default 10; 0: do not wait)")
    resolve.add_argument("--json", action="store_true", help="print JSON")


def _details(pairs: list[str]) -> dict[str, str]:
    details = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AlertError(f"--detail {pair!r} is not KEY=VALUE")
        details[key.strip()] = value
    return details


def _chosen(store, args: argparse.Namespace) -> list:
    """The firing alerts the arguments name (AlertError, one line, when there are none)."""
    if bool(args.key) == bool(args.alert_type):
        raise AlertError("name the alerts to resolve: a FINGERPRINT (or id), or --type TYPE")
    if args.key:
        if args.detail:
            raise AlertError("--detail goes with --type, not with a FINGERPRINT")
        named = [a for a in store.query(None) if args.key in (a.id, a.fingerprint)]
        if not named:
            raise AlertError(f"no alert has the fingerprint or id {args.key!r} (see opsstack alerts list)")
        firing = [a for a in named if not a.resolved]
        if not firing:
            raise AlertError(f"the alert {args.key!r} is already resolved")
        return firing
    details = _details(args.detail)
    firing = [a for a in store.query(None, alert_type=args.alert_type, include_resolved=False)
              if all(str(a.details.get(k)) == v for k, v in details.items())]
    if not firing:
        matching = "".join(f" with {k}={v}" for k, v in details.items())
        raise AlertError(f"no firing {args.alert_type} alert{matching}")
    return firing


def resolve(settings, args: argparse.Namespace) -> int:
    from ..alert_manager import control, read_history

    alerts = _chosen(read_history(settings), args)
    control.submit(settings.general.state_dir, {"action": "resolve", "keys": [a.id for a in alerts]})
    wanted = {a.id for a in alerts}
    deadline = time.monotonic() + args.wait
    applied = False
    while args.wait:
        store = read_history(settings)
        if all(store.alerts.get(i) is None or store.alerts[i].resolved for i in wanted):
            applied = True
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    listed = [{"id": a.id, "fingerprint": a.fingerprint, "type": a.type.value, "title": a.title} for a in alerts]
    if args.json:
        print(json.dumps({"alerts": listed, "applied": applied}, indent=2))
        return 0
    for item in listed:
        print(f"{item['fingerprint']}  {item['type']:<16} {item['title']}")
    if applied:
        print(f"resolved {len(listed)} alert(s); the bot notified the channels that had them firing")
    else:
        print(f"asked the bot to resolve {len(listed)} alert(s); no running bot applied it "
              f"{'within ' + format(args.wait, 'g') + ' s' if args.wait else 'yet'} (it will when it runs)")
    return 0
