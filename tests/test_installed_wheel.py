"""What users run: the package built as a wheel and installed outside the checkout (its own
directory first on the path, run from elsewhere), not the editable checkout the other tests use."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(work / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = (work / "dist").glob("opsstack-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(work / "site"), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPSSTACK", "BACKUP", "STATE"))},
           "PYTHONPATH": str(work / "site"), "BACKUP_DIR": str(work / "backups"), "STATE_DIR": str(work / "state")}
    return {"wheel": wheel, "site": work / "site", "env": env, "cwd": work}


def run(installed: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=120)


def test_the_wheel_holds_the_package_and_its_data_files(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "exporter/sinks/logs-bot-template.json" in names
    assert not [name for name in names if name.startswith(("tests/", "deploy/", "bench/"))]
    template = json.loads(zipfile.ZipFile(installed["wheel"]).read("exporter/sinks/logs-bot-template.json"))
    assert template["index_patterns"] == ["logs-bot-*"]


def test_the_installed_package_is_the_one_imported_and_finds_its_template(installed):
    probe = ("import exporter, json; from exporter.sinks._es_client import load_template; "
             "print(json.dumps({'file': exporter.__file__, 'patterns': load_template()['index_patterns']}))")
    result = run(installed, "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["file"]).is_relative_to(installed["site"]) and found["patterns"] == ["logs-bot-*"]


def test_the_installed_cli_backs_up_drills_and_restores(installed, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "settings.json").write_text('{"a": 1}')
    assert run(installed, "-m", "exporter", "backup", "create", str(data), "--name", "w").returncode == 0
    drill = run(installed, "-m", "exporter", "backup", "drill", "w", "--json")
    assert drill.returncode == 0 and json.loads(drill.stdout)["ok"], drill.stderr
    restore = run(installed, "-m", "exporter", "backup", "restore", "w", str(tmp_path / "out"))
    assert restore.returncode == 0, restore.stderr
    assert (tmp_path / "out" / "data" / "settings.json").read_text() == '{"a": 1}'
    check = run(installed, "-m", "exporter", "check-config")
    assert check.returncode == 0 and "BACKUP_DIR" in check.stdout
