"""Put damaged files back from a backup: only the damaged ones, only from an archive that
verified, each through a temp file checked against its sha256, the damaged version moved to
the quarantine first."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .._files import make_dirs
from ..backup_manager.catalog import TEMP_MARKER, archive_path
from ..backup_manager.reader import ArchiveStream, open_tar
from ..backup_manager.safety import ExtractionGuard
from ..errors import RecoveryError

IO_CHUNK = 1 << 20


def quarantine(path: Path, quarantine_dir: Path) -> Path:
    """Move ``path`` (file, link or tree) under ``quarantine_dir``, keeping its absolute path."""
    destination = quarantine_dir / str(path).lstrip("/")
    make_dirs(destination.parent)
    try:
        os.rename(path, destination)
    except OSError:
        shutil.move(str(path), str(destination))
    return destination


def _target(root: Path, rel: str) -> Path:
    return root if rel == "" else root / rel


def restore_members(backup_dir: Path, manifest: dict[str, Any], key: bytes | None, prefix: str,
                    root: Path, wanted: dict[str, dict[str, Any]], quarantine_dir: Path) -> dict[str, Any]:
    """Restore the relative paths in ``wanted`` (rel -> baseline entry) under ``root``.

    Returns ``{"restored": [...], "quarantined": [...], "failed": {rel: reason}}``.
    """
    names = {(prefix if rel == "" else f"{prefix}/{rel}"): rel for rel in wanted}
    restored, quarantined, failed = [], [], {}
    archive = archive_path(backup_dir, manifest)
    guard = ExtractionGuard({entry["path"] for entry in manifest.get("files", [])})
    stream = ArchiveStream(archive, manifest, key)
    try:
        with open_tar(stream) as tar:
            for member in tar:
                guard.check(member, f"archive {archive}: member")  # every member: the guard
                rel = names.get(member.name)                       # models the whole tree
                if rel is None:
                    continue
                if member.name in guard.outside:
                    failed[rel] = (f"the backup holds it as a symlink to {member.linkname!r}, "
                                   "outside the repaired path; repair does not restore it")
                    continue
                want = wanted[rel]
                target = _target(root, rel)
                try:
                    _put_back(tar, member, want, target, quarantine_dir, quarantined, rel, root)
                    restored.append(rel)
                except (OSError, RecoveryError) as exc:
                    failed[rel] = str(exc)
        stream.finish()
    finally:
        stream.close()
    for rel in wanted:
        if rel not in restored and rel not in failed:
            failed[rel] = "not found in the backup"
    return {"restored": sorted(restored), "quarantined": sorted(quarantined), "failed": failed}


def _check_no_link_between(root: Path, target: Path) -> None:
    """Refuse a ``target`` reached from ``root`` through a symlink or a non-directory on disk
    (the live tree may hold links the archive's guard cannot see)."""
    here = root
    for part in target.relative_to(root).parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            raise RecoveryError(f"cannot restore {target}: {here} is a link or not a directory; "
                                "nothing is written through it")


def _put_back(tar, member, want: dict[str, Any], target: Path, quarantine_dir: Path,
              quarantined: list[str], rel: str, root: Path) -> None:
    _check_no_link_between(root, target)
    make_dirs(target.parent)
    exists = target.exists() or target.is_symlink()
    if member.isdir():
        if exists and (target.is_symlink() or not target.is_dir()):
            quarantine(target, quarantine_dir)
            quarantined.append(rel)
        target.mkdir(mode=member.mode & 0o777 or 0o700, exist_ok=True)
        return
    tmp = target.parent / f".{target.name}.repair{TEMP_MARKER}{os.getpid()}"
    try:
        if member.issym():
            os.symlink(member.linkname, tmp)
        elif member.isreg():
            digest = hashlib.sha256()
            source = tar.extractfile(member)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                while chunk := source.read(IO_CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if want.get("sha256") and digest.hexdigest() != want["sha256"] and not want.get("sqlite"):
                raise RecoveryError(f"the backup's copy of {target} does not match the baseline")
            os.chmod(tmp, member.mode & 0o777)
            mtime = want.get("mtime", member.mtime)  # the archive keeps whole seconds only
            os.utime(tmp, (mtime, mtime))
        else:
            raise RecoveryError(f"cannot restore {target}: unsupported type in the backup")
        if exists:
            quarantine(target, quarantine_dir)
            quarantined.append(rel)
        os.replace(tmp, target)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def new_quarantine_dir(state_dir: Path) -> Path:
    return state_dir / "quarantine" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
