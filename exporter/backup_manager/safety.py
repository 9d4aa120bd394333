"""What verify, restore and repair refuse, decided by one :class:`ExtractionGuard` per pass over
an archive, whatever the Python patch level (``tarfile``'s ``data`` filter on 3.11.7 lets the
CVE-2025-4517 shape through; the guard does not rely on it).

The guard models the staging root as it is after every earlier member, links included, and
refuses a member when:

* its name is empty, absolute, contains ``..``, or is longer than ``PATH_MAX``;
* it is a device, a FIFO, a sparse file or of any type other than file, directory, symlink
  or hard link;
* it is not in the manifest (when the caller gives the manifest's names);
* its path passes through an earlier symlink member or an earlier file (so its final path is
  its name: never outside the root, never through a link);
* it repeats an earlier entry, or is not a directory where earlier entries created one;
* it is a symlink that loops, or a symlink at a path an earlier link's resolution went through
  (it would change where that link points after the fact);
* it is a hard link to anything but an earlier regular-file member.

A symlink whose target is absolute or resolves outside the root is not refused: the backup
holds it as the source had it. The guard lists it in :attr:`ExtractionGuard.outside`, nothing
may pass through it, and a restore skips it unless asked to restore such links
(``outside_links=True``): writing the link itself never writes outside the target.
"""
from __future__ import annotations

import os
import tarfile
from collections import deque
from collections.abc import Collection

from ..errors import UnsafeArchiveError

PATH_MAX = 4096
MAX_LINK_HOPS = 40  # the kernel's limit (ELOOP)
_DIR, _IMPLIED, _FILE, _SYMLINK = "dir", "implied", "file", "symlink"


def _parts(name: str) -> tuple[str, ...]:
    return tuple(part for part in name.split("/") if part not in ("", "."))


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """What is wrong with ``member`` on its own (name and type), or None. The checks that
    depend on the members before it are :class:`ExtractionGuard`'s."""
    name = member.name
    if not _parts(name) or _is_absolute(name):
        return "has an absolute or empty path"
    if ".." in name.replace("\\", "/").split("/"):
        return "contains '..'"
    if len(os.fsencode(name)) >= PATH_MAX:
        return f"has a name longer than PATH_MAX ({PATH_MAX} bytes)"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "is a device or special file"
    if member.issparse():
        return "is a sparse file (opsstack never writes one)"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return "has an unsupported type"
    if (member.issym() or member.islnk()) and not member.linkname:
        return "is a link with an empty target"
    if member.islnk() and _is_absolute(member.linkname):
        return f"is a hard link to {member.linkname!r}, outside the restore target"
    if member.islnk() and ".." in member.linkname.split("/"):
        return f"is a hard link to {member.linkname!r}, outside the restore target"
    return None


