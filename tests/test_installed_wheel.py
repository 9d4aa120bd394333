"""What users run: the package built as a wheel and an sdist (``python -m build``, the sdist first
and the wheel from it), checked with ``twine``, and installed with pip into fresh virtual
environments outside the checkout, not the editable checkout the other tests use.

Two environments, made once per session: ``bare`` (``pip install <wheel>``: no optional client,
so everything off must work and an enabled feature names its missing extra) and ``all``
(``pip install '<wheel>[all]'``), where the demo ships to the real Elasticsearch node and sends
its spans to the real Collector.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.probes import wait_until

ROOT = Path(__file__).resolve().parents[1]
ASSET_LINKS = ROOT / "exporter" / "assets" / "files"
# Building (an isolated build environment) and installing fetch packages from the package index:
# not part of the offline run (``-m "not services"``).
pytestmark = [pytest.mark.slow, pytest.mark.services]


# --------------------------------------------------------------------------- building and installing


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [wheel] = out.glob("opsstack-*.whl")
    [sdist] = out.glob("opsstack-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


class Venv:
    """A virtual environment outside the checkout with the wheel installed, and a folder to run in."""

    def __init__(self, path: Path, work: Path) -> None:
        self.path, self.work = path, work

    def env(self, **settings: str) -> dict[str, str]:
        # Nothing of the developer's shell: no settings, no PYTHONPATH, no checkout on the path.
        base = {key: os.environ[key] for key in ("HOME", "LANG", "TMPDIR") if key in os.environ}
        return {**base, "PATH": f"{self.path / 'bin'}:/usr/bin:/bin", **settings}

    def run(self, *args: str, timeout: float = 120, **settings: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.path / "bin" / args[0]), *args[1:]], cwd=self.work,
                              env=self.env(**settings), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def venvs(dist, tmp_path_factory):
    """``venvs(extra)``: the environment with ``wheel[extra]`` installed ("" for the bare wheel),
    made on first use and kept for the session."""
    made: dict[str, Venv] = {}

    def get(extra: str) -> Venv:
        if extra not in made:
            root = tmp_path_factory.mktemp(f"venv-{extra or 'bare'}")
            subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
            requirement = f"{dist['wheel']}[{extra}]" if extra else str(dist["wheel"])
            result = subprocess.run([str(root / "venv/bin/python"), "-m", "pip", "install", "--quiet",
                                     "--disable-pip-version-check", requirement],
                                    capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, result.stderr[-3000:]
            (root / "work").mkdir()
            made[extra] = Venv(root / "venv", root / "work")
        return made[extra]

    return get


@pytest.fixture(params=["", "all"], ids=["bare", "all"])
def venv(request, venvs) -> Venv:
    return venvs(request.param)


# --------------------------------------------------------------------------- what the distributions hold


def asset_sources() -> dict[str, bytes]:
    """The files the package's asset links point to, by their path under ``exporter/assets/files``."""
    found = {}
    for link in [*ASSET_LINKS.iterdir(), *(ASSET_LINKS / "deploy").iterdir()]:
        if not link.is_symlink():
            continue
        source = link.resolve()
        assert source.is_relative_to(ROOT) and source.parts[len(ROOT.parts)] in ("alert_rules", "dashboards", "deploy")
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                found[f"{link.relative_to(ASSET_LINKS).as_posix()}/{path.relative_to(source).as_posix()}"] = path.read_bytes()
    return found


def test_wheel_and_sdist_pass_twine_check(dist):
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_the_wheel_holds_every_asset_equal_to_its_source(dist):
    sources = asset_sources()
    assert {"alert_rules/bot.yml", "alert_rules/tests/bot_test.yml", "dashboards/overview.json",
            "dashboards/provisioning/datasources/opsstack.yml", "deploy/elasticsearch/logs-bot-ilm-policy.json",
            "deploy/kibana/saved-objects.ndjson", "deploy/alertmanager/alertmanager.yml",
            "deploy/otel-collector/config.yaml", "deploy/elasticsearch/logs-bot-template.json"} <= set(sources)
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        prefix = "exporter/assets/files/"
        held = {name[len(prefix):]: wheel.read(name) for name in wheel.namelist() if name.startswith(prefix)}
        assert held == sources
        assert not [name for name in wheel.namelist() if name.startswith(("tests/", "deploy/", "bench/"))]
        metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [line for line in requires if "extra ==" not in line]
    assert not [line for line in base if any(c in line for c in ("elasticsearch", "opentelemetry", "celery", "redis"))]
    for extra in ("elk", "otel", "celery", "redis", "all"):
        assert f"Provides-Extra: {extra}" in metadata


