"""The stack's configuration files, shipped inside the package for people who run Prometheus,
Alertmanager, Grafana, Kibana, Elasticsearch or the Collector without the repository.

The files under ``files/`` are links to the repository's own ``alert_rules/``, ``dashboards/``
and ``deploy/<service>/`` (the single source, which compose mounts); building the wheel or the
sdist copies them in. They keep the repository's layout, so the paths the README and the
configs name hold after :func:`export` too. Read with :mod:`importlib.resources`, so they are
found in a wheel, an sdist build, a zip or the editable checkout alike.
"""
from __future__ import annotations

from collections.abc import Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from .._files import fsync_directory, make_dirs, replace_file
from ..errors import AssetsExportError


def root() -> Traversable:
    """The folder holding ``alert_rules/``, ``dashboards/`` and ``deploy/``."""
    return files(__name__) / "files"


def walk(folder: Traversable | None = None, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    """Every packaged file as ``(relative POSIX path, file)``, in name order."""
    for entry in sorted((folder or root()).iterdir(), key=lambda item: item.name):
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            yield from walk(entry, f"{name}/")
        elif entry.name != "__pycache__":
            yield name, entry


def read_bytes(relative: str) -> bytes:
    """The packaged file at ``relative`` (e.g. ``"deploy/elasticsearch/logs-bot-ilm-policy.json"``)."""
    return root().joinpath(*relative.split("/")).read_bytes()


def export(target: Path, *, force: bool = False) -> list[Path]:
    """Write every packaged file under ``target`` (created 0700 when missing), each atomically
    and 0600. Refuses, writing nothing, when one of them exists unless ``force``."""
    assets = list(walk())
    if target.exists() and not target.is_dir():
        raise AssetsExportError(f"{target} exists and is not a directory")
    if not force:
        existing = [target / name for name, _ in assets if (target / name).exists()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise AssetsExportError(f"{existing[0]}{more} already exist; use --force to overwrite")
    written = []
    try:
        for name, asset in assets:
            path = target / name
            make_dirs(path.parent)
            replace_file(path, asset.read_bytes())
            written.append(path)
    except OSError as exc:
        where = exc.filename or target
        raise AssetsExportError(f"cannot write {where}: {exc.strerror or exc}") from exc
    fsync_directory(target)
    return written
