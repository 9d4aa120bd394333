"""Reading a config file (a ``config.py`` module as in the design document, or TOML): loaded
only when there is one, so that importing opsstack does not carry it."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError


def file_values(config_file: Path, keys: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """The flags set in a ``config.py`` module or a TOML file: ``{name: (raw value, source)}``.
    ``keys`` are the settings' keys by flag name (``config.KEYS_BY_NAME``)."""
    source = f"file {config_file}"
    if not config_file.is_file():
        raise ConfigError("config file", "argument", str(config_file), "no such file")
    if config_file.suffix == ".toml":
        import tomllib  # only for a TOML file

        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("config file", "argument", str(config_file), f"cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config file", "argument", str(config_file), f"invalid TOML: {exc}") from exc
        values = {}
        for name, raw in data.items():
            if name.upper() not in keys:
                raise ConfigError(name.upper(), source, None, "unknown setting")
            values[name.upper()] = (raw, source)
    elif config_file.suffix == ".py":
        try:
            import runpy  # only for a config.py file

            namespace = runpy.run_path(str(config_file))
        except Exception as exc:  # a user's config module may raise anything; report it as config
            raise ConfigError("config file", "argument", str(config_file),
                              f"running it failed: {type(exc).__name__}: {exc}") from exc
        # A bot's config.py holds much else besides; only the flags opsstack knows are taken.
        values = {name: (raw, source) for name, raw in namespace.items() if name in keys}
    else:
        raise ConfigError("config file", "argument", str(config_file), "must end in .py or .toml")
    for name, (raw, _) in values.items():
        key = keys[name]
        if key.secret is True or (key.secret and _hides(key, raw)):
            what = "secrets are" if key.secret is True else "with credentials it is a secret, and secrets are"
            raise ConfigError(name, source, "****", f"{what} read from the environment only "
                              f"(set {name} or {name}_FILE)")
    return values


def _hides(key: Any, raw: Any) -> bool:
    """Whether a raw value of a flag that is a secret only sometimes (a URL with credentials) is
    one; a value that does not parse is reported, masked, by the loading that follows."""
    try:
        return key.hides(key.parse(raw))
    except ValueError:
        return False
