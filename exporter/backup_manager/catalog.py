"""The backup catalog: what lists as a backup, read from the backup directory (or from its copy
mirrored in Redis while that copy is current, see :func:`read_catalog`).

A backup is ``<name>.manifest.json`` plus the archive it names. The manifest is written last,
so a backup lists only when both exist; temp files (leading dot) never list. This module only
imports the standard library (and ``exporter._files``): ``opsstack serve`` calls :func:`read_catalog` at scrape time
without enabling the backup manager.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import read_json
from ..errors import IntegrityError

if TYPE_CHECKING:
    from ..ports import CatalogMirror

MANIFEST_SUFFIX = ".manifest.json"
ARCHIVE_SUFFIX = {"zstd": ".tar.zst", "gzip": ".tar.gz", "none": ".tar"}
VERIFY_STATE_FILE = ".verify-state.json"
DRILL_STATE_FILE = ".drill-state.json"
LOCK_FILE = ".lock"
TEMP_MARKER = ".tmp-"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FORMAT_VERSION = 2  # 2: the zstd archive is a series of frames, one per 2 MiB of tar
# 3: an encrypted backup's manifest is sealed (see sealing.py); 4: and its archive has one
# AES-GCM frame per compressed segment (see crypto.py); formats 1 to 4 are all read
ENCRYPTED_FORMAT_VERSION = 4


def manifest_path(backup_dir: str | os.PathLike, name: str) -> Path:
    return Path(backup_dir) / f"{name}{MANIFEST_SUFFIX}"


def archive_name_ok(name: object) -> bool:
    """Whether a manifest's ``archive.name`` is a plain file name, so the archive it names lies
    in the backup directory (not ``../outside/x``, not a path, not a hidden file)."""
    return isinstance(name, str) and bool(name) and not name.startswith(".") and \
        "/" not in name and "\\" not in name and "\0" not in name


def archive_path(backup_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """The archive of ``manifest``, inside ``backup_dir`` (IntegrityError when the manifest
    names a file elsewhere)."""
    name = manifest["archive"]["name"]
    if not archive_name_ok(name):
        raise IntegrityError(f"backup {manifest.get('name')!r}: its manifest names the archive "
                             f"{name!r}, which is not a file in {backup_dir}; not read")
    return Path(backup_dir) / name


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when it is missing or not a manifest of ours."""
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != "opsstack-backup":
        return None
    archive, created = data.get("archive"), data.get("created_at")
    if not (isinstance(data.get("name"), str) and isinstance(created, (int, float)) and not isinstance(created, bool)
            and isinstance(archive, dict) and archive_name_ok(archive.get("name"))
            and isinstance(data.get("settings", {}), dict) and isinstance(data.get("files", []), list)):
        return None  # damaged or hand-edited: not a backup this code can vouch for
    return data


def open_manifest(manifest: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The whole manifest: as read, or unsealed with ``key`` when it is sealed (format 3).
    Raises BackupKeyError (no key, another key) or DecryptionError (changed)."""
    if not isinstance(manifest.get("sealed"), dict):
        return manifest
    from .sealing import unseal  # cryptography loads only for sealed manifests

    return unseal(manifest, key)


def read_verify_state(backup_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{name: {"ok": bool, "at": timestamp}}`` of the last verification of each backup."""
    return _read_state(Path(backup_dir) / VERIFY_STATE_FILE)


def read_drill_state(backup_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{name: {"ok": bool, "at": timestamp}}`` of the last restore drill of each backup."""
    return _read_state(Path(backup_dir) / DRILL_STATE_FILE)


def _read_state(path: Path) -> dict[str, dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, dict):
        return {}
    return {name: entry for name, entry in data.items() if isinstance(entry, dict)
            and isinstance(entry.get("at"), (int, float)) and isinstance(entry.get("ok"), bool)}


def last_drill(backup_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The newest drill recorded, ``{"name", "ok", "at"}``, or None."""
    state = read_drill_state(backup_dir)
    if not state:
        return None
    name = max(state, key=lambda key: state[key]["at"])
    return {"name": name, **state[name]}


def summarize(manifest: dict[str, Any], backup_dir: Path, verified: dict[str, Any] | None = None,
              drilled: dict[str, Any] | None = None) -> dict[str, Any]:
    archive = manifest["archive"]
    settings = manifest.get("settings", {})
    return {
        "name": manifest["name"],
        "created_at": manifest["created_at"],
        "tier": manifest.get("tier", "manual"),
        "description": manifest.get("description", ""),
        "size": archive["size"],
        "files": manifest.get("file_count", 0),
        "total_bytes": manifest.get("total_bytes", 0),
        "compression": settings.get("compression"),
        "encrypted": bool(settings.get("encrypted")),
        "sealed": "sealed" in manifest,
        "source_paths": [source["path"] for source in manifest.get("sources", [])],
        "archive": str(backup_dir / archive["name"]),
        "manifest": str(manifest_path(backup_dir, manifest["name"])),
        "verified": None if verified is None else bool(verified.get("ok")),
        "verified_at": None if verified is None else verified.get("at"),
        "drilled": None if drilled is None else bool(drilled.get("ok")),
        "drilled_at": None if drilled is None else drilled.get("at"),
    }


# Per backup directory: each manifest's (mtime, size, inode) and its content less the per-file
# list, so a scrape of `opsstack serve` parses a manifest only when it changed.
_lean_manifests: dict[str, dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]]] = {}


