"""Types of the ``opsstack`` options that take numbers: the settings' bounded parsers, so that an
option and a flag refuse the same way (not finite, out of range) with one line naming both."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from ..config import DAY, Bounded, integer, number


def option(parse: Bounded) -> Callable[[str], int | float]:
    """An argparse ``type`` checking a value with ``parse``."""

    def convert(raw: str) -> int | float:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r} {exc}") from None

    return convert


PORT = option(integer(0, 65_535))
LIMIT = option(integer(1, 1_000_000))
TIMEOUT = option(number(0.1, 3600, "seconds"))
DURATION = option(number(0, 30 * DAY, "seconds"))
RATE = option(number(0.01, 1000, "per second"))
DAYS = option(number(0, 36_500, "days"))  # an age: up to a hundred years, never inf
