"""``python -m tests.rehearsal [--minutes N] [--out DIR]``: what ``make rehearsal`` runs.

Needs root (the backup directory is a small tmpfs) and the harness's services prepared.
Exit 0 when every invariant held, 1 when one did not, 2 for a bad option or a missing service.
The work directory (the bot's logs, state, sent tasks, resource samples) is removed after a run
that held every invariant, and kept, its path printed, after one that did not: what to read.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.harness.base import ServiceUnavailable

from . import report
from .run import rehearse


def minutes(text: str) -> float:
    value = float(text)
    if not 5 <= value <= 24 * 60:
        raise argparse.ArgumentTypeError(f"--minutes {text}: must be from 5 to 1440")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rehearsal")
    parser.add_argument("--minutes", type=minutes, default=60.0, help="how long the load and faults run (default 60)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where the report goes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsstack-rehearsal-"))
    try:
        result = rehearse(work, args.minutes * 60)
    except ServiceUnavailable as exc:
        shutil.rmtree(work, ignore_errors=True)
        print(f"rehearsal: a service is unavailable: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    json_path, md_path = report.write(result, args.out)
    print(md_path.read_text())
    print(f"report: {json_path} and {md_path}")
    if result["ok"]:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"a goal was missed: the run's directory is kept for reading, {work}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
