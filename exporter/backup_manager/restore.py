"""Restore: plan, extract into a staging directory inside the target, then move paths in.

Only the paths the backup holds are written. A target that is not empty needs
``overwrite=True`` to replace them; what the backup does not hold is kept unless
``delete=True``. The project's own directories (``BACKUP_DIR``, ``STATE_DIR``, ``LOG_DIR``, the
spool inside ``STATE_DIR``) are never written or removed: a target inside one of them is
refused, and inside a target they are left as they are (the plan lists them as ``protected``).
Symlinks pointing outside the target are skipped (listed as ``skipped``) unless
``outside_links=True``. ``dry_run=True`` writes nothing and returns the same plan. The moves go
through :mod:`.merge`, whose journal lets a crash be undone.
"""
from __future__ import annotations

import os
import secrets
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

from .._files import file_sha256, make_dirs
from ..errors import BackupError, IntegrityError
from .catalog import TEMP_MARKER
from .merge import apply, journal_name
from .reader import ArchiveStream, open_tar
from .safety import extraction_filter, outside_links as links_leaving

ACTIONS = ("create", "replace", "unchanged", "remove", "keep", "protected", "skipped")
STAGING_PREFIX = ".opsstack-restore"


def is_empty(target: Path) -> bool:
    if not target.exists() and not target.is_symlink():
        return True
    if target.is_dir() and not target.is_symlink():
        with os.scandir(target) as entries:
            return next(entries, None) is None
    return False


def protected_inside(target: Path, protected: dict[str, Path]) -> dict[str, str]:
    """The protected directories inside ``target``, by their path relative to it (``target``
    is a real path). Raises BackupError when ``target`` is one of them or lies inside one."""
    inside = {}
    for key, directory in protected.items():
        real = Path(os.path.realpath(directory))
        if target == real or real in target.parents:
            raise BackupError(f"refusing to restore into {target}: it is inside {key} ({real}); "
                              "restore into another directory")
        if target in real.parents:
            inside[real.relative_to(target).as_posix()] = key
    return inside


def _under(rel: str, roots: dict[str, str]) -> bool:
    return any(rel == root or rel.startswith(root + "/") for root in roots)


def _above(rel: str, roots: dict[str, str]) -> bool:
    return any(root.startswith(rel + "/") for root in roots)


def _action(entry: dict[str, Any], path: Path) -> str:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "create"
    if entry["type"] == "dir":
        return "unchanged" if stat.S_ISDIR(info.st_mode) else "replace"
    if entry["type"] == "file":
        same = stat.S_ISREG(info.st_mode) and info.st_size == entry["size"] \
            and file_sha256(path) == entry["sha256"]
        return "unchanged" if same else "replace"
    same = stat.S_ISLNK(info.st_mode) and os.readlink(path) == entry.get("link")
    return "unchanged" if same else "replace"


