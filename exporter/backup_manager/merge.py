"""Move a staged restore into a live directory one path at a time, with an undo journal.

The steps (create, replace or remove one path each) are written to a journal before the first
one runs. Each step is one rename: what it replaces or removes is first kept in the ``old``
directory under the step's number (a hard link where it can be, so the path is never missing).
Success deletes the journal, then the kept copies. Anything else, an error here or a crash
found later by :func:`undo_interrupted`, undoes the steps in reverse order, so the target ends
as it was before the restore.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from .._files import read_json
from ..errors import BackupError
from .catalog import TEMP_MARKER

log = logging.getLogger("exporter.backup_manager")
JOURNAL_SUFFIX = ".restore-journal"


def journal_name(tag: str) -> str:
    """The journal's file name in BACKUP_DIR; ``tag`` carries ``TEMP_MARKER`` and the pid."""
    return f".restore{tag}{JOURNAL_SUFFIX}"


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    """Remove what a create step made: a file, a link, or a directory left empty."""
    if _is_dir(path):
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            log.warning("restore undo: %s was created by the restore and holds new files; "
                        "left in place", path)
    elif os.path.lexists(path):
        os.unlink(path)


def _check_parent(target: Path, rel: str) -> None:
    """Refuse a step whose parent is not the real directory inside the target (a link)."""
    parent = os.path.dirname(rel)
    expected = os.path.join(target, parent) if parent else str(target)
    if os.path.realpath(expected) != os.path.normpath(expected):
        raise BackupError(f"restore refuses {target / rel}: {expected} is a link; nothing is "
                          "written through links in the target")


def _keep(dest: Path, saved: Path) -> None:
    """Keep the file or link at ``dest`` as ``saved`` by a hard link, so ``dest`` is never
    missing until the rename that replaces it; a rename where links cannot be made."""
    try:
        os.link(dest, saved, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EACCES):
            raise
        os.rename(dest, saved)


def _run(step: dict[str, Any], number: int, staging: Path, old: Path, target: Path) -> None:
    rel, action = step["path"], step["action"]
    dest, source, saved = target / rel, staging / rel, old / str(number)
    _check_parent(target, rel)
    if action == "remove":
        os.rename(dest, saved)
        return
    if action == "replace":
        if step["type"] == "dir" or _is_dir(dest):
            os.rename(dest, saved)  # the path changes kind: what was there is moved aside whole
        else:
            _keep(dest, saved)
    if step["type"] == "dir":
        os.mkdir(dest, 0o700)
        os.chmod(dest, stat.S_IMODE(os.lstat(source).st_mode))
    else:
        os.replace(source, dest)


def _undo(steps: list[dict[str, Any]], done: int, staging: Path, old: Path, target: Path) -> None:
    for number in reversed(range(done)):
        step = steps[number]
        dest, saved = target / step["path"], old / str(number)
        if step["action"] == "create":
            if step["type"] == "dir" or not os.path.lexists(staging / step["path"]):
                _remove(dest)  # a file still staged was never moved in: nothing to take back
        elif os.path.lexists(saved):
            if os.path.lexists(dest) and _is_dir(dest) != _is_dir(saved):
                _remove(dest)
            os.replace(saved, dest)


def apply(steps: list[dict[str, Any]], *, staging: Path, old: Path, target: Path,
          journal: Path) -> None:
    """Run ``steps`` (dicts with ``path``, ``action`` and the backup's ``type``) moving paths
    from ``staging`` into ``target``; on any failure undo them and re-raise."""
    from .writer import write_json_atomic

    old.mkdir(mode=0o700)
    write_json_atomic(journal, {"target": str(target), "staging": str(staging), "old": str(old),
                                "steps": steps})
    done = 0
    try:
        for number, step in enumerate(steps):
            done = number + 1  # a step that fails half-way is undone too
            _run(step, number, staging, old, target)
    except BaseException:
        _undo(steps, done, staging, old, target)
        _discard(journal, staging, old)
        raise
    os.unlink(journal)  # the restore is complete from here on
    shutil.rmtree(old, ignore_errors=True)


def _discard(journal: Path, *trees: Path) -> None:
    for tree in trees:
        shutil.rmtree(tree, ignore_errors=True)
    try:
        os.unlink(journal)
    except FileNotFoundError:
        pass


def undo_interrupted(journal: Path) -> bool:
    """Undo the restore that wrote ``journal`` and died; False (journal kept) when it cannot."""
    record = read_json(journal)
    keys = ("target", "staging", "old")
    if not isinstance(record, dict) or not isinstance(record.get("steps"), list) \
            or not all(isinstance(record.get(key), str) for key in keys):
        log.error("restore journal %s cannot be read; left for a person to look at", journal)
        return False
    target, staging, old = (Path(record[key]) for key in keys)
    try:
        _undo(record["steps"], len(record["steps"]), staging, old, target)
    except OSError as exc:
        log.error("could not undo the interrupted restore into %s (%s); journal %s kept",
                  target, exc, journal)
        return False
    _discard(journal, staging, old)
    log.warning("undid an interrupted restore into %s", target)
    return True


def is_journal(name: str) -> bool:
    return name.startswith(".restore") and TEMP_MARKER in name and name.endswith(JOURNAL_SUFFIX)
