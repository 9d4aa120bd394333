"""What a path should look like (a baseline) and how it differs from what is on disk.

A baseline maps each relative path under a checked path (``""`` is the path itself) to
``{"type", "size", "mtime", "sha256", "link"}``. It comes from :func:`scan` (recorded with
``record_baseline``) or from a backup manifest (:func:`from_manifest`).
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from .._files import file_sha256
from ..backup_manager.catalog import open_manifest, read_catalog, read_manifest
from ..errors import IntegrityError

log = logging.getLogger("exporter.recovery_manager")

MTIME_TOLERANCE = 0.001


def _describe(path: Path, st: os.stat_result, with_hash: bool) -> dict[str, Any]:
    if stat.S_ISDIR(st.st_mode):
        return {"type": "dir"}
    if stat.S_ISLNK(st.st_mode):
        return {"type": "symlink", "link": os.readlink(path)}
    if stat.S_ISREG(st.st_mode):
        entry = {"type": "file", "size": st.st_size, "mtime": st.st_mtime}
        if with_hash:
            entry["sha256"] = file_sha256(path)
        return entry
    return {"type": "other"}


def scan(root: Path, with_hash: bool = True) -> dict[str, dict[str, Any]]:
    """The current state of ``root`` (nothing when it does not exist); links are not followed."""
    entries: dict[str, dict[str, Any]] = {}
    try:
        st = root.lstat()
    except FileNotFoundError:
        return entries
    entries[""] = _describe(root, st, with_hash)
    if entries[""]["type"] != "dir":
        return entries
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            entries[path.relative_to(root).as_posix()] = _describe(path, info, with_hash)
    return entries


def covering_source(manifest: dict[str, Any], path: Path) -> str | None:
    """The archive prefix holding ``path`` in this backup, or None when it is not backed up."""
    for source in manifest.get("sources", []):
        base = Path(source["path"])
        if path == base:
            return source["arcname"]
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return f"{source['arcname']}/{rel.as_posix()}"
    return None


def from_manifest(manifest: dict[str, Any], path: Path) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """``(archive prefix, baseline)`` of ``path`` from a manifest, or None."""
    prefix = covering_source(manifest, path)
    if prefix is None:
        return None
    entries: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("files", []):
        name = entry["path"]
        if name == prefix:
            rel = ""
        elif name.startswith(prefix + "/"):
            rel = name[len(prefix) + 1:]
        else:
            continue
        entries[rel] = {k: entry[k] for k in ("type", "size", "mtime", "sha256", "link", "sqlite",
                                              "changed_during_backup") if k in entry}
    return prefix, entries


def backups_covering(backup_dir: Path, path: Path,
                     key: bytes | None = None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(catalog entry, manifest)`` of backups holding ``path``: verified ones first, newest
    first. A sealed manifest that ``key`` cannot open is passed over (and logged)."""
    found = []
    for backup in reversed(read_catalog(backup_dir)):
        manifest = read_manifest(backup["manifest"])
        if manifest is None:
            continue
        try:
            manifest = open_manifest(manifest, key)
        except IntegrityError as exc:  # no key, another key, or a changed manifest
            log.warning("not using backup %s: %s", backup["name"], exc)
            continue
        if covering_source(manifest, path) is not None:
            found.append((backup, manifest))
    found.sort(key=lambda pair: (not pair[0]["verified"], -pair[0]["created_at"]))
    return found


def compare(baseline: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]], *,
            check_hash: bool, check_structure: bool) -> dict[str, list[str]]:
    """Differences by kind: ``missing, extra, wrong_type, changed_size, changed_hash,
    changed_mtime`` (the last only in fast mode, where hashes are not read)."""
    found: dict[str, list[str]] = {k: [] for k in ("missing", "extra", "wrong_type", "changed_size",
                                                   "changed_hash", "changed_mtime")}
    for rel, want in sorted(baseline.items()):
        have = current.get(rel)
        if have is None:
            if check_structure:
                found["missing"].append(rel)
            continue
        if have["type"] != want["type"]:
            found["wrong_type"].append(rel)
            continue
        if want["type"] == "symlink" and have.get("link") != want.get("link"):
            found["changed_hash"].append(rel)
        if want["type"] != "file" or want.get("sqlite") or want.get("changed_during_backup"):
            continue  # live databases are copied through SQLite's API: their bytes differ
        if have["size"] != want["size"]:
            found["changed_size"].append(rel)
        elif check_hash:
            if have.get("sha256") != want.get("sha256"):
                found["changed_hash"].append(rel)
        elif abs(have["mtime"] - want.get("mtime", have["mtime"])) > MTIME_TOLERANCE:
            found["changed_mtime"].append(rel)
    if check_structure:
        found["extra"] = sorted(rel for rel in current if rel not in baseline)
    return found