def _lean_manifest(path: Path, cached, seen: dict, entry: str) -> dict[str, Any] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    key = (info.st_mtime_ns, info.st_size, info.st_ino)
    if cached is not None and cached[0] == key:
        seen[entry] = cached
        return cached[1]
    manifest = read_manifest(path)
    lean = None if manifest is None else {k: v for k, v in manifest.items() if k != "files"}
    seen[entry] = (key, lean)
    return lean


def set_name(backup_dir: str | os.PathLike) -> str:
    """The name of the backup set in ``backup_dir`` shared by every process and host (its locks,
    its mirrored catalog): made from the directory's real path, so hosts sharing one mount it alike."""
    import hashlib  # OpenSSL: on first use, not on import

    return "backup:" + hashlib.sha256(os.fsencode(os.path.realpath(backup_dir))).hexdigest()[:16]


def directory_stamp(directory: Path) -> str | None:
    """What changes whenever an entry of ``directory`` is added, removed or replaced (a manifest,
    an archive, a state file): its inode and modification time; None when it is missing."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return f"{info.st_ino}:{info.st_mtime_ns}"


def read_catalog(backup_dir: str | os.PathLike, mirror: CatalogMirror | None = None) -> list[dict[str, Any]]:
    """Every complete backup in ``backup_dir``, oldest first. A missing directory lists nothing.

    Each entry: ``name, created_at, tier, description, size (archive bytes), files,
    total_bytes, compression, encrypted, source_paths, archive, manifest, verified,
    verified_at, drilled, drilled_at`` (``drilled``: None until a restore drill ran).

    With a ``mirror`` (Redis), the entries come from it while it is current: made at the set's
    generation and from the directory as it is now (its stamp is taken before the files are
    read, so a change during a rebuild leaves the copy stale, not wrong); otherwise they are
    read from the files and mirrored for the next reader.
    """
    directory = Path(backup_dir)
    if mirror is None:
        return _read_files(directory)
    stamp = directory_stamp(directory)
    if stamp is None:
        return []
    name = set_name(directory)
    entries, generation = mirror.load(name, stamp)
    if entries is not None:  # paths as this process names the directory
        return [{**entry, "archive": str(directory / Path(entry["archive"]).name),
                 "manifest": str(directory / Path(entry["manifest"]).name)} for entry in entries]
    backups = _read_files(directory)
    if generation is not None:
        mirror.store(name, generation, stamp, backups)
    return backups


def _read_files(directory: Path) -> list[dict[str, Any]]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    verify_state, drill_state = read_verify_state(directory), read_drill_state(directory)
    previous = _lean_manifests.get(str(directory), {})
    seen: dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]] = {}
    backups = []
    for entry in names:
        if entry.startswith(".") or not entry.endswith(MANIFEST_SUFFIX):
            continue
        manifest = _lean_manifest(directory / entry, previous.get(entry), seen, entry)
        if manifest is None or manifest.get("name") + MANIFEST_SUFFIX != entry:
            continue
        try:
            archive_name = manifest["archive"]["name"]
            if not (directory / archive_name).is_file():
                continue
            backups.append(summarize(manifest, directory, verify_state.get(manifest["name"]),
                                     drill_state.get(manifest["name"])))
        except (KeyError, TypeError):
            continue
    _lean_manifests[str(directory)] = seen
    backups.sort(key=lambda item: (item["created_at"], item["name"]))
    return backups
