"""How a flag is declared: :func:`flag` makes the :class:`Key` of a field of a :class:`Section`,
and each section class registers itself in :data:`SECTIONS`. The sections themselves, and how
values are loaded, are in :mod:`exporter.config`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._config_values import Bounded
from ._record import Record


class Key(Record, frozen=True):
    """One setting: its flag name, where it lands, how it parses, its default."""

    name: str
    section: str
    attr: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    # True: always a secret; a function: a secret when it says so of the parsed value (a URL
    # with credentials), which may then come from the environment only.
    secret: bool | Callable[[Any], bool] = False
    derive: Callable[[dict[str, Any]], Any] | None = None  # the default, from other flags' values

    @property
    def help(self) -> str:
        """The help text: the doc, and the range of a number."""
        bounded = isinstance(self.parse, Bounded)
        return f"{self.doc} Range: {self.parse.range_text()}." if bounded else self.doc

    def hides(self, value: Any) -> bool:
        """Whether this parsed value is a secret (to be masked, kept out of config files)."""
        if value is None or not self.secret:
            return False
        return self.secret is True or bool(self.secret(value))


def flag(name: str, parse: Callable[[Any], Any], default: Any, doc: str, *,
         secret: bool | Callable[[Any], bool] = False, derive: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """Declare a field of a :class:`Section` and the flag that sets it (its one declaration).

    ``derive`` makes the default out of other flags' values (by flag name) when this one is not
    set, so that a backend finds everything it needs in its own section."""
    return Key(name, "", "", parse, default, doc, secret, derive)


SECTIONS: dict[str, type] = {}


class Section(Record):
    """A section of the settings (``settings.backups``), each field declared once with the flag
    that sets it: ``dir: Path = flag("BACKUP_DIR", path, "backups", "Where ...")``. The class
    keeps its flags in ``keys`` (section and attribute filled in); instances are frozen records
    of the parsed values."""

    keys = ()  # not annotated: a class attribute, not a field

    def __init_subclass__(cls, *, section: str, **kwargs: Any) -> None:
        keys = []
        for attr in cls.__dict__.get("__annotations__", {}):
            declared = cls.__dict__.get(attr)
            if not isinstance(declared, Key):
                raise TypeError(f"{cls.__name__}.{attr} must be declared with flag()")
            object.__setattr__(declared, "section", section)  # completing it: not yet shared
            object.__setattr__(declared, "attr", attr)
            keys.append(declared)
            delattr(cls, attr)  # a required field of the record, not a default
        super().__init_subclass__(frozen=True, **kwargs)
        cls.keys = tuple(keys)
        SECTIONS[section] = cls
