"""The Elasticsearch sink's client, made from the settings, and the node as its worker sees it.

The shipper asks two things of Elasticsearch: ``_bulk`` and, once, ``PUT _index_template``. It
does so over ``urllib3`` alone, imported in :func:`new_client`: the ``elasticsearch`` client
would load its generated API and ``elastic_transport`` every HTTP stack it knows (httpx,
requests, aiohttp), about 15 MiB a bot would carry for two requests (``bench_memory.py``).

``ELASTICSEARCH_URL`` may name several nodes of a cluster. Requests start at the next node in
turn; a node that does not take the connection is skipped for :data:`DEAD_FOR` seconds and the
request goes on to the next one, within the request's own timeout. A node that takes a request
and then fails or times out is not asked again for that request (the spool is the retry, and
``close()`` must keep its deadline); both requests are idempotent (``create`` with fixed
``_id``s), so the replay does no harm. Credentials: ``ELASTICSEARCH_API_KEY``, or
``ELASTICSEARCH_USERNAME``/``ELASTICSEARCH_PASSWORD``, or the URL's own ``user:password@``.
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import time
import urllib.parse


from ..config import ShippingSettings
from ..errors import LoggingSetupError

log = logging.getLogger("exporter.sinks.elasticsearch")

TEMPLATE_NAME = "logs-bot"
TEMPLATE_ASSET = "deploy/elasticsearch/logs-bot-template.json"  # package data: found installed too
REQUEST_TIMEOUT = 30.0
TEMPLATE_TIMEOUT = 10.0  # seconds installing the index template may take at the most
DEAD_FOR = 5.0  # seconds a node that refused a connection is tried after the others


def load_template() -> dict:
    from ..assets import read_bytes

    return json.loads(read_bytes(TEMPLATE_ASSET))


class ElasticsearchError(Exception):
    """The node answered with an error status (the worker spools the batch and retries)."""

    def __init__(self, status: int, kind: str):
        super().__init__(f"HTTP {status} {kind}")
        self.status = status


class Nodes:
    """The cluster's nodes (base URL and headers each), which one is next, and which are away."""

    def __init__(self, urls: str, authorization: str | None):
        self.entries: list[tuple[str, dict[str, str]]] = []
        self.addresses: list[tuple[str, int]] = []
        for url in urls.split(","):
            parts = urllib.parse.urlsplit(url)
            headers = {"User-Agent": "opsstack-log-shipper", "Accept": "application/json"}
            own = _basic(urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")) \
                if parts.username is not None else None
            if authorization or own:
                headers["Authorization"] = authorization or own
            port = parts.port or 443  # the settings require a port for http
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            self.entries.append((f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}", headers))
            self.addresses.append((parts.hostname, port))
        self.turn = 0
        self.away: dict[int, float] = {}  # node index -> monotonic time until which it goes last

    def order(self) -> list[int]:
        """Node indexes for the next request: the next one in turn first, the away ones last."""
        count = len(self.entries)
        start, self.turn = self.turn % count, self.turn + 1
        turns = [(start + step) % count for step in range(count)]
        now = time.monotonic()
        return sorted(turns, key=lambda index: self.away.get(index, 0.0) > now)


class Client:
    """What the shipper asks of Elasticsearch, with the surface of the ``elasticsearch`` client
    it uses (``bulk``, ``indices.put_index_template``, ``options``, ``close``), so that a stand-in
    written for one fits the other."""

    def __init__(self, pool, nodes: Nodes, timeout: float = REQUEST_TIMEOUT):
        self._pool = pool  # a urllib3.PoolManager, shared by the copies options() makes
        self._nodes = nodes
        self._timeout = timeout
        self.indices = self  # client.indices.put_index_template(...), as the elasticsearch client

    def __repr__(self) -> str:
        return f"<Elasticsearch shipper client: {len(self._nodes.entries)} node(s)>"

    def options(self, *, request_timeout: float) -> "Client":
        return Client(self._pool, self._nodes, request_timeout)

    def bulk(self, *, body: bytes, filter_path: str) -> dict:
        query = urllib.parse.urlencode({"filter_path": filter_path})
        return self._request("POST", f"/_bulk?{query}", body, "application/x-ndjson")

    def put_index_template(self, *, name: str, **template) -> dict:
        return self._request("PUT", f"/_index_template/{urllib.parse.quote(name)}",
                             json.dumps(template).encode(), "application/json")

    def close(self) -> None:
        self._pool.clear()

    def _request(self, method: str, target: str, body: bytes, content_type: str) -> dict:
        """Send to the nodes in turn until one takes the connection, within the timeout."""
        from urllib3 import Timeout
        from urllib3.exceptions import NewConnectionError, ProtocolError

        nodes = self._nodes
        deadline = time.monotonic() + self._timeout
        error: Exception | None = None
        for index in nodes.order():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            base, headers = nodes.entries[index]
            try:
                response = self._pool.request(method, base + target, body=body, timeout=Timeout(total=left),
                                              headers={**headers, "Content-Type": content_type},
                                              retries=False, redirect=False)
            except (NewConnectionError, ProtocolError) as exc:  # never reached it, or it hung up: next node
                nodes.away[index] = time.monotonic() + DEAD_FOR
                error = exc
                continue
            nodes.away.pop(index, None)
            return _answer(response.status, response.data)
        raise error or TimeoutError("no time left for the request")


def _answer(status: int, data: bytes) -> dict:
    try:
        document = json.loads(data) if data else {}
    except ValueError:
        document = {}
    if status >= 300:
        error = document.get("error") if isinstance(document, dict) else None
        raise ElasticsearchError(status, error.get("type", "") if isinstance(error, dict) else "")
    return document


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def authorization(shipping: ShippingSettings) -> str | None:
    """The ``Authorization`` header the settings ask for, or None (then a URL's own credentials)."""
    if shipping.api_key is not None:
        key = shipping.api_key.get()
        if ":" in key:  # "id:api_key", as Elasticsearch returns them: the header wants base64
            key = base64.b64encode(key.encode()).decode()
        return f"ApiKey {key}"
    if shipping.username is not None and shipping.password is not None:
        return _basic(shipping.username, shipping.password.get())
    return None


def new_client(shipping: ShippingSettings) -> Client:
    """The shipper's client: no transport retries (the spool retries), bodies sent as built, untraced."""
    from .._extras import require_extra

    urllib3 = require_extra("urllib3", "elk", "ELASTICSEARCH_URL is set")
    nodes = Nodes(shipping.url.get(), authorization(shipping))
    secure = any(base.startswith("https:") for base, _ in nodes.entries)
    context = _tls_context(shipping.ca_certs) if secure else None  # loading the authorities costs ~2 MiB
    return Client(urllib3.PoolManager(num_pools=len(nodes.entries), maxsize=1, block=False, ssl_context=context),
                  nodes)


def _tls_context(ca_certs):
    """Certificates checked against ``ELASTICSEARCH_CA_CERTS``, or the system's authorities."""
    import ssl

    try:
        return ssl.create_default_context(cafile=None if ca_certs is None else str(ca_certs))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise LoggingSetupError(f"ELASTICSEARCH_CA_CERTS={ca_certs}: cannot load certificates from it: "
                                f"{getattr(exc, 'strerror', None) or exc}") from exc


class Node:
    """The nodes at ``urls`` (comma-separated): the client (given, or set by the sink's
    ``start()``), the index template installed before the first request, and a TCP probe for
    the worker while it backs off."""

    def __init__(self, urls: str, client=None):
        self.addresses = Nodes(urls, None).addresses
        self.client = client
        self._template_installed = False

    def bulk_client(self, timeout: float):
        """The client, its template installed, no request of it taking longer than ``timeout``."""
        if not self._template_installed:
            self.client.options(request_timeout=min(TEMPLATE_TIMEOUT, timeout)).indices.put_index_template(
                name=TEMPLATE_NAME, **load_template())
            self._template_installed = True
        if timeout == REQUEST_TIMEOUT:
            return self.client
        return self.client.options(request_timeout=timeout)

    def answers(self, timeout: float) -> bool:
        """Whether a node takes a TCP connection within ``timeout`` seconds. It needs no
        privilege beyond what shipping has, and costs no request body."""
        deadline = time.monotonic() + timeout
        for address in self.addresses:
            try:
                with socket.create_connection(address, timeout=max(0.01, deadline - time.monotonic())):
                    return True
            except OSError:
                continue
        return False

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception as exc:  # noqa: BLE001 - plug-in boundary: a broken client must not fail disable()
                log.warning("closing the Elasticsearch client failed: %s", exc)
