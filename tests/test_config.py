"""Settings: every flag parses from its sources, and every bad value names key, source, value."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import KEYS, KEYS_BY_NAME, Secret, load_settings
from exporter.errors import ConfigError

# A valid and an invalid raw value for each parser, with the source that can carry it.
# Text values are invalid only with the wrong type, which a TOML file can carry.
GOOD = {
    "parse_bool": "true", "positive_int": "7", "non_negative_int": "0", "positive_float": "2.5",
    "percent": "42", "ratio": "0.25", "size_bytes": "5MiB", "optional_port": "9464",
    "text": "some-text", "optional_text": "some-text", "path": "some/dir",
    "string_list": "a,b", "optional_string_list": '["a", "b"]', "backup_retention": "hourly=2,weekly=1",
    "alert_channels": '{"critical": ["log", "webhook"]}', "secret": "s3cret-value",
    "elasticsearch_url": "https://elastic:s3cret-value@es.example:9243", "aes_key": "0f" * 32,
    "drill_interval": "86400", "resource_attributes": "deployment.environment.name=staging,team=ops%2Fbots",
}
BAD = {
    "parse_bool": ("environment", "maybe"), "positive_int": ("environment", "0"),
    "non_negative_int": ("environment", "-1"), "positive_float": ("environment", "-2"),
    "percent": ("environment", "150"), "ratio": ("environment", "1.5"),
    "size_bytes": ("environment", "-5"), "optional_port": ("environment", "70000"),
    "text": ("toml", 5), "optional_text": ("toml", 5), "path": ("toml", 5),
    "string_list": ("toml", [1, 2]), "optional_string_list": ("toml", [1]),
    "backup_retention": ("environment", "yearly=3"),
    "alert_channels": ("environment", '{"critical": ["pager"]}'),
    "secret": ("toml", "in-a-file"),
    "elasticsearch_url": ("environment", "in-a-file:9200"),
    "drill_interval": ("environment", "59"),
    "aes_key": ("environment", "0f" * 16),
    "resource_attributes": ("environment", "service.name"),
}


def parser_name(key) -> str:
    name = key.parse.__qualname__
    return "one_of" if name.startswith("one_of") else name


def good_value(key) -> str:
    name = parser_name(key)
    return key.parse.choices[-1] if name == "one_of" else GOOD[name]


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
    settings = load_settings(environ={key.name: good_value(key)})
    assert settings.sources[key.name] == "environment"
    value = settings.value(key.name)
    assert value is not None
    if key.secret:
        assert isinstance(value, Secret) and value.get() == good_value(key)


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_every_key_rejects_a_bad_value_naming_key_source_and_value(key, tmp_path):
    name = parser_name(key)
    source, raw = ("environment", "nonsense") if name == "one_of" else BAD[name]
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


def test_sources_rank_arguments_over_file_over_environment(tmp_path):
    config = tmp_path / "config.py"
    config.write_text("LOG_LEVEL = 'WARNING'\nBACKUP_DIR = 'from-file'\nUNRELATED = object()\n")
    settings = load_settings({"LOG_LEVEL": "ERROR"}, config_file=config,
                             environ={"LOG_LEVEL": "DEBUG", "BACKUP_DIR": "from-env", "LOG_DIR": "env-logs"})
    assert settings.logging.level == "ERROR" and settings.sources["LOG_LEVEL"] == "argument"
    assert settings.backups.dir == Path("from-file") and settings.sources["BACKUP_DIR"] == f"file {config}"
    assert settings.logging.dir == Path("env-logs") and settings.sources["LOG_DIR"] == "environment"


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
