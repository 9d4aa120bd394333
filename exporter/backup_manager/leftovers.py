"""What interrupted runs leave in ``BACKUP_DIR``, and its clean-up (run with the directory lock
held, at enable and before each backup).

Temp files and scratch trees carry ``TEMP_MARKER`` and the writer's pid in their name
(``.<name>.tmp-<pid>[-...]``); only those of processes that are gone are touched. A restore's
undo journal is played back first, so the target it was writing returns to what it was.
Nothing else is removed: an archive without a manifest may be someone's file, not a crashed
backup.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .catalog import TEMP_MARKER
from .lock import pid_alive

log = logging.getLogger("exporter.backup_manager")


def writer_alive(temp_name: str) -> bool:
    """Whether the process that named ``temp_name`` still runs (this process does: another of
    its threads may be writing it)."""
    digits = temp_name.split(TEMP_MARKER, 1)[1].split("-", 1)[0]
    return digits.isdigit() and pid_alive(int(digits))


def clean_leftovers(backup_dir: Path) -> list[str]:
    """Undo the restores and remove the temp files and scratch trees of dead runs; the names
    removed. A restore that cannot be undone keeps its journal (and says so)."""
    import shutil  # (and the restore's journal code) with the first clean-up, not on import

    from .merge import is_journal, undo_interrupted

    removed = []
    for entry in sorted(os.listdir(backup_dir), key=lambda name: not is_journal(name)):
        if not (entry.startswith(".") and TEMP_MARKER in entry) or writer_alive(entry):
            continue
        path = backup_dir / entry
        if is_journal(entry):
            undo_interrupted(path)
            continue
        try:
            if path.is_dir() and not path.is_symlink():  # a restore drill's scratch tree
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(entry)
        except OSError:
            pass
    if removed:
        log.warning("removed %d leftover file(s) of an interrupted backup in %s", len(removed), backup_dir)
    return removed
