"""Masking of secrets in log text: one precompiled regex, skipped when no candidate is present.

Shapes masked (the replacement keeps the surrounding syntax so the line stays readable):

* Telegram bot tokens ``<digits>:<35 characters>``, also inside ``https://api.telegram.org/bot<token>/``;
* the password of URL userinfo (``scheme://user:<password>@host``);
* values of secret-looking keys in query strings, forms, dict reprs and JSON
  (``password=``, ``token=``, ``api_key=``, ``api_hash``, ``secret``, ...), prefixed ones too
  (``DB_PASSWORD=``, ``api_token=``);
* ``Authorization`` (and ``X-Api-Key``) header values, keeping the scheme word (``Bearer``),
  and ``Cookie`` header values;
* the literal values of every secret setting (``config.SECRET_KEYS``), given by the manager.

Every pattern needs ``:`` or ``=`` and a hint word, a URL or a digit run before a colon, all
checked with ``str`` methods first: text without a candidate never reaches the regex.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "[REDACTED]"

_SECRET_KEY_NAMES = (
    r"api[_-]?hash|api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token|"
    r"bot[_-]?token|client[_-]?secret|secret[_-]?key|secret|passwd|password|pwd|passphrase|token|"
    r"private[_-]?key|session[_-]?string|encryption[_-]?key|credentials?|signature|sig|auth|pass"
)

_PATTERNS = (
    # a Telegram bot token: a numeric bot id, a colon, 35 URL-safe characters
    r"(?P<tg>(?<![0-9])[0-9]{6,}:[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-]))",
    # URL userinfo password: keep scheme://user: and @
    r"(?P<ui_head>://[^/\s:@'\"]*:)(?P<ui>[^/\s@'\"]++)(?=@)",
    # a long URL user name alone is a token (https://<token>@github.com/...)
    r"(?P<ut_head>://)(?P<ut>[^/\s:@'\"]{16,}+)(?=@)",
    # Authorization / X-Api-Key headers, in "Name: value", "'name': 'value'" or "name=value" form
    r"(?i:(?P<auth_head>\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?"
    r"(?:(?:bearer|basic|token|bot|apikey|digest)\s+)?|\bx-api-key['\"]?\s*[:=]\s*['\"]?)"
    r"(?P<auth>[^\s'\",;}&]+))",
    # a quoted value of a secret-looking key, spaces and all (password: 'correct horse')
    r"(?i:(?P<kvq_head>(?:(?<![A-Za-z0-9])|(?<=[_.-]))(?:" + _SECRET_KEY_NAMES + r")['\"]?\s*(?:=|:)\s*"
    r"(?P<quote>['\"]))(?P<kvq>(?!\[REDACTED\])(?=[^'\"\n]*[\s,;])[^'\"\n]++)(?=(?P=quote)))",
    # key=value / key: value / 'key': 'value' for secret-looking keys, prefixed ones too
    # (DB_PASSWORD=, ?api_token=, "mysql-password": ...)
    r"(?i:(?P<kv_head>(?:(?<![A-Za-z0-9])|(?<=[_.-]))(?:" + _SECRET_KEY_NAMES + r")['\"]?\s*(?:=|:)\s*['\"]?)"
    r"(?P<kv>(?!\[REDACTED\])[^\s'\",;}&)\]]+))",
    # a Cookie header: every value after it
    r"(?i:(?P<cookie_head>\b(?:set-)?cookie['\"]?\s*[:=]\s*['\"]?)(?P<cookie>[^'\"\n]+))",
)


# A field whose name is, or ends in, a secret key name (password, db_password, api-token, ...)
_SECRET_NAME = re.compile(r"(?i:(?:^|[_.\-\s])(?:" + _SECRET_KEY_NAMES
                          + r"|(?:proxy-)?authorization|x-api-key|cookie))$")

# Every key name above contains one of these (lower case), as do the header names.
_HINTS = ("pass", "pwd", "token", "secret", "key", "hash", "session", "auth", "sig", "credential", "cookie")


class Redactor:
    """Masks secrets in strings. ``redact(text) -> (text, count)``; thread-safe, no state."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        # Longest first so a secret that contains another is masked whole.
        values = sorted({value for value in literals if value and len(value) >= 4}, key=len, reverse=True)
        self._literals = tuple(values)
        patterns = list(_PATTERNS)
        if values:
            patterns.insert(0, "(?P<lit>" + "|".join(re.escape(value) for value in values) + ")")
        self._regex = re.compile("|".join(patterns))

    @staticmethod
    def is_secret_name(name: str) -> bool:
        """True for a field or key name whose value is a secret as a whole (``password``, ...)."""
        return _SECRET_NAME.search(name) is not None

    def redact(self, text: str) -> tuple[str, int]:
        """``(masked text, number of secrets masked)``; the text itself when nothing matched."""
        if not self._candidate(text):
            return text, 0
        return self._regex.subn(_replace, text)

    def _candidate(self, text: str) -> bool:
        # str methods run in C; the regex only runs on text that could hold a secret.
        for value in self._literals:
            if value in text:
                return True
        if ":" not in text and "=" not in text:
            return False
        if "://" in text:
            return True
        lowered = text.lower()
        for word in _HINTS:
            if word in lowered:
                return True
        colon = text.find(":")
        while colon != -1:  # a bare bot token: six digits right before a colon
            if colon >= 6 and text[colon - 6:colon].isdigit():
                return True
            colon = text.find(":", colon + 1)
        return False


def _replace(match: re.Match) -> str:
    """The mask, after what the pattern keeps of its match (its ``<name>_head``: a key, a scheme)."""
    head = match.lastgroup + "_head"
    return (match.group(head) if head in match.re.groupindex else "") + MASK


def secret_literals(values: Iterable[str | None]) -> list[str]:
    """The strings to mask for the given secret setting values.

    A URL made only of scheme, host and port (``http://127.0.0.1:9200``) carries nothing secret
    and would mask every line that names the server; its credentials, if any, are masked by the
    userinfo pattern. Every other value (tokens, passwords, webhook URLs with a path) is masked
    whole.
    """
    found = []
    for value in values:
        if not value:
            continue
        if "://" in value:
            try:
                parts = urlsplit(value)
            except ValueError:
                found.append(value)
                continue
            if parts.password:
                found.append(parts.password)
            if parts.path.strip("/") or parts.query or parts.fragment or parts.password:
                found.append(value)
            continue
        found.append(value)
    return found
