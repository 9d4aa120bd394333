"""The Prometheus rules, their promtool tests, and the Alertmanager routing (amtool)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "alert_rules").glob("*.yml"))
RULE_TESTS = sorted((ROOT / "alert_rules" / "tests").glob("*.yml"))
AM_DIR = ROOT / "deploy" / "alertmanager"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"critical", "warning", "info"}


def run(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def alerting_rules() -> list[dict]:
    rules = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def recording_rules() -> list[dict]:
    rules = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "record" in rule)
    return rules


# --------------------------------------------------------------------------- promtool


def test_rules_pass_promtool_check(promtool):
    assert RULES
    result = run(promtool, "check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool):
    assert RULE_TESTS
    result = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_of_the_stack_is_valid(promtool):
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    result = run(promtool, "check", "config", "--syntax-only", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    parsed = yaml.safe_load(config.read_text())
    bot = next(job for job in parsed["scrape_configs"] if job["job_name"] == "bot")
    assert bot["static_configs"][0]["targets"] == ["bot:9464"]
    assert parsed["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert parsed["rule_files"] == ["/etc/prometheus/rules/*.yml"]


# --------------------------------------------------------------------------- conventions


def test_every_alert_follows_the_conventions():
    names = set()
    for rule in alerting_rules():
        name = rule["alert"]
        names.add(name)
        assert re.fullmatch(r"Bot([A-Z][a-z0-9]+)+", name), name
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in rule["annotations"]["summary"], f"{name}: summary must be fixed"
        assert "{{" in rule["annotations"]["description"] or name in ("BotExporterAbsent", "BotWatchdog",
                                                                         "BotBackupVerifyFailed",
                                                                         "BotIntegrityCheckFailed"), name
    required = {"BotExporterDown", "BotExporterAbsent", "BotBackupTooOld", "BotBackupFailing",
                "BotBackupVerifyFailed", "BotIntegrityCheckFailed", "BotOperationsSlow", "BotErrorLogRateHigh",
                "BotDownloadFailureRatioHigh", "BotLogShippingBacklog", "BotLogShippingDropping",
                "BotDiskAlmostFull", "BotMemoryHigh", "BotWatchdog"}
    assert required <= names


def runbook_base() -> str:
    """RUNBOOK_BASE of the Makefile: the one place the runbook links are configured."""
    match = re.search(r"^RUNBOOK_BASE \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile sets no RUNBOOK_BASE"
    return match.group(1)


def test_runbook_has_a_section_for_every_alert():
    text = RUNBOOK.read_text()
    anchors = {re.sub(r"[^a-z0-9]", "", line.lstrip("#").strip().lower())
               for line in text.splitlines() if line.startswith("## ")}
    base = runbook_base()
    assert base.startswith("https://") and base.endswith("/docs/runbook.md"), base
    for rule in alerting_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"{base}#{rule['alert'].lower()}", url  # absolute: it is opened from a message
        assert url.split("#", 1)[1] in anchors, f"no runbook section for {url}"


def test_runbook_says_what_clears_every_rule_and_every_alert_type_of_the_bot():
    from exporter.alert_manager import AlertType

    text = RUNBOOK.read_text()
    sections = {part.split("\n", 1)[0].strip(): part for part in re.split(r"(?m)^## ", text)[1:]}
    for name in {rule["alert"] for rule in alerting_rules()}:
        assert "**Clears:**" in sections[name], f"the runbook does not say what clears {name}"
    table = sections["Alerts the bot raises itself"]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for kind in AlertType:
        assert any(f"`{kind.value}`" in row.split("|")[1] for row in rows), f"{kind.value}: nothing says what clears it"


def test_make_runbook_base_rewrites_rules_and_their_tests(promtool, tmp_path):
    import shutil

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "alert_rules", tmp_path / "alert_rules")
    other = "https://runbooks.example.org/bot/docs/runbook.md"
    result = run("make", "-s", "-C", str(tmp_path), "runbook-base", f"RUNBOOK_BASE={other}")
    assert result.returncode == 0, result.stdout + result.stderr
    copied = [tmp_path / "alert_rules" / path.name for path in RULES]
    urls = [rule["annotations"]["runbook_url"] for path in copied
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule]
    assert urls == [f"{other}#{rule['alert'].lower()}" for rule in alerting_rules()]
    tests = sorted((tmp_path / "alert_rules" / "tests").glob("*.yml"))
    assert runbook_base() not in "".join(path.read_text() for path in tests)
    result = run(promtool, "test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_boundary_test():
    tested = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.setdefault(check["alertname"], []).append(bool(check["exp_alerts"]))
    for rule in alerting_rules():
        outcomes = tested.get(rule["alert"], [])
        assert True in outcomes and False in outcomes, f"{rule['alert']} lacks a firing and a silent case"


def test_rules_use_only_metrics_the_exporter_has():
    known = {"up"}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
                "info": ("_info",)}
    for family in Metrics().registry.collect():
        known.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    known.update(rule["record"] for rule in recording_rules())
    for rule in alerting_rules() + recording_rules():
        for name in re.findall(r"\b(?:bot_[a-z0-9_]+|up)\b(?=\s*[{\[)\s<>=!*/+-]|$)", rule["expr"]):
            assert name in known, f"{rule.get('alert') or rule.get('record')} uses unknown metric {name}"
        for name in re.findall(r"\bbot:[a-z0-9_:]+", rule["expr"]):
            assert name in known, name


# --------------------------------------------------------------------------- Alertmanager


AM_CONFIG = AM_DIR / "alertmanager.yml"


def test_repository_config_holds_no_secret():
    text = AM_CONFIG.read_text()
    config = yaml.safe_load(text)
    assert config["global"]["smtp_auth_password_file"] == "/run/secrets/smtp_password"
    for receiver in config["receivers"]:
        for item in receiver.get("telegram_configs", []):
            assert "bot_token" not in item and item["bot_token_file"] == "/run/secrets/telegram_bot_token"
        for item in receiver.get("webhook_configs", []):
            assert "url" not in item and item["url_file"].startswith("/run/secrets/")
    assert "auth_password:" not in text.replace("auth_password_file", "")
    assert not re.search(r"\d{6,}:[A-Za-z0-9_-]{20,}", text)  # nothing shaped like a bot token
    assert "${" not in text  # nothing to render: the file is used as committed


def test_committed_config_passes_amtool(amtool):
    result = run(amtool, "check-config", str(AM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and " - 1 templates" in result.stdout


@pytest.mark.parametrize("labels,receiver", [
    (["alertname=BotDiskAlmostFull", "severity=critical"], "critical-telegram-email"),
    (["alertname=BotDiskAlmostFull", "severity=warning"], "warning-telegram"),
    (["alertname=BotBackupTooOld", "severity=critical", "job=bot"], "critical-telegram-email"),
    (["alertname=BotOperationsSlow", "severity=warning"], "warning-telegram"),
    (["alertname=BotCustom", "severity=info", "source=bot"], "info-webhook"),
    (["alertname=BotWatchdog", "severity=info"], "watchdog"),
    (["alertname=Something", "severity=unknown"], "info-webhook"),
])
def test_routing(amtool, labels, receiver):
    result = run(amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}", f"--verify.receivers={receiver}",
                 *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_inhibition_and_resolved_notifications_are_configured():
    config = yaml.safe_load(AM_CONFIG.read_text())
    [rule] = config["inhibit_rules"]
    assert rule["source_matchers"] == ['severity="critical"']
    assert rule["target_matchers"] == ['severity="warning"']
    assert "alertname" in rule["equal"]
    for receiver in config["receivers"]:
        for kind in ("telegram_configs", "email_configs"):
            for item in receiver.get(kind, []):
                assert item["send_resolved"] is True
