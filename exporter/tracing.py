"""OpenTelemetry tracing for the bot: a tracer provider from the ``OTEL_*`` settings, spans
batch-exported over OTLP, and a bounded shutdown.

    from exporter import tracing
    tracing.setup(settings)                      # nothing happens when ENABLE_TRACING is off
    with tracing.span("backup.create", path="/data") as span: ...
    tracing.shutdown()                           # at most SHUTDOWN_TIMEOUT seconds

Contract other managers rely on: ``span()`` is a no-op yielding None while tracing is off (one
check), and never raises on export problems. The SDK is imported only by :func:`setup`. Unless
the bot has set its own, the provider becomes OpenTelemetry's global one, so third-party
instrumentation (httpx, aiohttp, ...) joins the same traces; the API lets a process set the
global provider once, so a second ``setup()`` after :func:`shutdown` exports only the project's
own spans. The current span is the standard OpenTelemetry context, so ``trace.id`` in ECS logs
follows it.

The standard variables are honoured as the specification defines them (read in
``exporter.config``): ``OTEL_SDK_DISABLED`` turns tracing off; ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
is used as is, over ``OTEL_EXPORTER_OTLP_ENDPOINT`` (to which ``/v1/traces`` is added over HTTP);
``OTEL_EXPORTER_OTLP_TIMEOUT`` and ``OTEL_BSP_SCHEDULE_DELAY`` /
``OTEL_BSP_MAX_QUEUE_SIZE`` / ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` in milliseconds and spans.

Exit is bounded: the export timeout defaults to 1 s (the SDK's is 10 s, with retries), the
provider's own exit hook is replaced by :func:`shutdown`, which flushes and shuts down in a
daemon thread joined for at most SHUTDOWN_TIMEOUT seconds.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from typing import Any

log = logging.getLogger("exporter.tracing")

SHUTDOWN_TIMEOUT = 1.5  # seconds shutdown() waits at most

# Attribute names the managers pass (as keyword arguments) mapped to OpenTelemetry semantic
# conventions; other names become ``bot.<name>``.
SEMCONV = {
    "path": "file.path",
    "file_path": "file.path",
    "file_name": "file.name",
    "size_bytes": "file.size",
    "url": "url.full",
    "method": "http.request.method",
    "status_code": "http.response.status_code",
    "error_type": "error.type",
}

_tracer: Any = None  # the SDK tracer while tracing is on, else None (read on the hot path)
_quick: Any = None  # the _quick_span.QuickSpans of _tracer: the profiler's and record_span's spans
_provider: Any = None
_lock = threading.Lock()
_api: Any = None  # (trace module, context module, Status, StatusCode) once set up


class _NoSpan:
    """``span()`` while tracing is off: enters to None, does nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: Any) -> None:
        return None


_NO_SPAN = _NoSpan()


def enabled() -> bool:
    return _tracer is not None


def provider() -> Any:
    """The SDK TracerProvider while tracing is on, else None."""
    return _provider


def _attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        name = SEMCONV.get(key) or (key if "." in key else f"bot.{key}")
        out[name] = value if isinstance(value, (str, bool, int, float)) else str(value)
    return out


def span(name: str, **attributes: Any) -> Any:
    """A context manager around a span named ``name`` (current inside it); yields the span, or
    None while tracing is off. An exception inside marks the span as an error and is re-raised."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    return _guarded(tracer, name, _attributes(attributes))


@contextlib.contextmanager
def _guarded(tracer: Any, name: str, attributes: dict[str, Any]) -> Any:
    try:
        manager = tracer.start_as_current_span(name, attributes=attributes, record_exception=False,
                                               set_status_on_exception=False)
        current = manager.__enter__()
    except Exception:  # a broken SDK must not break the bot
        log.exception("cannot start span %s", name)
        yield None
        return
    try:
        yield current
    except BaseException as exc:
        _mark_error(current, exc)
        manager.__exit__(type(exc), exc, exc.__traceback__)
        raise
    manager.__exit__(None, None, None)


def _mark_error(current: Any, exc: BaseException) -> None:
    _trace, _context, status, status_code = _api
    current.record_exception(exc)
    current.set_attribute("error.type", type(exc).__qualname__)
    current.set_status(status(status_code.ERROR, str(exc)[:200]))


def start_operation_span(name: str) -> Any:
    """The profiler's span for one block: ``(span, context token)``; made current. A QuickSpan
    (see ``_quick_span``): one per profiled operation, so its cost is the bot's."""
    quick = _quick
    if quick is None:
        return None
    return quick.start_current(name, {"code.function.name": name})