def _not_in_backup(target: Path, listed: dict[str, str], protected: dict[str, str],
                   delete: bool) -> list[dict[str, Any]]:
    """What the target holds and the backup does not: kept, or removed with ``delete`` (a
    directory removed is one entry). Protected directories and those above them are kept."""
    found = []
    for root, dirs, files in os.walk(target):
        rel_root = Path(root).relative_to(target).as_posix()
        descend = []
        for name in sorted(dirs) + sorted(files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            is_dir = name in dirs and not os.path.islink(os.path.join(root, name))
            if rel_root == "." and name.startswith(STAGING_PREFIX) and TEMP_MARKER in name:
                continue  # a restore's own staging
            if _under(rel, protected):
                if rel not in listed:
                    found.append({"path": rel, "action": "protected", "type": "dir"})
            elif rel in listed:
                if is_dir and listed[rel] == "dir":
                    descend.append(name)
            elif _above(rel, protected):
                descend.append(name)
            else:
                found.append({"path": rel, "action": "remove" if delete else "keep",
                              "type": "dir" if is_dir else "file"})
                if is_dir and not delete:
                    descend.append(name)
        dirs[:] = [d for d in dirs if d in descend]
    return found


def plan(manifest: dict[str, Any], target: Path, protected: dict[str, str], *,
         delete: bool, outside_links: bool = False) -> list[dict[str, Any]]:
    """One change per path, in archive order (a directory before what it holds), then the
    paths only the target has. Symlinks pointing outside the target are ``skipped`` unless
    ``outside_links``."""
    changes, listed, fresh = [], {}, set()  # fresh: directories the restore makes anew
    leaving = set() if outside_links else set(links_leaving(manifest.get("files", [])))
    for entry in manifest.get("files", []):
        rel, kind = entry["path"], entry["type"]
        listed[rel] = kind
        if _under(rel, protected) or (_above(rel, protected) and kind != "dir"):
            action = "protected"
        elif rel in leaving:
            action = "skipped"
        elif os.path.dirname(rel) in fresh:
            action = "create"
        else:
            action = _action(entry, target / rel)
        if kind == "dir" and action in ("create", "replace"):
            fresh.add(rel)
        change = {"path": rel, "action": action, "type": kind}
        if action == "skipped":
            change["reason"] = f"a symlink to {entry.get('link')!r}, outside the target"
        changes.append(change)
    return changes + _not_in_backup(target, listed, protected, delete)


def summary(changes: list[dict[str, Any]], target: Path, protected: dict[str, str],
            dry_run: bool) -> dict[str, Any]:
    counts = {action: 0 for action in ACTIONS}
    for change in changes:
        counts[change["action"]] += 1
    return {"dry_run": dry_run, "target": str(target), "changes": changes,
            "counts": {k: v for k, v in counts.items() if v},
            "protected": [{"path": rel, "setting": key} for rel, key in sorted(protected.items())],
            "skipped": [c for c in changes if c["action"] == "skipped"]}


def plan_changes(manifest: dict[str, Any], target: Path, protected_dirs: dict[str, Path], *,
                 delete: bool = False, outside_links: bool = False) -> dict[str, Any]:
    """What a restore into ``target`` would do, writing nothing."""
    protected = protected_inside(target, protected_dirs)
    changes = plan(manifest, target, protected, delete=delete, outside_links=outside_links)
    return summary(changes, target, protected, True)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _exact_mtimes(root: Path, entries: list[dict[str, Any]]) -> None:
    """The archive keeps whole seconds; the manifest has the exact times."""
    for entry in reversed(entries):  # children before their directory
        if "mtime" in entry:
            try:
                os.utime(root / entry["path"], (entry["mtime"], entry["mtime"]),
                         follow_symlinks=False)
            except OSError:
                pass


def _make_target(target: Path) -> list[Path]:
    """Create ``target`` and its missing parents (0700); the ones created, outermost first."""
    if os.path.lexists(target) and not target.is_dir():
        raise BackupError(f"cannot restore to {target}: it is not a directory")
    missing = []
    path = target
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    make_dirs(target)
    return list(reversed(missing))


def _check_space(target: Path, manifest: dict[str, Any]) -> None:
    needed = int(manifest.get("total_bytes", 0))
    free = shutil.disk_usage(target).free
    if needed > free:
        raise BackupError(f"cannot restore to {target}: the backup holds {needed} bytes and the "
                          f"file system has {free} free; nothing restored")


def extract(backup_dir: Path, manifest: dict[str, Any], key: bytes | None, target: Path, *,
            protected_dirs: dict[str, Path], overwrite: bool, delete: bool = False,
            outside_links: bool = False, cancel: threading.Event | None = None) -> dict[str, Any]:
    """Restore a verified backup into ``target`` (a real path): stage, check, move in."""
    protected = protected_inside(target, protected_dirs)
    if not is_empty(target) and not overwrite:
        raise BackupError(f"restore target {target} is not empty; pass overwrite=True "
                          "(--overwrite) to replace the paths the backup holds")
    created = _make_target(target)
    tag = f"{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
    staging = target / f"{STAGING_PREFIX}{tag}"
    try:
        _check_space(target, manifest)
        staging.mkdir(mode=0o700)
        _stage(backup_dir, manifest, key, staging, outside_links, cancel)
        changes = plan(manifest, target, protected, delete=delete, outside_links=outside_links)
        steps = [c for c in changes if c["action"] in ("create", "replace", "remove")]
        apply(steps, staging=staging, old=target / f"{STAGING_PREFIX}.old{tag}", target=target,
              journal=backup_dir / journal_name(tag))
        moved_in = {c["path"] for c in steps if c["action"] != "remove"}
        _exact_mtimes(target, [e for e in manifest.get("files", []) if e["path"] in moved_in])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for path in reversed(created):
            try:
                os.rmdir(path)
            except OSError:
                break
        raise
    shutil.rmtree(staging, ignore_errors=True)
    report = summary(changes, target, protected, False)
    report.update(files=manifest.get("file_count", 0), bytes=manifest.get("total_bytes", 0))
    return report


def _stage(backup_dir: Path, manifest: dict[str, Any], key: bytes | None, staging: Path,
           outside_links: bool, cancel: threading.Event | None) -> None:
    allowed = {entry["path"] for entry in manifest.get("files", [])}
    archive = backup_dir / manifest["archive"]["name"]
    stream = ArchiveStream(archive, manifest, key, cancel)
    try:
        with open_tar(stream) as tar:
            tar.extractall(staging, filter=extraction_filter(allowed, outside_links=outside_links))
        sha256, size = stream.finish()
    finally:
        stream.close()
    if sha256 != manifest["archive"]["sha256"] or size != manifest["archive"]["size"]:
        raise IntegrityError(f"archive {archive} changed during the restore; nothing restored")
    _fsync_tree(staging)
