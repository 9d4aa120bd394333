"""The optional clients behind the extras: which features need which, and the one error naming
the extra (the bare install, where they are really missing, is tested in test_installed_wheel)."""
from __future__ import annotations

import pytest

from exporter._extras import EXTRAS, MissingExtraError, installed, require_extra, wanted_extras
from exporter.config import load_settings
from exporter.errors import ConfigError


def test_every_extra_is_installed_by_the_test_extra():
    assert [extra for extra in EXTRAS if not installed(extra)] == []


def test_a_client_that_cannot_be_imported_names_the_extra_and_hides_the_setting_value():
    with pytest.raises(MissingExtraError) as raised:
        require_extra("opsstack_no_such_client", "elk", "ELASTICSEARCH_URL is set")
    error = raised.value
    assert str(error) == ("ELASTICSEARCH_URL is set but urllib3 (the log shipper's HTTP client) is not "
                          "installed: pip install 'opsstack[elk]'")
    assert isinstance(error, ConfigError) and error.exit_code == 2
    assert (error.key, error.extra, error.value) == ("ELASTICSEARCH_URL", "elk", None)
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_an_installed_client_is_imported():
    assert require_extra("redis", "redis", "REDIS_URL is set").__name__ == "redis"


@pytest.mark.parametrize("environ, wanted", [
    ({}, []),
    ({"ELASTICSEARCH_URL": "http://127.0.0.1:9200"}, ["elk"]),
    ({"ENABLE_ELK_INTEGRATION": "true"}, ["elk"]),
    ({"ELASTICSEARCH_URL": "http://127.0.0.1:9200", "ENABLE_ELK_INTEGRATION": "false"}, []),
    ({"ENABLE_TRACING": "true"}, ["otel"]),
    ({"ENABLE_TRACING": "true", "OTEL_SDK_DISABLED": "true"}, []),
    ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, ["redis"]),
    ({"BACKUP_SCHEDULER": "celery"}, ["celery"]),
    ({"ALERT_CHANNELS": '{"critical": ["log", "celery"]}', "CELERY_BROKER_URL": "redis://127.0.0.1:6379/1"},
     ["celery"]),
])
def test_the_features_that_need_an_extra(environ, wanted):
    assert [extra for _, extra in wanted_extras(load_settings(environ=environ))] == wanted
