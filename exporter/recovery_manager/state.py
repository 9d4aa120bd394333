"""The recovery manager's state file: the last check's result and recent history, written
atomically under ``STATE_DIR`` and read by ``opsstack serve`` at scrape time."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._files import make_dirs, read_json, replace_file

STATE_FILE = "integrity-state.json"
BASELINE_FILE = "integrity-baseline.json"


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}``."""
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def read_integrity_state(state_dir: str | os.PathLike) -> dict[str, Any]:
    """``{"last_check", "last_ok", "checks": {outcome: n}, "repairs": {outcome: n},
    "last_report", "history"}``, or ``{}`` before the first check."""
    return _read_json(Path(state_dir) / STATE_FILE)


def read_baselines(state_dir: Path) -> dict[str, Any]:
    return _read_json(state_dir / BASELINE_FILE)


def write_json(path: Path, data: Any) -> None:
    import json

    make_dirs(path.parent)
    replace_file(path, json.dumps(data, sort_keys=True).encode())
