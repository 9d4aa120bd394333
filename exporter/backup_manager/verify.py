"""Verify: read a backup back and check every member against its manifest (the guard, kinds,
link targets, sizes before data, SHA-256 of each file and of the archive), into a report; and
turn a failed report into the matching exception."""
from __future__ import annotations

import hashlib
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import (BackupUnreadableError, DecryptionError, IntegrityError, OpsError,
                      UnsafeArchiveError)
from .catalog import archive_path
from .reader import ArchiveStream, open_tar
from .safety import ExtractionGuard

def _kind(member: tarfile.TarInfo) -> str:
    return "file" if member.isreg() else "dir" if member.isdir() else \
        "symlink" if member.issym() else "other"


def _member_sha256(stream: ArchiveStream, member: tarfile.TarInfo, archive: Path,
                   advance: Callable[[int], None]) -> str:
    """The SHA-256 of ``member``'s data, read straight from the stream (its size is checked)."""
    digest = hashlib.sha256()
    if stream.tell() != member.offset_data:
        stream.seek(member.offset_data)
    if stream.hash_into(digest, member.size, advance) != member.size:
        raise IntegrityError(f"archive {archive}: {member.name!r} is cut short")
    return digest.hexdigest()


def _check_members(tar: tarfile.TarFile, guard: ExtractionGuard, stream: ArchiveStream, archive: Path,
                   expected: dict[str, dict[str, Any]], bytes_total: int, report: dict[str, Any],
                   advance: Callable[[int], None]) -> set[str]:
    """Each member through ``guard``, then against its manifest entry (kind, link target, size
    before any data is read, SHA-256); mismatches go to ``report["errors"]``. The names seen."""
    seen, declared, errors = set(), 0, report["errors"]
    for member in tar:
        guard.check(member, f"archive {archive}: member")
        entry = expected[member.name]
        seen.add(member.name)
        kind = _kind(member)
        if kind != entry["type"]:
            errors.append(f"archive {archive}: {member.name!r} is a {kind}, "
                          f"the manifest says {entry['type']}")
            continue
        if kind == "symlink" and member.linkname != entry.get("link"):
            errors.append(f"archive {archive}: link {member.name!r} points elsewhere")
        if kind != "file":
            continue
        declared += member.size
        if member.size != entry.get("size") or declared > bytes_total:
            raise IntegrityError(
                f"archive {archive}: {member.name!r} holds {member.size} bytes, the "
                f"manifest says {entry.get('size')} ({bytes_total} in all); not read")
        sha256 = _member_sha256(stream, member, archive, advance)
        report["files_checked"] += 1
        if sha256 != entry.get("sha256"):
            errors.append(f"archive {archive}: {member.name!r} does not match its "
                          "recorded size or sha256")
    return seen


def check_archive(backup_dir: Path, manifest: dict[str, Any], key: bytes | None,
                  progress: Callable[[int, int, int, int], None] | None = None,
                  cancel: threading.Event | None = None) -> dict[str, Any]:
    """Read every byte and check every hash. Bad data gives a report ``{"ok", "name",
    "archive", "errors", "error_type", "files_checked", "bytes_checked", "outside_links"}``;
    a backup that cannot be read at all (no key, the wrong key, the archive missing) raises
    BackupUnreadableError.

    Every member passes the same :class:`ExtractionGuard` as a restore (so verify refuses
    exactly what restore would), and its size is checked against the manifest before its data
    is read, the running total too: nothing is read beyond what the manifest declares."""
    archive = Path(backup_dir) / str(manifest["archive"]["name"])
    report: dict[str, Any] = {"ok": False, "name": manifest["name"], "archive": str(archive),
                              "errors": [], "error_type": None, "files_checked": 0,
                              "bytes_checked": 0, "outside_links": []}
    expected = {entry["path"]: entry for entry in manifest.get("files", [])}
    files_total = manifest.get("file_count", 0)
    bytes_total = manifest.get("total_bytes", 0)
    errors = report["errors"]
    stream = None

    def advance(n: int) -> None:
        report["bytes_checked"] += n
        if progress is not None:
            progress(report["files_checked"], files_total, report["bytes_checked"], bytes_total)

    try:
        archive = archive_path(backup_dir, manifest)
        stream = ArchiveStream(archive, manifest, key, cancel)
        guard = ExtractionGuard(expected)
        with open_tar(stream) as tar:
            seen = _check_members(tar, guard, stream, archive, expected, bytes_total, report, advance)
        sha256, size = stream.finish()
        report["outside_links"] = list(guard.outside)  # kept as links; a restore skips them
        if sha256 != manifest["archive"]["sha256"] or size != manifest["archive"]["size"]:
            errors.insert(0, f"archive {archive} does not match the sha256 and size in its manifest")
        for missing in sorted(set(expected) - seen):
            errors.append(f"archive {archive}: {missing!r} is in the manifest but not the archive")
    except BackupUnreadableError:
        raise
    except OpsError as exc:
        errors.insert(0, str(exc))
        report["error_type"] = type(exc).__name__
    except (tarfile.TarError, EOFError, OSError) as exc:
        errors.insert(0, f"archive {archive} is corrupt: {exc}")
    finally:
        if stream is not None:
            stream.close()
    if errors and report["error_type"] is None:
        report["error_type"] = "IntegrityError"
    report["ok"] = not errors
    return report


def raise_for_report(report: dict[str, Any]) -> None:
    """Turn a failed verification report into the matching exception."""
    if report["ok"]:
        return
    message = report["errors"][0]
    if len(report["errors"]) > 1:
        message += f" (and {len(report['errors']) - 1} more problems)"
    cls = {"DecryptionError": DecryptionError, "UnsafeArchiveError": UnsafeArchiveError}.get(
        report["error_type"], IntegrityError)
    raise cls(message)