def end_operation_span(started: Any, exc: BaseException | None) -> str | None:
    """End a span of :func:`start_operation_span`; its trace id (hex) when sampled."""
    current, token = started
    _trace, context, _status, _code = _api
    if exc is not None:
        _mark_error(current, exc)
    try:
        context.detach(token)
    except Exception:  # detaching in another context only logs in the SDK; keep it quiet here
        pass
    current.end()
    span_context = current.get_span_context()
    return format(span_context.trace_id, "032x") if span_context.trace_flags.sampled else None


def record_span(name: str, duration: float | None, *, failed: bool = False, **attributes: Any) -> None:
    """A span for work that already finished (a custom event such as a download): it ends now
    and began ``duration`` seconds ago, as a child of the current span. No-op while off."""
    quick = _quick
    if quick is None:
        return
    try:
        end = time.time_ns()
        start = end - int(max(0.0, duration or 0.0) * 1e9)
        current = quick.start(name, _attributes(attributes), start_time=start)
        if failed:
            _trace, _context, status, status_code = _api
            current.set_status(status(status_code.ERROR))
        current.end(end_time=end)
    except Exception:  # a broken SDK must not break the bot
        log.exception("cannot record span %s", name)


def current_trace_id() -> str | None:
    """The hex trace id of the current sampled span, else None."""
    if _tracer is None:
        return None
    span_context = _api[0].get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return format(span_context.trace_id, "032x")


# --------------------------------------------------------------------------- the resource

DEFAULT_ENVIRONMENT = "production"


def service_resource(settings: Any) -> dict[str, str]:
    """The attributes naming this service, on its spans and (as ECS ``service.*``, ``host.name``)
    on its log lines: ``OTEL_RESOURCE_ATTRIBUTES`` with ``OTEL_SERVICE_NAME`` over its
    ``service.name`` (as the specification says); ``service.version`` defaults to opsstack's,
    ``deployment.environment.name`` to ``deployment.environment`` or "production", ``host.name`` to
    the machine's."""
    import socket

    from . import __version__

    config = settings.tracing
    attributes = dict(config.resource_attributes)
    if "service.name" not in attributes or settings.sources.get("OTEL_SERVICE_NAME", "default") != "default":
        attributes["service.name"] = config.service_name
    attributes.setdefault("service.version", __version__)
    attributes.setdefault("deployment.environment.name",
                          attributes.get("deployment.environment", DEFAULT_ENVIRONMENT))
    attributes.setdefault("host.name", socket.gethostname())
    return attributes


# --------------------------------------------------------------------------- set up and shut down


def _sampler(name: str, ratio: float) -> Any:
    from opentelemetry.sdk.trace import sampling

    ratio_sampler = sampling.TraceIdRatioBased(ratio)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio_sampler,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio_sampler),
    }[name]


