"""PromQL helpers shared by the dashboard and stack tests: the queries of the dashboards, the
metric names an expression uses, the names the project exports, and a real parse by promtool.
"""
from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards"
RULES_DIR = ROOT / "alert_rules"

# Series Prometheus makes itself; a query may use them although no exporter serves them.
BUILTIN_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds",
                            "scrape_samples_scraped"})

# Values for Grafana's variables when an expression leaves Grafana: short enough for the few
# seconds of scrapes a test has, valid PromQL in every position they appear in.
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$__range": "1m",
    "$job": ".*",
    "$instance": ".*",
    "$operation": ".*",
}

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                       "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[a-zA-Z_:][\w:]*")


def dashboards() -> dict[str, dict]:
    """Every dashboard of ``dashboards/``, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def prometheus_targets(dashboard: dict) -> Iterator[tuple[dict, dict]]:
    """(panel, target) for every target on a Prometheus data source."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus":
                yield panel, target


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every Prometheus query of every dashboard."""
    return [(name, panel["title"], target["expr"])
            for name, dashboard in dashboards().items()
            for panel, target in prometheus_targets(dashboard)]


def variable_queries() -> list[tuple[str, str]]:
    """(dashboard file, query) of every ``label_values(...)`` template variable."""
    found = []
    for name, dashboard in dashboards().items():
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                found.append((name, query["query"] if isinstance(query, dict) else query))
    return found


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables replaced, ready for Prometheus."""
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names an expression selects.

    Strings, label matchers, ranges and grouping clauses are removed first; what is left that
    looks like an identifier and is neither a keyword nor a function call is a metric name.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        following = text[match.end():].lstrip()[:1]
        if following == "(" or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def rule_files() -> list[Path]:
    return sorted(path for pattern in ("*.yml", "*.yaml") for path in RULES_DIR.glob(pattern))


def rules() -> Iterator[tuple[Path, dict]]:
    """(file, rule) of every rule in ``alert_rules/*.yml``."""
    for path in rule_files():
        document = yaml.safe_load(path.read_text()) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                yield path, rule


def recording_rule_names() -> set[str]:
    return {rule["record"] for _, rule in rules() if "record" in rule}


def exported_names() -> set[str]:
    """Every series name ``exporter.metrics.Metrics`` can serve, with the suffix forms of
    counters (``_total``, ``_created``), histograms (``_bucket``, ``_count``, ``_sum``,
    ``_created``) and info metrics (``_info``), including labelled families with no child yet."""
    from exporter.metrics import Metrics

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "info": ("_info",), "summary": ("_count", "_sum", "_created"), "gauge": ("",)}
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def promtool_check(promtool: str, expressions: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """Runs ``promtool check rules`` on a rules file with each expression as a recording rule,
    so Prometheus's own parser judges them."""
    group = {"name": "expressions-under-test",
             "rules": [{"record": f"expression_under_test_{index}", "expr": expr}
                       for index, expr in enumerate(expressions)]}
    path = workdir / "expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False, width=1000))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60)
