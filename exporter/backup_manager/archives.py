"""The backups as the recovery manager reads them: this module is the
:class:`exporter.ports.BackupArchives` passed as ``RecoveryManager(backups=...)``. The archive
code (tarfile, zstandard, cryptography) loads on the first check, not with this module."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from . import catalog
from .lock import DirectoryLock


def parse_key(text: str) -> bytes:
    from .crypto import parse_key as parse

    return parse(text)


def read_manifest(backup_dir: Path, name: str, key: bytes | None) -> dict[str, Any] | None:
    if not catalog.NAME_PATTERN.match(name):
        return None
    manifest = catalog.read_manifest(catalog.manifest_path(backup_dir, name))
    return None if manifest is None else catalog.open_manifest(manifest, key)


def check_archive(backup_dir: Path, manifest: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    from .verify import check_archive as check

    return check(backup_dir, manifest, key)


def lock(path: Path, what: str) -> AbstractContextManager:
    return DirectoryLock(path, what)
