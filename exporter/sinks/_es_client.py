"""The Elasticsearch sink's client, made from the settings, and the node as its worker sees it.

The ``elasticsearch`` package is imported inside :func:`new_client` only, so importing the sink
costs no client until it starts. The client has no transport retries (the spool is the retry,
and ``close()`` must keep its deadline), sends a ``_bulk`` body as built and makes no spans.
"""
from __future__ import annotations

import json
import logging
import socket
import urllib.parse
from pathlib import Path

from ..config import ShippingSettings

log = logging.getLogger("exporter.sinks.elasticsearch")

TEMPLATE_NAME = "logs-bot"
TEMPLATE_FILE = Path(__file__).with_name("logs-bot-template.json")  # package data: found installed too
REQUEST_TIMEOUT = 30.0
TEMPLATE_TIMEOUT = 10.0  # seconds installing the index template may take at the most


def load_template() -> dict:
    return json.loads(TEMPLATE_FILE.read_text())


def new_client(shipping: ShippingSettings):
    """The shipper's client: no transport retries (the spool retries), bodies sent as built, untraced."""
    from elastic_transport import NdjsonSerializer
    from elasticsearch import Elasticsearch

    class PrebuiltNdjson(NdjsonSerializer):
        """A ``_bulk`` body built here is final: send it, do not copy it line by line again."""

        def dumps(self, data) -> bytes:
            return data if isinstance(data, bytes) else super().dumps(data)

    options = {"max_retries": 0, "retry_on_timeout": False, "request_timeout": REQUEST_TIMEOUT,
               "serializers": {PrebuiltNdjson.mimetype: PrebuiltNdjson()}}
    if shipping.api_key is not None:
        options["api_key"] = shipping.api_key.get()
    return untraced(Elasticsearch(shipping.url.get(), **options))


def untraced(client):
    """Switch off the client's own OpenTelemetry spans for this client (``options()`` makes a new one).

    With tracing on, every ``_bulk`` of the shipper would be a span sent to the Collector and
    from there to Elasticsearch again: telemetry about telemetry, one per batch. The client has
    no public switch per instance, only a process-wide environment variable the bot's own
    Elasticsearch calls share, so its ``OpenTelemetry`` helper is replaced by a disabled one.
    """
    from elasticsearch._otel import OpenTelemetry

    client._otel = OpenTelemetry(enabled=False)
    return client


class Node:
    """The node at ``url``: its client (given, or set by the sink's ``start()``), the index template
    installed before the first request, and a TCP probe for the worker while it backs off."""

    def __init__(self, url: str, client=None):
        parts = urllib.parse.urlsplit(url)
        self.address = (parts.hostname, parts.port or 443)  # the settings require a port for http
        self.client = client
        self._template_installed = False

    def bulk_client(self, timeout: float):
        """The client, its template installed, no request of it taking longer than ``timeout``."""
        if not self._template_installed:
            untraced(self.client.options(request_timeout=min(TEMPLATE_TIMEOUT, timeout))).indices.put_index_template(
                name=TEMPLATE_NAME, **load_template())
            self._template_installed = True
        if timeout == REQUEST_TIMEOUT:
            return self.client
        return untraced(self.client.options(request_timeout=timeout))

    def answers(self, timeout: float) -> bool:
        """Whether the node takes a TCP connection within ``timeout`` seconds. It needs no
        privilege beyond what shipping has, and costs no request body."""
        try:
            with socket.create_connection(self.address, timeout=timeout):
                return True
        except OSError:
            return False

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception as exc:  # noqa: BLE001 - plug-in boundary: a broken client must not fail disable()
                log.warning("closing the Elasticsearch client failed: %s", exc)
