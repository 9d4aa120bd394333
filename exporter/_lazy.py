"""Package attributes that load their module when first asked for (PEP 562)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, sources: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``sources`` maps each name to the submodule that defines it."""

    def __getattr__(name: str) -> Any:
        if name in sources:
            import importlib

            return getattr(importlib.import_module(sources[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
