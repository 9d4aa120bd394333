"""Restore: verify first, extract into a staging directory beside the target, then move it in.

Nothing is written when verification fails. A non-empty target is replaced only with
``overwrite=True`` (the old tree is moved aside and removed once the new one is in place).
``dry_run=True`` writes nothing and lists what would change.
"""
from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any

from ..errors import BackupError, IntegrityError
from .catalog import TEMP_MARKER
from .reader import ArchiveStream, open_tar
from .safety import extraction_filter


def is_empty(target: Path) -> bool:
    if not target.exists() and not target.is_symlink():
        return True
    if target.is_dir() and not target.is_symlink():
        with os.scandir(target) as entries:
            return next(entries, None) is None
    return False


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def plan_changes(manifest: dict[str, Any], target: Path) -> dict[str, Any]:
    """What a restore into ``target`` would do: create, replace, keep, or remove each path."""
    changes = []
    listed = set()
    for entry in manifest.get("files", []):
        path = target / entry["path"]
        listed.add(entry["path"])
        if not path.exists() and not path.is_symlink():
            action = "create"
        elif entry["type"] == "file":
            same = path.is_file() and not path.is_symlink() and path.stat().st_size == entry["size"] \
                and _file_sha256(path) == entry["sha256"]
            action = "unchanged" if same else "replace"
        elif entry["type"] == "dir":
            action = "unchanged" if path.is_dir() and not path.is_symlink() else "replace"
        else:
            same = path.is_symlink() and os.readlink(path) == entry.get("link")
            action = "unchanged" if same else "replace"
        changes.append({"path": entry["path"], "action": action})
    if target.is_dir():
        for root, dirs, files in os.walk(target):
            for name in dirs + files:
                rel = Path(root, name).relative_to(target).as_posix()
                if rel not in listed:
                    changes.append({"path": rel, "action": "remove"})
    counts: dict[str, int] = {}
    for change in changes:
        counts[change["action"]] = counts.get(change["action"], 0) + 1
    return {"dry_run": True, "target": str(target), "changes": changes, "counts": counts}


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


def _exact_mtimes(root: Path, manifest: dict[str, Any]) -> None:
    """The archive keeps whole seconds; the manifest has the exact times."""
    for entry in reversed(manifest.get("files", [])):  # children before their directory
        if "mtime" in entry:
            try:
                os.utime(root / entry["path"], (entry["mtime"], entry["mtime"]),
                         follow_symlinks=False)
            except OSError:
                pass


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def extract(backup_dir: Path, manifest: dict[str, Any], key: bytes | None, target: Path, *,
            overwrite: bool, cancel: threading.Event | None = None) -> dict[str, Any]:
    """Extract a verified backup into ``target`` through a staging directory."""
    if not is_empty(target) and not overwrite:
        raise BackupError(f"restore target {target} is not empty; pass overwrite=True "
                          "(--overwrite) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tag = f"{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
    staging = target.parent / f".{target.name}.restore{tag}"
    old = target.parent / f".{target.name}.old{tag}"
    staging.mkdir(mode=0o700)
    allowed = {entry["path"] for entry in manifest.get("files", [])}
    archive = backup_dir / manifest["archive"]["name"]
    stream = None
    try:
        stream = ArchiveStream(archive, manifest, key, cancel)
        with open_tar(stream) as tar:
            tar.extractall(staging, filter=extraction_filter(allowed))
        sha256, size = stream.finish()
        if sha256 != manifest["archive"]["sha256"] or size != manifest["archive"]["size"]:
            raise IntegrityError(f"archive {archive} changed during the restore; nothing restored")
        _exact_mtimes(staging, manifest)
        _fsync_tree(staging)
        if not (target.exists() or target.is_symlink()):
            os.rename(staging, target)
        elif _exchange(staging, target):  # one step: the target is never missing
            old = staging
        else:  # no renameat2 here: two renames, the old tree put back if the second fails
            os.rename(target, old)
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():
            os.rename(old, target)
        raise
    finally:
        if stream is not None:
            stream.close()
    if old.exists() or old.is_symlink():
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    return {"dry_run": False, "target": str(target), "files": manifest.get("file_count", 0),
            "bytes": manifest.get("total_bytes", 0)}
