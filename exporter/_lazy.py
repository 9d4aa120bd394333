"""Package attributes made on first use (PEP 562): the one way a package wires its module-level
manager and keeps its heavier modules off the import."""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

_building = threading.RLock()  # re-entrant: wiring one manager asks for the ones it is given


def lazy_attributes(package: str, sources: Mapping[str, str | Callable[[], Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__``. ``sources`` maps each name to the submodule that defines it
    (``".delivery"``) or to a function that makes it (the package's manager, given its
    collaborators). The value is then kept in the package: made once, later found directly."""

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace = vars(sys.modules[package])
        with _building:
            if name not in namespace:
                if callable(source):
                    namespace[name] = source()
                else:
                    import importlib

                    namespace[name] = getattr(importlib.import_module(source, package), name)
            return namespace[name]

    return __getattr__


def plugin(module: str, section: str, when: Callable[[Any], bool] | None = None) -> Callable[..., Any]:
    """A backend's entry in its package registry: a factory of the whole settings that imports
    ``module`` on its first call and returns ``module.from_settings(settings.<section>, *args)``:
    a backend sees its own section only. With ``when`` (given the section), settings that do not
    configure the backend give None and import nothing."""

    def factory(settings: Any, *args: Any) -> Any:
        own = getattr(settings, section)
        if when is not None and not when(own):
            return None
        import importlib

        return importlib.import_module(module).from_settings(own, *args)

    return factory
