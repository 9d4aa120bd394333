"""The small files opsstack keeps (state, spool segments, manifests): read as JSON, replaced
whole or not at all."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``, or None when it cannot be read or parsed."""
    import json  # loaded by the first read, not on import

    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def replace_file(path: Path, data: bytes, *, temp: Path | None = None) -> None:
    """Make ``path`` hold ``data``: written to ``temp`` (default ``.<name>.tmp-<pid>`` beside it,
    mode 0600), fsynced, renamed over ``path``, and the directory fsynced. On any failure the
    temp file is removed and ``path`` is as it was."""
    temp = temp or path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:  # a buffered file writes all of it, short writes too
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)


def write_all(fd: int, data) -> None:
    """Write all of ``data`` (bytes or a buffer) to ``fd``, short writes too."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_directory(path: str | os.PathLike) -> None:
    """Make the renames and creations in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str | os.PathLike, mode: int = 0o700) -> Path:
    """Create directory ``path`` and its missing parents, each with exactly ``mode`` whatever
    the umask (``Path.mkdir(parents=True, mode=...)`` gives the parents ``0777 & ~umask``).
    Directories that already exist are left as they are; a file in the way raises
    FileExistsError or NotADirectoryError naming it."""
    missing = []
    here = Path(os.path.abspath(path))
    while not here.is_dir() and here != here.parent:
        missing.append(here)
        here = here.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made meanwhile by another process: its mode is its own
        os.chmod(directory, mode)  # the umask took bits off
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    import hashlib  # OpenSSL: loaded with the first hash, not on import

    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def rotated_copies(path: str | os.PathLike) -> list[str]:
    """The rotated copies of the log file ``path`` that exist (``path.1``, ``path.2`` ...), in
    number order (newest first)."""
    directory, base = os.path.split(os.fspath(path))
    numbers = []
    try:
        with os.scandir(directory or ".") as entries:
            for entry in entries:
                suffix = entry.name[len(base) + 1:]
                if entry.name.startswith(base + ".") and suffix.isdigit():
                    numbers.append(int(suffix))
    except (FileNotFoundError, NotADirectoryError):  # no directory: no copies
        return []
    return [f"{os.fspath(path)}.{number}" for number in sorted(numbers)]
