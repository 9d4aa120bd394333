"""``exporter._files.make_dirs``: every directory opsstack creates, parents included, is 0700
whatever the umask (``mkdir(parents=True, mode=0o700)`` left parents 0777 under umask 000)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exporter.backup_manager import archives
from exporter._files import make_dirs
from exporter.alert_manager.store import ensure_state_dir
from exporter.metrics import Metrics
from exporter.recovery_manager import RecoveryManager
from exporter.recovery_manager.repair import quarantine
from tests.test_backup_manager import make_settings


@pytest.fixture
def umask_000():
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def modes(top: Path, leaf: Path) -> dict[str, int]:
    """The mode of every directory from ``top`` (excluded) down to ``leaf``."""
    found, here = {}, leaf
    while here != top:
        found[str(here.relative_to(top))] = stat.S_IMODE(os.lstat(here).st_mode)
        here = here.parent
    return found


def test_make_dirs_gives_every_new_directory_0700_and_leaves_existing_ones(tmp_path, umask_000):
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    leaf = make_dirs(existing / "a" / "b" / "c")
    assert leaf.is_dir()
    assert modes(existing, leaf) == {"a": 0o700, "a/b": 0o700, "a/b/c": 0o700}
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755
    assert make_dirs(leaf) == leaf  # already there: nothing to do
    (tmp_path / "file").write_text("x")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        make_dirs(tmp_path / "file" / "sub")


def test_state_quarantine_and_alert_directories_are_0700_under_umask_000(tmp_path, umask_000):
    state = tmp_path / "deep" / "state"
    recovery = RecoveryManager(make_settings(tmp_path, STATE_DIR=str(state)), Metrics(), backups=archives)
    recovery.enable(periodic=False)
    assert modes(tmp_path, state) == {"deep": 0o700, "deep/state": 0o700}

    damaged = tmp_path / "damaged.txt"
    damaged.write_text("x")
    moved = quarantine(damaged, state / "quarantine" / "run")
    assert moved.read_text() == "x"
    assert set(modes(state, moved.parent).values()) == {0o700}

    alerts = ensure_state_dir(tmp_path / "other" / "alerts")
    assert modes(tmp_path, alerts) == {"other": 0o700, "other/alerts": 0o700}
