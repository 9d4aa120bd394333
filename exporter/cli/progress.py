"""A one-line progress display on stderr (files, bytes, rate, time left), only on a terminal."""
from __future__ import annotations

import sys
import time


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


class Progress:
    def __init__(self, label: str, stream=None, interval: float = 0.2) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    @classmethod
    def for_terminal(cls, label: str, quiet: bool) -> "Progress | None":
        """A display when stderr is a terminal and output is not JSON; else None."""
        if quiet or not sys.stderr.isatty():
            return None
        return cls(label)

    def __call__(self, files_done: int, files_total: int, bytes_done: int, bytes_total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and bytes_done < bytes_total:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = bytes_done / elapsed
        left = (bytes_total - bytes_done) / rate if rate > 0 else 0.0
        self.stream.write(f"\r{self.label}: {files_done}/{files_total} files, {_mb(bytes_done)} of "
                          f"{_mb(bytes_total)}, {_mb(rate)}/s, {left:4.0f}s left   ")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
