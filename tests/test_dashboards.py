"""Static checks of the Grafana dashboards, and of the metric names dashboards and alert rules use.

What a person relies on: every dashboard loads from file provisioning, keeps its uid (links and
bookmarks), follows the data source picked in ``$datasource``, shows units and a description on
every panel, and queries only metrics the project exports, in PromQL Prometheus accepts.
"""
from __future__ import annotations

import re

import pytest
import yaml

from tests import promql
from tests.probes import wait_until

DASHBOARDS = promql.dashboards()

# File -> (uid, title). A uid is part of every link to a dashboard: it must never change.
EXPECTED = {
    "overview.json": ("bot-overview", "Bot / Overview"),
    "performance.json": ("bot-performance", "Bot / Performance"),
    "backups.json": ("bot-backups", "Bot / Backups and integrity"),
    "logs-pipeline.json": ("bot-logs-pipeline", "Bot / Logs pipeline"),
}

# What each dashboard is for: the series it must show (see the issue).
REQUIRED_SERIES = {
    "overview.json": {"up", "bot_log_records_total", "bot_downloads_total", "bot_uploads_total",
                      "bot_alerts_active", "ALERTS"},
    "performance.json": {"bot_operation_duration_seconds_bucket", "bot_slow_operations_total",
                         "bot_operation_duration_seconds_count"},
    "backups.json": {"bot_backup_last_success_timestamp_seconds", "bot_backup_last_size_bytes",
                     "bot_backup_duration_seconds_bucket", "bot_backup_last_verify_ok",
                     "bot_integrity_checks_total", "bot_integrity_repairs_total"},
    "logs-pipeline.json": {"bot_log_records_total", "bot_log_shipping_shipped_total", "bot_log_spool_bytes",
                           "bot_log_shipping_dropped_total", "bot_log_shipping_dead_lettered_total"},
}

# Grafana 10.0 writes schemaVersion 38; Grafana 11 writes 39 to 41.
SCHEMA_VERSIONS = range(38, 42)

# The unit ids the dashboards may use: Grafana's, spelled as Grafana spells them (a typo would
# silently show a raw number).
GRAFANA_UNITS = {"none", "short", "percent", "percentunit", "s", "ms", "bytes", "decbytes", "Bps",
                 "ops", "reqps", "cps", "dateTimeFromNow", "bool"}

PROMETHEUS_SOURCE = {"type": "prometheus", "uid": "${datasource}"}
ELASTICSEARCH_SOURCE = {"type": "elasticsearch", "uid": "${logs_datasource}"}


def all_panels():
    return [(name, panel) for name, dashboard in DASHBOARDS.items() for panel in promql.panels(dashboard)]


def label_values_metric(query: str) -> str:
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
    assert match, f"not a label_values(metric, label) query: {query}"
    return match.group(1)


def test_the_four_dashboards_exist_with_stable_uids_and_titles():
    assert {name: (d["uid"], d["title"]) for name, d in DASHBOARDS.items()} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_metadata(name):
    dashboard = DASHBOARDS[name]
    assert "bot-observability" in dashboard["tags"]
    assert dashboard["schemaVersion"] in SCHEMA_VERSIONS
    assert dashboard["description"].strip()
    # Provisioned dashboards must not carry a database id: Grafana assigns it.
    assert "id" not in dashboard or dashboard["id"] is None
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_datasource_variable_drives_every_prometheus_panel(name):
    dashboard = DASHBOARDS[name]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in promql.panels(dashboard):
        source = panel["datasource"]
        if source["type"] == "prometheus":
            assert source == PROMETHEUS_SOURCE, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == PROMETHEUS_SOURCE, panel["title"]
        else:
            assert source == ELASTICSEARCH_SOURCE, panel["title"]
            assert variables["logs_datasource"]["query"] == "elasticsearch"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == PROMETHEUS_SOURCE, variable["name"]


@pytest.mark.parametrize(("name", "panel"), all_panels(),
                         ids=[f"{name}:{panel['title']}" for name, panel in all_panels()])
