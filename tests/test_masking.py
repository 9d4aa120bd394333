"""The one secret masker and what feeds it: ``Settings.secret_values()``."""
from __future__ import annotations

from exporter._masking import SecretMasker
from exporter.config import load_settings

TOKEN = "123456:" + "A" * 35
URL = "https://hooks.example.com/services/T000/B000/XXXXXXXXXXXX"


def test_secret_values_are_the_set_secret_settings_only():
    settings = load_settings({"LOG_DIR": "/tmp/not-a-secret"},
                             environ={"TELEGRAM_BOT_TOKEN": TOKEN, "SLACK_WEBHOOK_URL": URL, "SMTP_USERNAME": "bot"})
    assert sorted(settings.secret_values()) == sorted([TOKEN, URL])
    assert load_settings(environ={}).secret_values() == ()


def test_longest_first_and_short_values_left_alone():
    masker = SecretMasker(["XXXXXXXXXXXX", URL, "abc"])
    assert masker.values == (URL, "XXXXXXXXXXXX")
    assert masker.mask(f"posting to {URL} failed") == "posting to **** failed"
    assert masker.mask("abc XXXXXXXXXXXX") == "abc ****"
    assert masker.plus([TOKEN]).mask(f"bot{TOKEN}/send") == "bot****/send"
    assert masker.mask(f"bot{TOKEN}/send") == f"bot{TOKEN}/send"  # plus() made a new one


def test_values_masked_at_any_depth():
    masker = SecretMasker([TOKEN])
    value = {"url": f"https://api.telegram.org/bot{TOKEN}", 3: [TOKEN, 1.5, None, True], "t": (TOKEN,),
             "other": RuntimeError(TOKEN)}
    assert masker.mask_value(value) == {"url": "https://api.telegram.org/bot****", "3": ["****", 1.5, None, True],
                                        "t": ["****"], "other": "****"}