def test_the_sdist_holds_the_assets_as_files(dist):
    sources = asset_sources()
    with tarfile.open(dist["sdist"]) as sdist:
        prefix = f"{dist['sdist'].name.removesuffix('.tar.gz')}/exporter/assets/files/"
        members = [m for m in sdist.getmembers() if m.name.startswith(prefix) and not m.isdir()]
        assert all(member.isfile() for member in members), "links in the sdist would dangle once unpacked"
        held = {m.name[len(prefix):]: sdist.extractfile(m).read() for m in members}
    assert held == sources


# --------------------------------------------------------------------------- the installed package


def test_the_installed_package_is_the_one_imported_and_finds_its_template(venv):
    probe = ("import exporter, json; from exporter import assets; "
             "print(json.dumps({'file': exporter.__file__, 'policy': list(json.loads("
             "assets.read_bytes('deploy/elasticsearch/logs-bot-ilm-policy.json')))}))")
    result = venv.run("python", "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["file"]).is_relative_to(venv.path) and found["policy"] == ["policy"]


def test_the_installed_cli_backs_up_drills_and_restores(venv, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "settings.json").write_text('{"a": 1}')
    assert venv.run("opsstack", "backup", "create", str(data), "--name", "w").returncode == 0
    drill = venv.run("opsstack", "backup", "drill", "w", "--json")
    assert drill.returncode == 0 and json.loads(drill.stdout)["ok"], drill.stderr
    restore = venv.run("opsstack", "backup", "restore", "w", str(tmp_path / "out"))
    assert restore.returncode == 0, restore.stderr
    assert (tmp_path / "out" / "data" / "settings.json").read_text() == '{"a": 1}'
    check = venv.run("opsstack", "check-config", "--json")
    assert check.returncode == 0, check.stderr
    assert {row["key"]: row["source"] for row in json.loads(check.stdout)}["BACKUP_DIR"] == "default"


def test_assets_export_writes_the_sources_and_refuses_to_overwrite(venvs, tmp_path):
    bare = venvs("")
    target = tmp_path / "stack"
    result = bare.run("opsstack", "assets", "export", str(target))
    assert result.returncode == 0, result.stderr
    written = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert written == asset_sources()
    assert {oct(p.stat().st_mode & 0o777) for p in target.rglob("*") if p.is_file()} == {"0o600"}

    (target / "alert_rules/bot.yml").write_text("edited\n")
    again = bare.run("opsstack", "assets", "export", str(target))
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.count("\n") == 1 and "--force" in again.stderr and "alert_rules/bot.yml" in again.stderr
    assert (target / "alert_rules/bot.yml").read_text() == "edited\n"
    forced = bare.run("opsstack", "assets", "export", str(target), "--force")
    assert forced.returncode == 0 and (target / "alert_rules/bot.yml").read_bytes() == written["alert_rules/bot.yml"]

    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("x")
    refused = bare.run("opsstack", "assets", "export", str(in_the_way))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "not a directory" in refused.stderr


# --------------------------------------------------------------------------- the bare install


def test_the_bare_install_runs_the_demo_with_everything_local(venvs):
    bare = venvs("")
    probe = "import json; from exporter._extras import EXTRAS, installed; print(json.dumps([e for e in EXTRAS if installed(e)]))"
    found = bare.run("python", "-c", probe)
    assert found.returncode == 0 and json.loads(found.stdout) == [], found.stdout + found.stderr
    check = bare.run("opsstack", "check-config")
    assert check.returncode == 0 and "ENABLE_TRACING" in check.stdout, check.stderr
    demo = bare.run("opsstack", "demo", "--duration", "3", "--rate", "20", METRICS_PORT="0", timeout=120)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "stopped cleanly" in demo.stdout and "Traceback" not in demo.stderr
    assert (bare.work / "logs" / "bot.json").stat().st_size > 0


@pytest.mark.parametrize("setting, extra", [
    ({"ELASTICSEARCH_URL": "http://user:hunter2@127.0.0.1:9200"}, "elk"),
    ({"ENABLE_TRACING": "true"}, "otel"),
    ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "redis"),
    ({"BACKUP_SCHEDULER": "celery"}, "celery"),
])
@pytest.mark.parametrize("command", [("check-config",), ("demo", "--duration", "1")], ids=["check-config", "demo"])
def test_the_bare_install_names_the_missing_extra(venvs, setting, extra, command):
    result = venvs("").run("opsstack", *command, **setting)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"pip install 'opsstack[{extra}]'" in result.stderr and next(iter(setting)) in result.stderr
    assert "hunter2" not in result.stderr


