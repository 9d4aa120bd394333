"""Every error of the ``opsstack`` command is one line on stderr naming the input (option or
setting, and its value), with a non-zero exit: never a traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import build_parser, main
from exporter.config import KEYS_BY_NAME


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No opsstack setting from the caller's environment; the working directory is ``tmp_path``."""
    for name in [*KEYS_BY_NAME, "OPSSTACK_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A directory path that cannot be created: under a read-only directory, or for root (whom
    permissions do not stop) under /sys."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        yield locked / "dir"
        locked.chmod(0o700)
        return
    path = Path("/sys/opsstack-test-unwritable")
    try:
        path.mkdir()
    except OSError:
        yield path
        return
    path.rmdir()
    pytest.skip("no place this root user cannot write to")


def one_line(stderr: str, *names: str) -> str:
    """The single line of ``stderr``, which names every one of ``names``."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``opsstack argv`` in this process: its exit code, stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's way out
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_process(*argv: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in KEYS_BY_NAME and k != "OPSSTACK_CONFIG"}
    return subprocess.run([sys.executable, "-m", "exporter", *argv], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv, option, value", [
    (["serve", "--port", "99999"], "--port", "99999"),
    (["serve", "--port", "http"], "--port", "http"),
    (["alerts", "list", "--limit", "-1"], "--limit", "-1"),
    (["alerts", "list", "--limit", "0"], "--limit", "0"),
    (["alerts", "test", "--timeout", "inf"], "--timeout", "inf"),
    (["demo", "--duration", "-5"], "--duration", "-5"),
    (["demo", "--duration", "nan"], "--duration", "nan"),
    (["demo", "--rate", "0"], "--rate", "0"),
    (["demo", "--rate", "1e999"], "--rate", "1e999"),
    (["logs", "cleanup", "--days", "-1"], "--days", "-1"),
    (["logs", "cleanup", "--days", "inf"], "--days", "inf"),
])
def test_an_option_out_of_range_is_one_line_and_exit_2(clean_env, capsys, argv, option, value):
    code, _, err = run(capsys, *argv)
    assert code == 2
    line = one_line(err, f"opsstack {' '.join(argv[:-2])}", option, repr(value))
    assert line.endswith("--help)")


def test_options_in_range_are_taken(clean_env, capsys):
    assert run(capsys, "alerts", "list", "--limit", "1") == (0, "no alerts in state\n", "")

    args = build_parser().parse_args(["demo", "--duration", "0", "--rate", "0.5"])
    assert (args.duration, args.rate) == (0.0, 0.5)
    assert build_parser().parse_args(["serve", "--port", "0"]).port == 0


@pytest.mark.parametrize("argv", [["recover", "status"], ["recover", "check", "."], ["alerts", "list"],
                                  ["alerts", "summary"]])
def test_a_state_dir_that_is_a_file_is_one_line(clean_env, capsys, monkeypatch, argv):
    (clean_env / "state-file").write_text("not a directory\n")
    monkeypatch.setenv("STATE_DIR", "state-file")
    code, _, err = run(capsys, *argv)
    assert code == 1
    one_line(err, f"opsstack {argv[0]}:", "STATE_DIR", "state-file")


@pytest.mark.parametrize("argv, key", [(["recover", "status"], "STATE_DIR"),
                                       (["recover", "baseline", "."], "STATE_DIR"),
                                       (["backup", "list"], "BACKUP_DIR"),
                                       (["backup", "create", "."], "BACKUP_DIR")])
def test_an_unwritable_directory_is_one_line(clean_env, capsys, monkeypatch, unwritable, argv, key):
    monkeypatch.setenv(key, str(unwritable))
    code, _, err = run(capsys, *argv)
    assert code == 1
    one_line(err, f"opsstack {argv[0]}:", key, str(unwritable))
    assert not unwritable.exists()


def test_demo_with_its_metrics_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_process("demo", "--duration", "30", cwd=tmp_path, env={"METRICS_PORT": str(port)})
    assert result.returncode == 2
    one_line(result.stderr, "opsstack demo:", f"METRICS_PORT={port}", "in use")
    assert "stopped cleanly" not in result.stdout


@pytest.mark.parametrize("addr", ["no-such-host.invalid", "192.0.2.1"])
def test_demo_with_a_metrics_addr_it_cannot_bind_is_one_line(tmp_path, addr):
    result = run_process("demo", "--duration", "30", cwd=tmp_path, env={"METRICS_ADDR": addr})
    assert result.returncode == 2
    one_line(result.stderr, "opsstack demo:", f"METRICS_ADDR={addr!r}", "cannot listen")


def test_demo_with_a_state_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "state-file").write_text("")
    result = run_process("demo", "--duration", "30", cwd=tmp_path, env={"STATE_DIR": "state-file"})
    assert result.returncode == 1
    one_line(result.stderr, "opsstack demo:", "STATE_DIR", "state-file")
