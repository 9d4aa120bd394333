"""What a restore refuses: absolute names, ``..``, links that leave the target, special files."""
from __future__ import annotations

import posixpath
import tarfile

from ..errors import UnsafeArchiveError


def _escapes(base_dir: str, target: str) -> bool:
    joined = posixpath.normpath(posixpath.join(base_dir, target))
    return joined == ".." or joined.startswith("../") or joined.startswith("/")


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is safe."""
    name = member.name
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "contains '..'"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "is a device or special file"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return "has an unsupported type"
    if member.issym():
        if member.linkname.startswith("/") or _escapes(posixpath.dirname(name), member.linkname):
            return f"is a symlink to {member.linkname!r}, outside the restore target"
    if member.islnk():
        if member.linkname.startswith("/") or _escapes("", member.linkname):
            return f"is a hard link to {member.linkname!r}, outside the restore target"
    return None


def extraction_filter(allowed: set[str] | None = None):
    """A tarfile extraction filter: our checks, then the standard library's ``data`` filter."""

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        reason = unsafe_reason(member)
        if reason is None and allowed is not None and member.name not in allowed:
            reason = "is not in the manifest"
        if reason is not None:
            raise UnsafeArchiveError(f"refusing member {member.name!r}: {reason}")
        try:
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(f"refusing member {member.name!r}: {exc}") from exc

    return check
