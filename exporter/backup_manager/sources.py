"""What a backup holds: its sources, each with the top-level name it gets in the archive, and
the walk under them (directories, regular files and symlinks, depth first in name order, no link
followed, the backup directory itself left out by identity; sockets, FIFOs and devices are
listed as skipped)."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackupError


@dataclass
class Entry:
    path: str           # on disk
    arcname: str        # inside the archive
    st: os.stat_result


def plan_sources(source_paths: Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    """Each source's absolute path and the top-level name it gets inside the archive."""
    planned, taken = [], set()
    for raw in source_paths:
        path = Path(os.path.abspath(os.fspath(raw)))
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise BackupError(f"source path does not exist: {path}") from None
        base = path.name or "root"
        arcname, n = base, 2
        while arcname in taken:
            arcname, n = f"{base}_{n}", n + 1
        taken.add(arcname)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        planned.append({"path": str(path), "arcname": arcname, "type": kind})
    if not planned:
        raise BackupError("no source paths given")
    return planned


def walk(sources: list[dict[str, str]], exclude: Path, skipped: list[str]) -> Iterator[Entry]:
    """Every directory, regular file and symlink under the sources, depth first in name order
    (no link is followed), yielded as the walk goes, so the archive is written while the walk
    goes on; sockets, FIFOs and devices are added to ``skipped``. Something that vanishes
    while the walk runs is simply not listed."""
    try:  # the backup directory by identity, whichever path (through a symlink too) leads to it
        excluded = os.stat(exclude)
        exclude_id = (excluded.st_dev, excluded.st_ino)
    except FileNotFoundError:
        exclude_id = None

    def children(path: str, arcname: str) -> Iterator[tuple[str, str, os.stat_result]]:
        try:
            with os.scandir(path) as listing:
                found = sorted(listing, key=_name)
        except OSError as exc:
            raise BackupError(f"cannot read directory {path}: {exc.strerror}") from exc
        for child in found:
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) != exclude_id:
                yield child.path, f"{arcname}/{child.name}", st

    for source in sources:
        try:
            top = (source["path"], source["arcname"], os.lstat(source["path"]))
        except FileNotFoundError:
            continue
        if (top[2].st_dev, top[2].st_ino) == exclude_id:
            continue
        pending = [iter((top,))]
        while pending:
            item = next(pending[-1], None)
            if item is None:
                pending.pop()
                continue
            path, arcname, st = item
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                yield Entry(path, arcname, st)
                pending.append(children(path, arcname))
            elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                yield Entry(path, arcname, st)
            else:
                skipped.append(arcname)  # sockets, fifos, devices: never backed up


def _name(entry: os.DirEntry) -> str:
    return entry.name