def otlp_endpoint(config: Any) -> str:
    """Where spans go for ``config`` (a TracingSettings): the signal's own endpoint as is, else
    the general one (plus ``/v1/traces`` over HTTP), else the specification's default."""
    grpc = config.protocol == "grpc"
    if config.traces_endpoint:
        return config.traces_endpoint
    if grpc:
        return config.endpoint or "http://localhost:4317"
    base = (config.endpoint or "http://localhost:4318").rstrip("/")
    if "://" not in base:
        base = "http://" + base
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def _span_exporter(config: Any) -> Any:
    """The OTLP exporter for ``config`` (a TracingSettings); imported only here. Over HTTP the
    SDK's exporter writes its protobuf with ``_otlp_encode`` (the same bytes, 2-3x less CPU)."""
    endpoint = otlp_endpoint(config)
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = True if ("://" not in endpoint or endpoint.startswith("http://")) else None
        return OTLPSpanExporter(endpoint=endpoint, insecure=insecure, timeout=config.timeout_ms / 1000)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from ._otlp_encode import quick_encoding

    HTTPExporter = quick_encoding(OTLPSpanExporter)  # noqa: N806 (a class, made here)
    tls = {"certificate_file": config.traces_certificate, "client_key_file": config.traces_client_key,
           "client_certificate_file": config.traces_client_certificate}
    transport = _http_transport(config)
    if transport is not None:
        return HTTPExporter(endpoint=endpoint, timeout=config.timeout_ms / 1000, _transport=transport)
    return HTTPExporter(endpoint=endpoint, timeout=config.timeout_ms / 1000, **tls)


def _http_transport(config: Any) -> Any:
    """The SDK's urllib3 transport for OTLP over HTTP, with the TLS settings of ``config``; None
    (the SDK's default, requests) when a credential provider is set (it makes a requests
    session), when the environment names a proxy (``HTTPS_PROXY`` and the like: requests
    honours them, urllib3 does not), or the installed SDK has no pluggable transport (before 1.4x).

    urllib3 is loaded by the Elasticsearch sink anyway; requests on top of it (charset
    detection, cookies, IDNA, certifi) costs the bot about 4 MiB for one POST a second
    (bench_memory.py). The transport is the SDK's own, passed through the exporter's
    ``_transport`` argument (checked for below, so an SDK without it keeps the default)."""
    import inspect
    import urllib.request

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter

    if config.credential_provider or "_transport" not in inspect.signature(HTTPExporter).parameters:
        return None
    if urllib.request.getproxies_environment():
        return None
    try:
        from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
    except ImportError:  # no urllib3, or an SDK that lays its transports out differently
        return None
    key, certificate = config.traces_client_key, config.traces_client_certificate
    cert = (certificate, key) if certificate and key else certificate
    return Urllib3HTTPTransport(verify=config.traces_certificate or True, cert=cert)


