"""The plug-in point for log shipping backends (Elasticsearch, ...).

A sink receives every record at or above ``LOG_LEVEL`` as its final ECS JSON line (masked,
without the trailing newline). ``submit`` is called on the logging thread and must not block:
append to a bounded queue and return. ``exporter.sinks.elasticsearch.ElasticsearchSink`` is the
one the manager attaches when ``ELASTICSEARCH_URL`` is set; ``LoggerManager.add_sink`` takes any.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class LogSink(Protocol):
    def submit(self, line: bytes, levelno: int) -> None:
        """Take one ECS JSON line (bytes, no newline) of a record of level ``levelno``. Never blocks."""

    def stats(self) -> dict:
        """Figures for ``get_log_stats()["shipping"]`` (queued, shipped, spooled, dropped, ...)."""

    def close(self, timeout: float) -> None:
        """Flush what is queued within ``timeout`` seconds, then stop."""
