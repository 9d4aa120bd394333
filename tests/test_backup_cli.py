"""``opsstack backup`` and ``opsstack recover``: JSON output, exit codes, quiet off a terminal,
the progress line on one."""
from __future__ import annotations

import io
import json

import pytest

from exporter.cli import main
from exporter.cli.progress import Progress
from tests.test_backup_manager import make_tree


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in ("OPSSTACK_CONFIG", "BACKUP_ENCRYPTION_KEY", "BACKUP_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def run_json(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def test_backup_commands_json(env, capsys):
    source = make_tree(env / "data")
    code, created, err = run_json(capsys, "backup", "create", str(source), "--name", "cli",
                                  "--description", "from the CLI", "--json")
    assert code == 0 and created["backup_name"] == "cli" and created["files"] == 4
    assert err == ""  # not a terminal: no progress line
    code, listed, _ = run_json(capsys, "backup", "list", "--json")
    assert [b["name"] for b in listed] == ["cli"] and listed[0]["description"] == "from the CLI"
    code, report, _ = run_json(capsys, "backup", "verify", "cli", "--json")
    assert code == 0 and report["ok"] is True
    code, plan, _ = run_json(capsys, "backup", "restore", "cli", str(env / "out"), "--dry-run", "--json")
    assert code == 0 and plan["counts"] == {"create": 10} and not (env / "out").exists()
    code, restored, _ = run_json(capsys, "backup", "restore", "cli", str(env / "out"), "--json")
    assert code == 0 and (env / "out" / "data" / "config" / "token.txt").read_text() == "secret-token"
    code, _, err = run_json(capsys, "backup", "restore", "cli", str(env / "out"))
    assert code == 1 and "not empty" in err
    code, stats, _ = run_json(capsys, "backup", "stats", "--json")
    assert stats["count"] == 1 and stats["newest_verified"] == "cli"
    code, cleaned, _ = run_json(capsys, "backup", "cleanup", "--days", "0", "--json")
    assert code == 0 and cleaned == {"dry_run": False, "deleted": [], "count": 0}  # newest verified stays


def test_verify_failure_exit_code_names_archive(env, capsys):
    source = make_tree(env / "data")
    main(["backup", "create", str(source), "--name", "b"])
    capsys.readouterr()
    archive = env / "backups" / "b.tar.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x10
    archive.write_bytes(bytes(data))
    code = main(["backup", "verify", "b"])
    out = capsys.readouterr().out
    assert code == 3 and "FAILED" in out and str(archive) in out
    code = main(["backup", "restore", "b", str(env / "out")])
    assert code == 3 and str(archive) in capsys.readouterr().err
    assert not (env / "out").exists()


def test_recover_commands(env, capsys, monkeypatch):
    source = make_tree(env / "data")
    main(["backup", "create", str(source), "--name", "base"])
    capsys.readouterr()
    code, checks, _ = run_json(capsys, "recover", "check", str(source), "--json")
    assert code == 0 and checks[0]["valid"] is True and checks[0]["baseline"] == "backup:base"
    (source / "config" / "token.txt").unlink()
    code, checks, _ = run_json(capsys, "recover", "check", str(source), "--json")
    assert code == 3 and checks[0]["missing"] == ["config/token.txt"]
    code, report, _ = run_json(capsys, "recover", "auto", str(source), "--json")
    assert code == 1 and report["failed_paths"] == [str(source)]  # auto-recovery off
    assert not (source / "config" / "token.txt").exists()
    monkeypatch.setenv("ENABLE_AUTO_RECOVERY", "true")
    code, report, _ = run_json(capsys, "recover", "auto", str(source), "--json")
    assert code == 0 and report["repaired_paths"] == [str(source)]
    assert (source / "config" / "token.txt").read_text() == "secret-token"
    (source / "config" / "settings.json").write_text("bad")
    code, result, _ = run_json(capsys, "recover", "repair", str(source), "--from", "base", "--json")
    assert code == 0 and result["restored"] == ["config/settings.json"]
    code, status, _ = run_json(capsys, "recover", "status", "--json")
    assert status["repairs"]["success"] == 2 and status["history"][0]["action"] == "repair"


def test_progress_line():
    stream = io.StringIO()
    progress = Progress("backing up", stream=stream, interval=0)
    progress(3, 10, 5_000_000, 10_000_000)
    progress.done()
    line = stream.getvalue()
    assert line.startswith("\rbacking up: 3/10 files, 5.0 MB of 10.0 MB,") and "s left" in line
    assert line.endswith("\n")
    assert Progress.for_terminal("x", quiet=True) is None


def test_destructive_actions_need_yes_off_a_terminal_and_have_a_dry_run(env, capsys, monkeypatch):
    source = make_tree(env / "data")
    for name in ("old", "new"):
        assert main(["backup", "create", str(source), "--name", name]) == 0
    manifest = env / "backups" / "old.manifest.json"
    data = json.loads(manifest.read_text())
    data["created_at"] -= 10 * 86400
    manifest.write_text(json.dumps(data))
    main(["backup", "verify", "new"])
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal

    code, planned, _ = run_json(capsys, "backup", "cleanup", "--days", "1", "--dry-run", "--json")
    assert code == 0 and planned == {"dry_run": True, "deleted": ["old"], "count": 1}
    code, _, err = run_json(capsys, "backup", "cleanup", "--days", "1", "--json")
    assert code == 1 and "--yes" in err and "old" in err
    assert (env / "backups" / "old.manifest.json").exists()
    code, cleaned, _ = run_json(capsys, "backup", "cleanup", "--days", "1", "--yes", "--json")
    assert code == 0 and cleaned == {"dry_run": False, "deleted": ["old"], "count": 1}
    code, planned, _ = run_json(capsys, "backup", "cleanup", "--retention", "--dry-run", "--json")
    assert code == 0 and set(planned) == {"dry_run", "deleted", "count"}

    target = env / "out"
    target.mkdir()
    (target / "mine.txt").write_text("kept")
    code, restored, _ = run_json(capsys, "backup", "restore", "new", str(target), "--overwrite", "--json")
    assert code == 0 and restored["counts"] == {"create": 10, "keep": 1}  # no replace: no question
    (target / "data" / "config" / "token.txt").write_text("changed")
    code, _, err = run_json(capsys, "backup", "restore", "new", str(target), "--overwrite", "--delete",
                            "--json")
    assert code == 1 and "replace 1" in err and "remove 1" in err and "--yes" in err
    assert (target / "mine.txt").exists() and (target / "data/config/token.txt").read_text() == "changed"
    code, restored, _ = run_json(capsys, "backup", "restore", "new", str(target), "--overwrite",
                                 "--delete", "--yes", "--json")
    assert code == 0 and restored["counts"]["replace"] == 1 and restored["counts"]["remove"] == 1
    assert not (target / "mine.txt").exists()
    assert (target / "data" / "config" / "token.txt").read_text() == "secret-token"


def test_confirmation_on_a_terminal(env, capsys, monkeypatch):
    source = make_tree(env / "data")
    for name in ("b", "newer"):
        main(["backup", "create", str(source), "--name", name])
    manifest = env / "backups" / "b.manifest.json"
    data = json.loads(manifest.read_text())
    data["created_at"] -= 10 * 86400
    manifest.write_text(json.dumps(data))
    capsys.readouterr()

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, _, err = run_json(capsys, "backup", "cleanup", "--days", "1", "--json")
    assert code == 1 and "[y/N]" in err and "not confirmed" in err
    assert (env / "backups" / "b.manifest.json").exists()
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert main(["backup", "cleanup", "--days", "1"]) == 0
    assert not (env / "backups" / "b.manifest.json").exists()


@pytest.mark.parametrize("days", ["-1", "nan", "inf", "soon"])
def test_cleanup_refuses_days_that_are_not_a_finite_count(env, capsys, days):
    with pytest.raises(SystemExit) as exit_info:
        main(["backup", "cleanup", "--days", days, "--yes"])
    assert exit_info.value.code == 2
    assert f"argument --days: '{days}' must be" in capsys.readouterr().err  # the shared DAYS type


def test_verify_with_the_wrong_key_is_an_error_not_a_failed_backup(env, capsys, monkeypatch):
    source = make_tree(env / "data")
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", "0f" * 32)
    main(["backup", "create", str(source), "--name", "enc"])
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", "1e" * 32)
    capsys.readouterr()
    code = main(["backup", "verify", "enc"])
    captured = capsys.readouterr()
    assert code == 1 and "FAILED" not in captured.out
    assert "backup 'enc'" in captured.err and "wrong key" in captured.err
    assert not (env / "backups" / ".verify-state.json").exists()
    code, listed, _ = run_json(capsys, "backup", "list", "--json")
    assert listed[0]["verified"] is None
