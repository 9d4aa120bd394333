"""Restore into a live directory: only the backup's paths are written, the project's own
directories are never touched, ``delete`` is explicit, and a failure or a SIGKILL half-way
leaves (after the next start) the target exactly as it was."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.backup_manager import merge
from exporter.errors import BackupError
from tests.test_backup_manager import ROOT, make_manager, make_tree


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root`` with what it holds: bytes, a link's target, or a directory
    (the verify state aside: a restore verifies first, which writes its time)."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + [f for f in files if f != ".verify-state.json"]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", path.read_bytes())
    return found


@pytest.fixture
def bot(tmp_path):
    """A bot's directory holding its data and opsstack's own directories, one backup of
    ``data`` taken, then the data changed."""
    home = tmp_path / "bot"
    make_tree(home / "data")
    manager = make_manager(tmp_path, BACKUP_DIR=str(home / "backups"), STATE_DIR=str(home / "state"),
                           LOG_DIR=str(home / "logs"))
    (home / "state").mkdir()
    (home / "state" / "alerts.json").write_text("{}")
    (home / "logs").mkdir()
    (home / "logs" / "bot.json").write_text("{}\n")
    (home / "unrelated.txt").write_text("not in any backup")
    manager.create_backup_sync([str(home / "data")], "b")
    (home / "data" / "config" / "token.txt").write_text("changed since the backup")
    (home / "data" / "new-since.txt").write_text("new")
    os.unlink(home / "data" / "media" / "text.log")
    return manager, home


def test_rollback_from_the_bot_directory_keeps_backups_state_logs_and_other_files(bot):
    manager, home = bot
    backups_before = snapshot(home / "backups")
    report = manager.restore_backup_sync("b", home, overwrite=True)
    assert (home / "data" / "config" / "token.txt").read_text() == "secret-token"
    assert (home / "data" / "media" / "text.log").exists()
    assert (home / "data" / "new-since.txt").read_text() == "new"  # kept: no delete
    assert (home / "unrelated.txt").read_text() == "not in any backup"
    assert snapshot(home / "backups") == backups_before
    assert (home / "state" / "alerts.json").read_text() == "{}"
    assert {p["setting"] for p in report["protected"]} == {"BACKUP_DIR", "STATE_DIR", "LOG_DIR"}
    assert report["counts"]["replace"] == 1 and report["counts"]["create"] == 1
    assert not [p for p in home.iterdir() if p.name.startswith(".")]
    assert manager.verify_backup("b")  # the only backup is still there and good


def test_delete_removes_only_what_the_backup_lacks_and_never_the_protected(bot):
    manager, home = bot
    plan = manager.restore_backup_sync("b", home, overwrite=True, delete=True, dry_run=True)
    actions = {c["path"]: c["action"] for c in plan["changes"]}
    assert actions["unrelated.txt"] == "remove" and actions["data/new-since.txt"] == "remove"
    assert actions["backups"] == actions["state"] == actions["logs"] == "protected"
    assert not [path for path, action in actions.items()
                if action == "remove" and path.startswith(("backups", "state", "logs"))]
    assert (home / "unrelated.txt").exists()  # the dry run wrote nothing
    manager.restore_backup_sync("b", home, overwrite=True, delete=True)
    assert sorted(os.listdir(home)) == ["backups", "data", "logs", "state"]
    assert not (home / "data" / "new-since.txt").exists()
    assert manager.verify_backup("b")


@pytest.mark.parametrize("inside, setting", [("backups/x", "BACKUP_DIR"), ("state", "STATE_DIR"),
                                             ("logs/old", "LOG_DIR")])
def test_a_target_inside_the_projects_own_directories_is_refused(bot, inside, setting):
    manager, home = bot
    before = snapshot(home)
    with pytest.raises(BackupError, match=setting):
        manager.restore_backup_sync("b", home / inside, overwrite=True, delete=True)
    with pytest.raises(BackupError, match=setting):
        manager.restore_backup_sync("b", home / inside, dry_run=True)
    assert snapshot(home) == before


def test_a_failure_half_way_puts_every_path_back(bot, monkeypatch):
    manager, home = bot
    before = snapshot(home)
    real_run, calls = merge._run, []

    def failing(step, number, *args):
        calls.append(number)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return real_run(step, number, *args)

    monkeypatch.setattr(merge, "_run", failing)
    with pytest.raises(BackupError, match="No space left"):
        manager.restore_backup_sync("b", home, overwrite=True, delete=True)
    assert len(calls) == 4
    assert snapshot(home) == before
    assert not [p for p in os.listdir(manager.backup_dir) if merge.is_journal(p)]


def test_sigkill_half_way_is_undone_by_the_next_start(bot, tmp_path):
    manager, home = bot
    before = snapshot(home)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from exporter.backup_manager import merge
        from tests.test_backup_manager import make_manager
        real_run = merge._run
        def dying(step, number, *args):
            if number == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_run(step, number, *args)
        merge._run = dying
        home = Path({str(home)!r})
        manager = make_manager(Path({str(tmp_path)!r}), BACKUP_DIR=str(home / "backups"),
                               STATE_DIR=str(home / "state"), LOG_DIR=str(home / "logs"))
        manager.restore_backup_sync("b", home, overwrite=True, delete=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    journals = [p for p in os.listdir(home / "backups") if merge.is_journal(p)]
    assert len(journals) == 1 and snapshot(home) != before  # killed with the target half-done

    make_manager(tmp_path, BACKUP_DIR=str(home / "backups"), STATE_DIR=str(home / "state"),
                 LOG_DIR=str(home / "logs"))  # the next start of the bot
    after = snapshot(home)
    assert after == before
    assert not [p for p in os.listdir(home / "backups") if merge.is_journal(p)]


def test_nothing_is_written_through_a_link_in_the_target(tmp_path):
    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(make_tree(tmp_path / "data"))], "b")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("outside the target")
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(elsewhere, target / "data")
    manager.restore_backup_sync("b", target, overwrite=True)
    assert sorted(os.listdir(elsewhere)) == ["precious.txt"]
    assert not (target / "data").is_symlink()
    assert (target / "data" / "config" / "token.txt").read_text() == "secret-token"


def test_not_enough_space_is_refused_before_writing_and_leaves_no_parent(tmp_path, monkeypatch):
    from exporter.backup_manager import restore

    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(make_tree(tmp_path / "data"))], "b")

    class Full:
        free = 10

    monkeypatch.setattr(restore.shutil, "disk_usage", lambda path: Full)
    with pytest.raises(BackupError, match="free"):
        manager.restore_backup_sync("b", tmp_path / "new" / "deeper" / "target")
    assert not (tmp_path / "new").exists()


def test_links_leaving_the_target_are_backed_up_and_skipped_on_restore_unless_asked(tmp_path, capsys):
    from exporter.cli import main as cli

    outside = tmp_path / "shared"
    outside.mkdir()
    (outside / "conf.txt").write_text("outside the data")
    source = make_tree(tmp_path / "data")
    os.symlink(outside / "conf.txt", source / "config" / "absolute-link")
    os.symlink("../../../shared", source / "config" / "relative-link")
    manager = make_manager(tmp_path)
    manager.create_backup_sync([str(source)], "b")
    report = manager.verify_backup_report("b")
    assert report["ok"] and sorted(report["outside_links"]) == ["data/config/absolute-link",
                                                                "data/config/relative-link"]
    plan = manager.restore_backup_sync("b", tmp_path / "out", dry_run=True)
    assert plan["counts"]["skipped"] == 2

    restored = manager.restore_backup_sync("b", tmp_path / "out")
    assert sorted(c["path"] for c in restored["skipped"]) == ["data/config/absolute-link",
                                                              "data/config/relative-link"]
    assert "outside the target" in restored["skipped"][0]["reason"]
    assert not os.path.lexists(tmp_path / "out" / "data" / "config" / "absolute-link")
    assert (tmp_path / "out" / "data" / "config" / "token.txt").read_text() == "secret-token"
    assert manager.drill_backup_sync("b")["ok"]  # a skipped link is not a failed drill

    manager.restore_backup_sync("b", tmp_path / "all", outside_links=True)
    assert os.readlink(tmp_path / "all" / "data" / "config" / "absolute-link") == str(outside / "conf.txt")
    assert os.readlink(tmp_path / "all" / "data" / "config" / "relative-link") == "../../../shared"
    assert sorted(os.listdir(outside)) == ["conf.txt"]

    env = {"BACKUP_DIR": str(manager.backup_dir), "STATE_DIR": str(tmp_path / "state")}
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        capsys.readouterr()
        assert cli(["backup", "restore", "b", str(tmp_path / "cli")]) == 3  # done, with skips
        out = capsys.readouterr().out
        assert "skipped   data/config/absolute-link" in out and "--outside-links" in out
        os.mkfifo(source / "pipe")
        assert cli(["backup", "create", str(source), "--name", "with-fifo", "--json"]) == 3
        assert json.loads(capsys.readouterr().out)["skipped"] == ["data/pipe"]
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_the_filter_on_its_own_skips_links_leaving_the_root(tmp_path):
    import io
    import tarfile

    from exporter.backup_manager.safety import extraction_filter
    from tests.test_restore_safety import _member

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [_member("x", tarfile.DIRTYPE), _member("x/up", tarfile.SYMTYPE, link="../../.."),
                           _member("x/etc", tarfile.SYMTYPE, link="/etc"), _member("x/f", data=b"ok")]:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    for allow, expected in ((False, ["f"]), (True, ["etc", "f", "up"])):
        buffer.seek(0)
        dest = tmp_path / f"dest-{allow}"
        dest.mkdir()
        with tarfile.open(fileobj=buffer) as tar:
            tar.extractall(dest, filter=extraction_filter(outside_links=allow))
        assert sorted(os.listdir(dest / "x")) == expected