class ExtractionGuard:
    """Fed the members of one archive in order; :meth:`check` raises UnsafeArchiveError for the
    first one that could write outside the root (see the module's rules)."""

    def __init__(self, allowed: Collection[str] | None = None) -> None:
        self._allowed = allowed
        self._kinds: dict[tuple[str, ...], str] = {}      # path -> _DIR/_IMPLIED/_FILE/_SYMLINK
        self._links: dict[tuple[str, ...], str] = {}      # symlink path -> its target
        self._pinned: dict[tuple[str, ...], set[tuple[str, ...]]] = {}  # path -> links through it
        self.outside: list[str] = []  # symlinks pointing outside the root, in archive order

    def check(self, member: tarfile.TarInfo, where: str = "member") -> None:
        reason = self.reason(member)
        if reason is not None:
            raise UnsafeArchiveError(f"{where} {member.name!r} {reason}")

    def reason(self, member: tarfile.TarInfo) -> str | None:
        """Why ``member`` must not be extracted after the members seen so far, or None (then
        it is recorded, and the next member is judged with it in place)."""
        reason = unsafe_reason(member)
        if reason is None and self._allowed is not None and member.name not in self._allowed:
            reason = "is not in the manifest"
        if reason is not None:
            return reason
        parts = _parts(member.name)
        for depth in range(1, len(parts)):
            kind = self._kinds.get(parts[:depth])
            if kind == _SYMLINK:
                return f"passes through the symlink {'/'.join(parts[:depth])!r}"
            if kind == _FILE:
                return f"passes through the file {'/'.join(parts[:depth])!r}"
        existing = self._kinds.get(parts)
        if existing in (_DIR, _FILE, _SYMLINK):
            return "is a duplicate entry"
        if existing == _IMPLIED and not member.isdir():
            return "is not a directory, where earlier entries created one"
        kind = _DIR if member.isdir() else _SYMLINK if member.issym() else _FILE
        if member.issym():
            reason = self._add_link(parts, member.linkname)
            if reason is not None:
                return reason
        elif member.islnk() and self._kinds.get(_parts(member.linkname)) != _FILE:
            return (f"is a hard link to {member.linkname!r}, which is not an earlier regular "
                    "file of the archive")
        for depth in range(1, len(parts)):
            self._kinds.setdefault(parts[:depth], _IMPLIED)
        self._kinds[parts] = kind
        return None

    def _add_link(self, path: tuple[str, ...], target: str) -> str | None:
        """Record the symlink ``path -> target``: inside the root, or listed in ``outside``.
        Refused when it loops, or when it would move an earlier link (one whose resolution went
        through ``path``) from inside the root to outside."""
        self._links[path] = target
        walked = self._resolve(path[:-1], target)
        if walked is None:
            if self._loops(path[:-1], target):
                del self._links[path]
                return f"is a symlink to {target!r}, which loops"
            self.outside.append("/".join(path))
            return None
        for link in self._pinned.get(path, ()):
            if self._resolve(link[:-1], self._links[link]) is None:
                del self._links[path]
                return (f"is a symlink to {target!r}, which makes the earlier link "
                        f"{'/'.join(link)!r} point outside the restore target")
        for step in walked:
            self._pinned.setdefault(step, set()).add(path)
        return None

    def _loops(self, base: tuple[str, ...], target: str) -> bool:
        try:
            self._resolve(base, target, strict=True)
        except RecursionError:
            return True
        return False

    def _resolve(self, base: tuple[str, ...], target: str,
                 strict: bool = False) -> list[tuple[str, ...]] | None:
        """Every path the kernel would walk resolving ``target`` from directory ``base`` with
        the symlinks known so far (the last one is where the link points), or None when the
        walk leaves the root or loops (``strict``: a loop raises RecursionError)."""
        if _is_absolute(target):
            return None
        path = list(base)
        todo = deque(target.split("/"))
        walked: list[tuple[str, ...]] = []
        hops = 0
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not path:
                    return None
                path.pop()
                continue
            path.append(part)
            here = tuple(path)
            walked.append(here)
            link = self._links.get(here)
            if link is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    if strict:
                        raise RecursionError(target)
                    return None
                if _is_absolute(link):
                    return None
                path.pop()
                todo.extendleft(reversed(link.split("/")))
        walked.append(tuple(path))
        return walked


def extraction_filter(allowed: Collection[str] | None = None, *, outside_links: bool = False):
    """A tarfile extraction filter for one extraction: the guard (which keeps its state from
    member to member), then the standard library's ``data`` filter for the attributes
    (modes, owners). Refusals raise UnsafeArchiveError. Symlinks pointing outside the root
    are skipped, or with ``outside_links`` extracted as they are."""
    guard = ExtractionGuard(allowed)

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        guard.check(member, "refusing member")
        if guard.outside and guard.outside[-1] == member.name:
            return member if outside_links else None
        try:
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(f"refusing member {member.name!r}: {exc}") from exc

    return check


def outside_links(entries: list[dict]) -> list[str]:
    """The symlinks among manifest ``entries`` that point outside the restore root."""
    guard = ExtractionGuard()
    kinds = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}
    for entry in entries:
        member = tarfile.TarInfo(entry["path"])
        member.type = kinds.get(entry["type"], tarfile.REGTYPE)
        member.linkname = entry.get("link", "")
        guard.reason(member)
    return guard.outside