def test_every_panel_has_a_unit_a_description_and_targets(name, panel):
    assert panel["description"].strip(), "description missing"
    assert panel["fieldConfig"]["defaults"]["unit"] in GRAFANA_UNITS
    assert panel["targets"], "a panel without a query is dead"
    grid = panel["gridPos"]
    assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panel_ids_and_titles_are_unique(name):
    dashboard = DASHBOARDS[name]
    every = [p for p in dashboard["panels"]] + [p for row in dashboard["panels"] for p in row.get("panels", [])]
    ids = [p["id"] for p in every]
    titles = [p["title"] for p in promql.panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_dashboard_shows_what_it_is_for(name):
    used = set()
    for _, _, expr in (e for e in promql.dashboard_expressions() if e[0] == name):
        used |= promql.metric_names(expr)
    # A recording rule counts as the series it is built from.
    for path, rule in promql.rules():
        if "record" in rule and rule["record"] in used:
            used |= promql.metric_names(rule["expr"])
    assert REQUIRED_SERIES[name] <= used, REQUIRED_SERIES[name] - used


def test_every_prometheus_query_filters_on_the_instance_variables():
    for name, title, expr in promql.dashboard_expressions():
        if "ALERTS" in promql.metric_names(expr):
            continue  # ALERTS carries the labels of the rule, not of the scrape target.
        assert '$job' in expr and '$instance' in expr, f"{name}: {title}: {expr}"


def test_latency_panels_use_histogram_quantile_with_exemplars():
    dashboard = DASHBOARDS["performance.json"]
    quantiles = [target for _, target in promql.prometheus_targets(dashboard)
                 if target["expr"].startswith("histogram_quantile(")
                 and "bot_operation_duration_seconds_bucket" in target["expr"]]
    assert {re.match(r"histogram_quantile\(([\d.]+)", t["expr"]).group(1) for t in quantiles} >= {"0.5", "0.95", "0.99"}
    assert all(t.get("exemplar") is True for t in quantiles)
    assert all("by (operation, le)" in t["expr"] for t in quantiles)


def test_logs_panel_reads_the_bot_data_streams_on_elasticsearch():
    logs_panels = [panel for _, panel in all_panels() if panel["type"] == "logs"]
    assert logs_panels
    for panel in logs_panels:
        assert panel["datasource"] == ELASTICSEARCH_SOURCE
        for target in panel["targets"]:
            assert target["timeField"] == "@timestamp"
            assert [m["type"] for m in target["metrics"]] == ["logs"]


def test_provisioning_points_at_the_dashboards_and_the_services():
    provider = yaml.safe_load((promql.DASHBOARD_DIR / "provisioning/dashboards/opsstack.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((promql.DASHBOARD_DIR / "provisioning/datasources/opsstack.yml").read_text())
    by_type = {s["type"]: s for s in sources["datasources"]}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    assert by_type["prometheus"]["isDefault"] is True
    elasticsearch = by_type["elasticsearch"]
    assert elasticsearch["url"] == "http://elasticsearch:9200"
    assert elasticsearch["jsonData"]["index"] == "logs-bot-*"
    assert elasticsearch["jsonData"]["timeField"] == "@timestamp"
    # Grafana would expand a single "$" as an environment variable and lose the trace id.
    for destination in by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]:
        assert "$${__value.raw}" in destination["url"]
        assert re.search(r"(?<!\$)\$\{", destination["url"]) is None


# --------------------------------------------------------------------------- metric names


def test_metric_name_extraction():
    expr = ('sum by (le, operation) (rate(foo_bucket{a="b:c", d=~"x|y"}[5m:1m])) / on(job) group_left(x) '
            'bar:ratio offset 5m > bool 1e-3 and vector(0) or label_replace(baz, "dst", "$1", "src", "(.*)")')
    assert promql.metric_names(expr) == {"foo_bucket", "bar:ratio", "baz"}


def test_exported_names_include_suffix_forms_and_empty_families():
    names = promql.exported_names()
    assert {"bot_downloads_total", "bot_downloads_created", "bot_operation_duration_seconds_bucket",
            "bot_operation_duration_seconds_count", "bot_operation_duration_seconds_sum",
            "bot_build_info", "bot_disk_free_ratio"} <= names
    assert "bot_downloads" not in names or "bot_downloads_total" in names


def test_every_dashboard_metric_is_exported():
    known = promql.exported_names() | promql.BUILTIN_SERIES | promql.recording_rule_names()
    unknown = {}
    for name, title, expr in promql.dashboard_expressions():
        missing = promql.metric_names(expr) - known
        if missing:
            unknown[f"{name}: {title}"] = sorted(missing)
    for name, query in promql.variable_queries():
        missing = promql.metric_names(label_values_metric(query)) - known
        if missing:
            unknown[f"{name}: variable {query}"] = sorted(missing)
    assert not unknown


def test_every_alert_rule_metric_is_exported():
    rules = list(promql.rules())
    if not rules:
        pytest.fail("alert_rules/*.yml holds no rule")
    known = promql.exported_names() | promql.BUILTIN_SERIES | promql.recording_rule_names()
    unknown = {}
    for path, rule in rules:
        missing = promql.metric_names(str(rule["expr"])) - known
        if missing:
            unknown[f"{path.name}: {rule.get('alert') or rule.get('record')}"] = sorted(missing)
    assert not unknown


# --------------------------------------------------------------------------- PromQL


def test_every_dashboard_query_parses(promtool, tmp_path):
    expressions = [promql.substitute(expr) for _, _, expr in promql.dashboard_expressions()]
    assert len(expressions) > 40
    result = promql.promtool_check(promtool, expressions, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(expressions)} rules found" in result.stdout


def test_promtool_check_rejects_a_broken_expression(promtool, tmp_path):
    # The check above must be able to fail.
    result = promql.promtool_check(promtool, ["sum(rate(bot_downloads_total[5m])", "up"], tmp_path)
    assert result.returncode != 0


# --------------------------------------------------------------------------- against Prometheus

# Panels that are empty when all is well: no alert fires in a healthy scrape.
QUIET_WHEN_HEALTHY = {"Firing Prometheus alerts by rule"}


def _exercise(metrics) -> None:
    """One round of activity touching every series the dashboards show."""
    import time as _time

    now = _time.time()
    for operation in ("download", "upload", "api_call"):
        metrics.operation_duration.labels(operation).observe(0.2)
        metrics.operation_errors.labels(operation).inc()
        metrics.slow_operations.labels(operation).inc()
    for outcome in ("success", "failure"):
        for counter in (metrics.downloads, metrics.uploads, metrics.api_calls, metrics.backups,
                        metrics.backup_verifications, metrics.backup_restores, metrics.backup_drills,
                        metrics.integrity_checks,
                        metrics.integrity_repairs):
            counter.labels(outcome).inc()
        metrics.alert_notifications.labels("log", outcome).inc()
    for direction in ("download", "upload"):
        metrics.transferred_bytes.labels(direction).inc(1000)
    for level in ("info", "error"):
        metrics.log_records.inc(level, 3)
        metrics.ship_dropped.labels(level).inc()
    for counter in (metrics.ship_queued, metrics.ship_shipped, metrics.ship_retried, metrics.ship_spooled,
                    metrics.ship_dead_lettered, metrics.log_redactions):
        counter.inc()
    metrics.log_handler_errors.labels("file").inc()
    metrics.alerts_active.labels("high").set(1)
    metrics.backup_duration.observe(2.0)
    for gauge, value in ((metrics.backup_last_success, now - 60), (metrics.backup_last_attempt, now - 60),
                         (metrics.backup_size, 4096), (metrics.backup_files, 12), (metrics.backup_last_verify_ok, 1),
                         (metrics.backup_last_drill, now - 90), (metrics.backup_last_drill_success, 1),
                         (metrics.integrity_last_check, now - 5), (metrics.integrity_last_ok, 1),
                         (metrics.ship_queue_size, 3), (metrics.spool_bytes, 2048), (metrics.spool_oldest, now - 30),
                         (metrics.memory_used_ratio, 0.4), (metrics.process_memory, 5e7),
                         (metrics.scrape_duration, 0.002)):
        gauge.set(value)
    metrics.disk_free_ratio.labels("/data").set(0.5)
    metrics.backups_retained.labels("hourly").set(3)
    metrics.feature_enabled.labels("backups").set(1)


@pytest.fixture
def scraped_prometheus(start_prometheus):
    """A real Prometheus that has scraped an active ``Metrics`` registry for a few seconds, with
    the recording and alerting rules of ``alert_rules/`` loaded."""
    import threading

    from prometheus_client import start_http_server

    from exporter.metrics import Metrics

    metrics = Metrics()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    port = server.server_address[1]
    stop = threading.Event()

    def activity():
        while not stop.wait(0.2):
            _exercise(metrics)

    worker = threading.Thread(target=activity, daemon=True)
    worker.start()
    try:
        prometheus = start_prometheus(
            {"global": {"scrape_interval": "1s"},
             "scrape_configs": [{"job_name": "bot", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]},
            rule_files=promql.rule_files())
        wait_until(lambda: prometheus.query('count_over_time(up{job="bot"}[1m]) >= 6'), timeout=30,
                   what="Prometheus to scrape the registry six times", interval=0.5)
        yield prometheus
    finally:
        stop.set()
        worker.join(timeout=5)
        server.shutdown()
        server.server_close()


def _panel_report(prometheus, quiet: set[str]) -> tuple[dict[str, str], list[str]]:
    """(queries that failed, panels none of whose queries returned data), ``quiet`` panels aside."""
    errors, results = {}, {}
    for name, title, expr in promql.dashboard_expressions():
        try:
            result = prometheus.query(promql.substitute(expr))
        except Exception as exc:  # the query error text is the useful part of the report
            errors[f"{name}: {title}: {expr}"] = str(exc)
            continue
        results.setdefault((name, title), []).append(bool(result))
    dead = [f"{name}: {title}" for (name, title), found in results.items()
            if not any(found) and title not in quiet]
    return errors, dead


def _check_panels(prometheus, quiet: set[str], patience: float = 0.0) -> None:
    """Every query must run; every panel but the ``quiet`` ones must show data, within
    ``patience`` seconds (a bot needs a while to make its first backup)."""
    import time

    deadline = time.monotonic() + patience
    while True:
        errors, dead = _panel_report(prometheus, quiet)
        if errors or not dead or time.monotonic() >= deadline:
            break
        time.sleep(2)
    assert not errors
    assert not dead, "dead panels:\n" + "\n".join(dead)


@pytest.mark.slow
@pytest.mark.services
def test_every_panel_query_runs_and_returns_data(scraped_prometheus):
    _check_panels(scraped_prometheus, QUIET_WHEN_HEALTHY)


@pytest.fixture
def demo_prometheus(start_prometheus, tmp_path):
    """A real Prometheus scraping ``opsstack demo`` (no external service configured), with the
    rules of ``alert_rules/`` loaded."""
    import os
    import sys
    import urllib.request

    from tests.harness.base import ServiceProcess, ServiceUnavailable, free_port

    port = free_port()
    environ = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    environ.update(METRICS_ADDR="127.0.0.1", METRICS_PORT=str(port))
    demo = ServiceProcess("opsstack demo",
                          [sys.executable, "-m", "exporter", "demo", "--duration", "120", "--rate", "8",
                           "--seed", "7"],
                          tmp_path / "demo.log", cwd=tmp_path, env=environ).start()
    try:
        demo.wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).status == 200,
                        timeout=30, what="serving /metrics")
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield start_prometheus(
            {"global": {"scrape_interval": "1s"},
             "scrape_configs": [{"job_name": "bot", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]},
            rule_files=promql.rule_files())
    finally:
        demo.stop()


# Empty while the demo is healthy and ships nowhere: no alert fires in its first minute, and with
# no Elasticsearch configured nothing is spooled.
QUIET_IN_DEMO = QUIET_WHEN_HEALTHY | {"Age of oldest spooled record"}


@pytest.mark.slow
@pytest.mark.services
def test_every_panel_shows_data_from_the_demo(demo_prometheus):
    _check_panels(demo_prometheus, QUIET_IN_DEMO, patience=60)


@pytest.mark.slow
@pytest.mark.services
def test_template_variables_find_the_bot(scraped_prometheus):
    for name, query in promql.variable_queries():
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
        series = promql.substitute(match.group(1))
        values = {sample["metric"].get(match.group(2)) for sample in scraped_prometheus.query(series)}
        assert values - {None}, f"{name}: {query} finds nothing"