# --------------------------------------------------------------------------- [all]: the demo ships


def _search(url: str, index: str, query: dict) -> list[dict]:
    body = json.dumps({"query": query, "size": 1000}).encode()
    request = urllib.request.Request(f"{url}/{index}/_search?ignore_unavailable=true", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return [hit["_source"] for hit in json.loads(response.read())["hits"]["hits"]]


def test_the_installed_demo_ships_logs_to_elasticsearch_and_spans_to_the_collector(venvs, elasticsearch,
                                                                                   otel_collector):
    full = venvs("all")
    tag = uuid.uuid4().hex[:10]
    service, namespace = f"wheel-demo-{tag}", f"wheel{tag}"
    demo = full.run("opsstack", "demo", "--duration", "20", "--rate", "10", timeout=180,
                    METRICS_PORT="0", ELASTICSEARCH_URL=elasticsearch.url, ELASTICSEARCH_NAMESPACE=namespace,
                    OTEL_SERVICE_NAME=service, OTEL_EXPORTER_OTLP_ENDPOINT=otel_collector.http_endpoint)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert f"logs-bot-{namespace}" in demo.stdout and otel_collector.http_endpoint in demo.stdout

    def shipped():
        docs = _search(elasticsearch.url, f"logs-bot-{namespace}", {"term": {"service.name": service}})
        return docs if len(docs) >= 20 else None

    docs = wait_until(shipped, timeout=30, what=f"the demo's lines in logs-bot-{namespace}", interval=0.5)
    assert {doc.get("service", {}).get("name", doc.get("service.name")) for doc in docs} == {service}
    trace_ids = {doc.get("trace", {}).get("id", doc.get("trace.id")) for doc in docs} - {None}
    assert trace_ids, "no shipped line carries a trace.id"

    def exported():
        return trace_ids & {span.get("traceId") for span in otel_collector.spans()}

    # The spans of the operations those lines were written in, received by the Collector.
    assert wait_until(exported, timeout=30, what="the spans of the shipped lines' traces", interval=0.5)


# --------------------------------------------------------------------------- the compose bot's image


def test_the_docker_build_context_makes_a_wheel_with_the_assets(tmp_path):
    """deploy/Dockerfile's COPY lines, from a context cut by its .dockerignore, copied as Docker
    does (links kept as links): the package built there holds the assets, not dangling links."""
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    ignore = (ROOT / "deploy/Dockerfile.dockerignore").read_text().splitlines()
    context = tmp_path / "src"
    copies = re.findall(r"^COPY (\S+(?: \S+)*) (\S+)$", dockerfile, re.MULTILINE)
    assert copies
    for sources, destination in copies:
        for source in sources.split():
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is left out of the context"
            target = context / destination / source if destination.endswith("/") else context / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(ROOT / source, target)
    assert re.search(r"""^RUN pip install '\.\[elk,otel\]'""", dockerfile, re.MULTILINE)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                             "-w", str(tmp_path / "dist"), str(context)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("opsstack-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        prefix = "exporter/assets/files/"
        assert {n[len(prefix):]: archive.read(n) for n in archive.namelist() if n.startswith(prefix)} == asset_sources()
        assert "exporter/assets/files/deploy/elasticsearch/logs-bot-template.json" in archive.namelist()