def _register_globally(trace: Any, made: Any) -> bool:
    """Make ``made`` OpenTelemetry's global provider unless one is set already (by the bot, or by
    an earlier ``setup()``); True when it was registered."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    trace.set_tracer_provider(made)
    return True


def _compacting(batch: Any) -> Any:
    """``batch`` (a span processor) given each ended span without its empty event and link lists.

    The SDK hands ``on_end`` a ReadableSpan whose events and links are bounded lists: two deques
    of about 760 bytes each even when empty, most of a queued span's 2.8 KB. Copied into a
    ReadableSpan with tuples it is about 1 KB, for the same export. The attributes are copied
    with ``copy()`` (the SDK's BoundedAttributes hands out its plain dict's copy): ``dict()`` of
    the read-only view takes the attribute lock once per key, 10x the time. A span that dropped
    attributes, events or links keeps its lists, which carry the dropped counts.
    """
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

    from ._quick_span import QuickSpan

    class CompactingSpanProcessor(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            batch.on_start(span, parent_context=parent_context)

        def on_end(self, span: Any) -> None:  # a QuickSpan is compact already
            if type(span) is not QuickSpan and not (span.dropped_attributes or span.dropped_events
                                                    or span.dropped_links):
                span = ReadableSpan(
                    name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                    attributes=span.attributes.copy(), events=span.events, links=span.links, kind=span.kind,
                    status=span.status, start_time=span.start_time, end_time=span.end_time,
                    instrumentation_scope=span.instrumentation_scope)
            batch.on_end(span)

        def shutdown(self) -> None:
            batch.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return batch.force_flush(timeout_millis)

    return CompactingSpanProcessor()


def _resource(attributes: dict[str, str]) -> Any:
    """The SDK Resource for ``attributes``, hashed once.

    The OTLP encoder groups every exported span by its resource, a dict key: the SDK's
    ``Resource.__hash__`` serialises all the attributes to sorted JSON at each call, about a
    tenth of a span's CPU (measured). A resource never changes, so its hash is kept.
    """
    from opentelemetry.sdk.resources import Resource

    made = Resource.create(attributes)

    class HashedResource(Resource):
        def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:  # equality stays the SDK's
            return self._hash

    return HashedResource(made.attributes, made.schema_url)


def setup(settings: Any = None, *, span_exporter: Any = None) -> Any:
    """Start tracing from ``settings.tracing`` (``load_settings()`` when None); the provider, or
    None when tracing is off. ``span_exporter`` replaces the OTLP exporter (tests)."""
    global _tracer, _provider, _api, _quick
    if settings is None:
        from .config import load_settings

        settings = load_settings()
    config = settings.tracing
    if not config.enabled or config.sdk_disabled:
        return None
    from ._extras import require_extra

    require_extra("opentelemetry.sdk.trace", "otel", "ENABLE_TRACING is on")
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    from . import __version__
    from ._quick_span import QuickSpans

    with _lock:
        if _provider is not None:
            return _provider
        resource = _resource(service_resource(settings))
        made = TracerProvider(sampler=_sampler(config.sampler, config.sampler_arg), resource=resource,
                              shutdown_on_exit=False)
        exporter = span_exporter if span_exporter is not None else _span_exporter(config)
        batch = BatchSpanProcessor(
            exporter, max_queue_size=config.max_queue_size,
            max_export_batch_size=min(config.max_export_batch_size, config.max_queue_size),
            schedule_delay_millis=config.schedule_delay_ms,
            export_timeout_millis=config.timeout_ms)
        compacting = _compacting(batch)
        made.add_span_processor(compacting)
        _api = (trace, context, Status, StatusCode)
        _provider = made
        _tracer = made.get_tracer("exporter", __version__)
        _quick = QuickSpans(_tracer, "exporter", __version__, config.sampler, own=compacting)
        registered = _register_globally(trace, made)
    atexit.register(shutdown)
    log.info("tracing on: %s over OTLP %s to %s (%s)", config.service_name, config.protocol,
             otlp_endpoint(config) if span_exporter is None else "a given exporter",
             "registered as the global tracer provider" if registered else "a global tracer provider was set already")
    return made


def force_flush(timeout: float = SHUTDOWN_TIMEOUT) -> bool:
    """Export the spans ended so far, waiting at most ``timeout`` seconds."""
    current = _provider
    if current is None:
        return True
    return _bounded(lambda: current.force_flush(int(timeout * 1000)), timeout)


def shutdown(timeout: float = SHUTDOWN_TIMEOUT) -> bool:
    """Flush and stop the provider in at most ``timeout`` seconds; True when it finished in time.
    Spans still unsent then are dropped (the exporter counts them). Safe to call twice."""
    global _tracer, _provider, _quick
    with _lock:
        current, _provider, _tracer, _quick = _provider, None, None, None
    if current is None:
        return True
    try:
        atexit.unregister(shutdown)
    except Exception:
        pass

    def stop() -> None:
        current.force_flush(int(timeout * 1000 * 0.8))
        current.shutdown()

    finished = _bounded(stop, timeout)
    if not finished:
        log.warning("tracing shutdown did not finish within %.1fs; unsent spans are dropped", timeout)
    return finished


def _bounded(work: Any, timeout: float) -> bool:
    done = threading.Event()

    def run() -> None:
        try:
            work()
        except Exception:
            log.exception("tracing flush failed")
        finally:
            done.set()

    threading.Thread(target=run, name="opsstack-tracing-shutdown", daemon=True).start()
    return done.wait(timeout)
