"""The plug-in point for log shipping backends (Elasticsearch, ...).

A sink receives every record at or above ``LOG_LEVEL`` as its final ECS JSON line (masked,
ending in ``\\n``, ready for NDJSON). ``submit`` is called on the logging thread and must not
block: append to a bounded queue and return. ``exporter.sinks.elasticsearch.ElasticsearchSink``
is the one the manager attaches when ``ELASTICSEARCH_URL`` is set; ``LoggerManager.add_sink``
takes any.

A sink's own worker thread calls :func:`mark_shipping_thread` first: what is logged on it (its
HTTP client's request lines, its warnings) would otherwise be shipped again and keep the worker
busy forever. Such records are never handed to a sink, and only WARNING and above are written.
"""
from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

# Per thread: empty on the bot's threads (one dict check on the hot path); "shipping" on a
# sink's worker, "submitting" while a sink's submit() runs (a sink that logs does not loop).
thread_state = threading.local()


def mark_shipping_thread() -> None:
    """Declare the calling thread a sink's worker (see the module docstring)."""
    thread_state.shipping = True


@runtime_checkable
class LogSink(Protocol):
    def submit(self, line: bytes, levelno: int) -> None:
        """Take one ECS JSON line (bytes ending in a newline) of a record of level ``levelno``. Never blocks."""

    def stats(self) -> dict:
        """Figures for ``get_log_stats()["shipping"]`` (queued, shipped, spooled, dropped, ...)."""

    def close(self, timeout: float) -> None:
        """Flush what is queued within ``timeout`` seconds, then stop."""
