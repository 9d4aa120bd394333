"""Settings: every flag parses from its sources, and every bad value names key, source, value."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import KEYS, KEYS_BY_NAME, Bounded, Secret, load_settings
from exporter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BOUNDED = [key for key in KEYS if isinstance(key.parse, Bounded)]

# A valid and an invalid raw value for each parser, with the source that can carry it.
# Text values are invalid only with the wrong type, which a TOML file can carry.
# Numbers (Bounded) take their values from their bounds.
GOOD = {
    "parse_bool": "true", "host": "bot.example",
    "text": "some-text", "optional_text": "some-text", "path": "some/dir",
    "string_list": "a,b", "optional_string_list": '["a", "b"]', "backup_retention": "hourly=2,weekly=1",
    "alert_channels": '{"critical": ["log", "webhook"]}', "secret": "s3cret-value",
    "elasticsearch_url": "https://elastic:s3cret-value@es.example:9243", "aes_key": "0f" * 32,
    "redis_url": "redis://:s3cret-value@127.0.0.1:6379/0",
    "resource_attributes": "deployment.environment.name=staging,team=ops%2Fbots",
}
BAD = {
    "parse_bool": ("environment", "maybe"), "host": ("environment", "two words"),
    "text": ("toml", 5), "optional_text": ("toml", 5), "path": ("toml", 5),
    "string_list": ("toml", [1, 2]), "optional_string_list": ("toml", [1]),
    "backup_retention": ("environment", "yearly=3"),
    "alert_channels": ("environment", '{"critical": ["pager"]}'),
    "secret": ("toml", "in-a-file"),
    "elasticsearch_url": ("environment", "in-a-file:9200"), "aes_key": ("environment", "in-a-file"),
    "redis_url": ("environment", "http://127.0.0.1:6379"),
    "resource_attributes": ("environment", "service.name"),
}


# Flags that are set only together with another one (checked when the settings load).
PARTNERS = {"ELASTICSEARCH_USERNAME": {"ELASTICSEARCH_PASSWORD": "pw"},
            "ELASTICSEARCH_PASSWORD": {"ELASTICSEARCH_USERNAME": "bot"}}


def parser_name(key) -> str:
    if isinstance(key.parse, Bounded):
        return "bounded"
    name = key.parse.__qualname__
    return "one_of" if name.startswith("one_of") else name


def good_value(key) -> str:
    name = parser_name(key)
    if name == "bounded":
        return str(key.parse.high)
    return key.parse.choices[-1] if name == "one_of" else GOOD[name]


def bad_value(key) -> tuple[str, object]:
    name = parser_name(key)
    if name == "bounded":
        return "environment", str(key.parse.high + 1)
    return ("environment", "nonsense") if name == "one_of" else BAD[name]


def toml_line(name: str, value: object) -> str:
    return f"{name} = {json.dumps(value)}\n"


def test_defaults_turn_every_feature_off():
    settings = load_settings(environ={})
    assert not any([settings.logging.enabled, settings.alerts.enabled, settings.backups.enabled,
                    settings.profiler.enabled, settings.recovery.enabled, settings.tracing.enabled])
    assert settings.metrics.port is None
    assert set(settings.sources.values()) == {"default"}


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_every_key_reads_from_the_environment(key):
    settings = load_settings(environ={key.name: good_value(key), **PARTNERS.get(key.name, {})})
    assert settings.sources[key.name] == "environment"
    value = settings.value(key.name)
    assert value is not None
    if key.secret:
        assert isinstance(value, Secret) and value.get() == good_value(key)


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_every_key_rejects_a_bad_value_naming_key_source_and_value(key, tmp_path):
    source, raw = bad_value(key)
    if source == "environment":
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={key.name: raw})
        assert caught.value.source == "environment"
    else:
        config = tmp_path / "bot.toml"
        config.write_text(toml_line(key.name, raw))
        with pytest.raises(ConfigError) as caught:
            load_settings(config_file=config, environ={})
        assert str(config) in caught.value.source
    error = caught.value
    assert error.key == key.name
    message = str(error)
    assert message.startswith(f"{key.name}=")
    if key.secret:
        assert "in-a-file" not in message
    else:
        assert repr(raw) in message


def test_sources_rank_arguments_over_environment_over_file(tmp_path):
    config = tmp_path / "config.py"
    config.write_text("LOG_LEVEL = 'WARNING'\nBACKUP_DIR = 'from-file'\nSTATE_DIR = 'file-state'\n"
                      "UNRELATED = object()\n")
    settings = load_settings({"LOG_LEVEL": "ERROR"}, config_file=config,
                             environ={"LOG_LEVEL": "DEBUG", "BACKUP_DIR": "from-env", "LOG_DIR": "env-logs"})
    assert settings.logging.level == "ERROR" and settings.sources["LOG_LEVEL"] == "argument"
    assert settings.backups.dir == Path("from-env") and settings.sources["BACKUP_DIR"] == "environment"
    assert settings.logging.dir == Path("env-logs") and settings.sources["LOG_DIR"] == "environment"
    assert settings.general.state_dir == Path("file-state") and settings.sources["STATE_DIR"] == f"file {config}"
    assert settings.sources["LOG_BACKUP_COUNT"] == "default"


def test_environment_wins_over_a_toml_file_and_check_config_names_each_source(tmp_path, capsys, monkeypatch):
    from exporter.cli import main

    config = tmp_path / "opsstack.toml"
    config.write_text('LOG_LEVEL = "WARNING"\nBACKUP_FREQUENCY = "weekly"\n')
    settings = load_settings(config_file=config, environ={"LOG_LEVEL": "DEBUG"})
    assert (settings.logging.level, settings.sources["LOG_LEVEL"]) == ("DEBUG", "environment")
    assert (settings.backups.frequency, settings.sources["BACKUP_FREQUENCY"]) == ("weekly", f"file {config}")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert main(["--config", str(config), "check-config", "--json"]) == 0
    rows = {row["key"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["LOG_LEVEL"]["value"], rows["LOG_LEVEL"]["source"]) == ("DEBUG", "environment")
    assert (rows["BACKUP_FREQUENCY"]["value"], rows["BACKUP_FREQUENCY"]["source"]) == ("weekly", f"file {config}")


def test_design_document_config_module_is_accepted(tmp_path):
    config = tmp_path / "config.py"
    config.write_text(
        "ENABLE_BACKUP_SYSTEM = True\nBACKUP_FREQUENCY = 'daily'\n"
        "CRITICAL_BACKUP_PATHS = ['config.py', 'tokens', 'data']\n"
        "BACKUP_RETENTION = {'hourly': 24, 'daily': 30, 'weekly': 12}\n"
        "LOG_MAX_SIZE = 10 * 1024 * 1024\n"
        "ALERT_CHANNELS = {'critical': ['telegram', 'email'], 'high': ['telegram'],"
        " 'medium': ['log'], 'low': ['log']}\n"
        "PROFILED_OPERATIONS = None\n")
    settings = load_settings(config_file=config, environ={})
    assert settings.backups.enabled and settings.backups.critical_paths == ("config.py", "tokens", "data")
    assert settings.backups.retention == {"hourly": 24, "daily": 30, "weekly": 12, "manual": 20}
    assert settings.logging.max_size == 10 * 1024 * 1024
    assert settings.alerts.channels["critical"] == ("telegram", "email")
    assert settings.profiler.operations is None


def test_unknown_key_in_toml_is_an_error(tmp_path):
    config = tmp_path / "bot.toml"
    config.write_text("LOG_LEVLE = 'DEBUG'\n")
    with pytest.raises(ConfigError, match="LOG_LEVLE.*unknown setting"):
        load_settings(config_file=config, environ={})


@pytest.mark.parametrize("content, reason", [("x = [", "invalid TOML"), (None, "no such file")])
def test_unreadable_config_file_is_a_config_error(tmp_path, content, reason):
    config = tmp_path / "bot.toml"
    if content is not None:
        config.write_text(content)
    with pytest.raises(ConfigError, match=reason) as caught:
        load_settings(config_file=config, environ={})
    assert str(config) in str(caught.value)


def test_secret_from_file_via_env(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("123456:from-a-file\n")
    settings = load_settings(environ={"TELEGRAM_BOT_TOKEN_FILE": str(token_file)})
    assert settings.alerts.telegram_token.get() == "123456:from-a-file"
    assert "from-a-file" not in repr(settings)
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN_FILE.*cannot read"):
        load_settings(environ={"TELEGRAM_BOT_TOKEN_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize("url", ["http://es.internal", "es.internal:9200", "ftp://es.internal:21",
                                 "http://elastic:hunter2@es.internal:notaport"])
def test_an_elasticsearch_url_the_client_cannot_use_is_an_error_that_hides_it(url):
    with pytest.raises(ConfigError, match="ELASTICSEARCH_URL.*expected http://host:port") as caught:
        load_settings(environ={"ELASTICSEARCH_URL": url})
    assert "es.internal" not in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9200", "https://elastic:pw@es.example", "https://es.example:9243"])
def test_elasticsearch_urls_the_client_takes_are_accepted(url):
    assert load_settings(environ={"ELASTICSEARCH_URL": url}).shipping.url.get() == url


def test_replace_checks_values():
    settings = load_settings(environ={})
    changed = settings.replace(LOG_LEVEL="debug")
    assert changed.logging.level == "DEBUG" and changed.sources["LOG_LEVEL"] == "argument"
    with pytest.raises(ConfigError, match="LOG_BACKUP_COUNT"):
        settings.replace(LOG_BACKUP_COUNT=-3)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in KEYS_BY_NAME}
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          env={**clean, **env}, timeout=60)


def test_check_config_masks_secrets_and_names_sources():
    result = _cli("check-config", "--json", env={"SMTP_PASSWORD": "hunter2-secret", "LOG_LEVEL": "debug"})
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    assert rows["SMTP_PASSWORD"] == {"key": "SMTP_PASSWORD", "value": "****", "source": "environment"}
    assert rows["LOG_LEVEL"]["value"] == "DEBUG"
    assert rows["BACKUP_DIR"]["source"] == "default"
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("env, key", [({"BACKUP_FREQUENCY": "monthly"}, "BACKUP_FREQUENCY"),
                                      ({"BACKUP_RETENTION": "{oops"}, "BACKUP_RETENTION"),
                                      ({"LOG_MAX_SIZE": "-10"}, "LOG_MAX_SIZE"),
                                      ({"LOG_MAX_SIZE": "1e999"}, "LOG_MAX_SIZE"),
                                      ({"INTEGRITY_CHECK_INTERVAL": "inf"}, "INTEGRITY_CHECK_INTERVAL"),
                                      ({"LOG_SHIP_INTERVAL": "1e300"}, "LOG_SHIP_INTERVAL"),
                                      ({"METRICS_PORT": "99999"}, "METRICS_PORT"),
                                      ({"BACKUP_ENCRYPTION_KEY": "ab" * 31}, "BACKUP_ENCRYPTION_KEY"),
                                      ({"BACKUP_ENCRYPTION_KEY": "zz" * 32}, "BACKUP_ENCRYPTION_KEY")])
def test_check_config_prints_one_line_and_exits_2(env, key):
    result = _cli("check-config", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "environment" in lines[0]
    assert "Traceback" not in result.stderr
    if KEYS_BY_NAME[key].secret:
        assert env[key] not in result.stderr and "****" in lines[0]  # never a secret's value


def _below_and_above(parse: Bounded) -> tuple[object, object]:
    if parse.kind == "number":
        return parse.low - (parse.low / 2 if parse.low > 0 else 1), parse.high * 1.5 + 1
    return parse.low - 1, parse.high + 1


@pytest.mark.parametrize("key", BOUNDED, ids=lambda key: key.name)
def test_every_number_takes_its_bounds_and_refuses_past_them(key):
    assert key.help == f"{key.doc} Range: {key.parse.range_text()}."
    taken = [key.parse.low, key.parse.high] + ([] if key.parse.off is None else [key.parse.off])
    for inside in taken:
        assert load_settings(environ={key.name: str(inside)}).value(key.name) == inside
    for outside in _below_and_above(key.parse):
        with pytest.raises(ConfigError, match=re.escape(f"must be {key.parse.range_text()}")) as caught:
            load_settings(environ={key.name: str(outside)})
        assert caught.value.key == key.name and caught.value.value == str(outside)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999", "Infinity"])
@pytest.mark.parametrize("key", BOUNDED, ids=lambda key: key.name)
def test_every_number_refuses_what_is_not_finite(key, raw):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={key.name: raw})
    assert caught.value.key == key.name
    assert str(caught.value).startswith(f"{key.name}={raw!r} (from environment): ")


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e999"])
@pytest.mark.parametrize("key", BOUNDED, ids=lambda key: key.name)
def test_every_number_refuses_toml_infinities(key, raw, tmp_path):
    config = tmp_path / "bot.toml"
    config.write_text(f"{key.name} = {raw}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, environ={})
    assert caught.value.key == key.name and str(config) in caught.value.source


@pytest.mark.parametrize("line", ["INTEGRITY_CHECK_INTERVAL = 1e300", "LOG_SHIP_INTERVAL = float('inf')",
                                  "LOG_MAX_SIZE = 10 ** 400", "LOG_SHIP_INTERVAL = 10 ** 400"])
def test_a_config_module_cannot_pass_a_huge_number(line, tmp_path):
    config = tmp_path / "config.py"
    config.write_text(line + "\n")
    name = line.split()[0]
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, environ={})
    assert caught.value.key == name


def test_every_interval_fits_a_thread_wait():
    """``Event.wait(timeout)`` raises OverflowError past TIMEOUT_MAX: no bound may reach it."""
    import threading

    scale = {"seconds": 1, "hours": 3600}
    timed = [key for key in BOUNDED if key.parse.unit in scale]
    assert {key.name for key in timed} >= {"INTEGRITY_CHECK_INTERVAL", "LOG_SHIP_INTERVAL",
                                            "RESOURCE_CHECK_INTERVAL", "ALERT_RETENTION_HOURS"}
    for key in timed:
        assert 0 < key.parse.low and key.parse.high * scale[key.parse.unit] < threading.TIMEOUT_MAX, key.name


TEXT_PARSERS = ("text", "optional_text", "path", "host", "string_list", "optional_string_list")


@pytest.mark.parametrize("key", [key for key in KEYS if parser_name(key) in TEXT_PARSERS and not key.secret],
                         ids=lambda key: key.name)
def test_no_text_value_may_hold_a_nul_character(key, tmp_path):
    value = ["ok", "a\u0000b"] if "list" in parser_name(key) else "a\u0000b"
    config = tmp_path / "bot.toml"
    config.write_text(toml_line(key.name, value))
    with pytest.raises(ConfigError, match="must not contain a NUL character") as caught:
        load_settings(config_file=config, environ={})
    assert caught.value.key == key.name


def test_a_backup_key_that_is_not_64_hex_characters_is_refused_at_load_unshown():
    for raw in ("0f" * 31, "zz" * 32, "0f" * 33):
        with pytest.raises(ConfigError, match="64 hexadecimal characters") as caught:
            load_settings(environ={"BACKUP_ENCRYPTION_KEY": raw})
        assert raw not in str(caught.value)
    assert load_settings(environ={"BACKUP_ENCRYPTION_KEY": "0F" * 32}).backups.encryption_key.get() == "0F" * 32


def test_readme_gives_the_range_of_every_number():
    readme = (ROOT / "README.md").read_text()
    missing = [key.name for key in BOUNDED if f"| `{key.name}` | {key.parse.range_text()} |" not in readme]
    assert missing == []


@pytest.mark.parametrize("content, key", [("INTEGRITY_CHECK_INTERVAL = inf\n", "INTEGRITY_CHECK_INTERVAL"),
                                          ("LOG_DIR = \"logs\\u0000x\"\n", "LOG_DIR")])
def test_check_config_reports_a_bad_file_value_in_one_line(content, key, tmp_path):
    config = tmp_path / "bot.toml"
    config.write_text(content)
    result = _cli("--config", str(config), "check-config", env={})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"opsstack check-config: {key}=") and str(config) in lines[0]
    assert "Traceback" not in result.stderr


def test_every_flag_is_declared_once_as_the_field_it_sets():
    from exporter.config import _SECTIONS, Settings

    assert list(Settings._fields) == [*_SECTIONS, "sources"]
    for name, section in _SECTIONS.items():
        assert [key.attr for key in section.keys] == list(section._fields)
        assert {key.section for key in section.keys} == {name}
    assert [key.name for key in KEYS] == [key.name for section in _SECTIONS.values() for key in section.keys]
    assert len(KEYS_BY_NAME) == len(KEYS)
    settings = load_settings(environ={"BACKUP_DIR": "from-env"})
    assert settings.backups.dir == Path("from-env") == settings.value("BACKUP_DIR")


def test_a_section_field_without_a_flag_is_refused():
    from exporter.config import Section, flag, parse_bool

    with pytest.raises(TypeError, match="Broken.undeclared must be declared with flag"):
        class Broken(Section, section="broken-test"):
            enabled: bool = flag("BROKEN_TEST_FLAG", parse_bool, False, "A flag.")
            undeclared: int = 3
