"""The OTLP/protobuf bytes of a batch of spans, written directly: the same bytes as the SDK's
``encode_spans(spans).SerializePartialToString()``, at a fraction of its CPU.

The SDK builds a protobuf message object for every span, attribute and value (keyword arguments
through upb) and then serialises the tree: about 13 us a span in a loop, more than a third of
what the export thread spent on a span at one request a second (35-37 us). The wire format of a
span is a few tagged fields, so here each is written as bytes. What this does not write (links,
a value that is not a string, bool, int, float or None, an int outside int64) makes
:func:`encode` return None, and the caller encodes that batch with the SDK. ``tests/test_otlp_encode.py`` compares the bytes
with the SDK's.
"""
from __future__ import annotations

from struct import Struct
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

_FIXED64 = Struct("<Q").pack
_DOUBLE = Struct("<d").pack
_FIXED32 = Struct("<I").pack
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags masks
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE)  # field 16 (fixed32): a local or no parent
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)


# SpanKind INTERNAL (0) ... CONSUMER (4) is the protobuf's SPAN_KIND_INTERNAL (1) ... (field 6)
_KINDS = {kind: bytes((0x30, kind.value + 1)) for kind in SpanKind}
_CODES = {code: (bytes((0x18, code.value)) if code.value else b"") for code in StatusCode}  # Status.code (field 3)


class Unsupported(Exception):
    """Something :func:`encode` does not write: the SDK's encoder is used for the batch."""


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the key byte: field number << 3 | 2)."""
    size = len(payload)
    return (bytes((tag, size)) if size < 0x80 else bytes((tag,)) + _varint(size)) + payload


def _value(value: Any) -> bytes:
    """An AnyValue message (its oneof field is written even when it holds the default)."""
    if value is None:
        return b""
    kind = type(value)
    if kind is str:
        return _field(0x0A, value.encode("utf-8"))
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Unsupported("an int outside int64")
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if kind is float:
        return b"\x21" + _DOUBLE(value)
    raise Unsupported(f"a {kind.__name__} value")


def _attributes(tag: int, attributes: Any) -> bytes:
    """The KeyValue fields (number ``tag >> 3``) of ``attributes``; a string pair seen lately
    (the profiler's ``code.function.name``, a resource's) is taken from :data:`_SEEN`."""
    if not attributes:
        return b""
    out = []
    seen = _SEEN
    for key, value in attributes.items():
        if type(value) is str:  # only strings: (k, 1), (k, 1.0) and (k, True) are equal keys
            encoded = seen.get((key, value))
            if encoded is None:
                encoded = _key_value(key, value)
                if len(seen) >= _SEEN_MAX:
                    seen.clear()
                seen[(key, value)] = encoded
        else:
            encoded = _key_value(key, value)
        out.append(_field(tag, encoded))
    return b"".join(out)


def _key_value(key: str, value: Any) -> bytes:
    return (_field(0x0A, key.encode("utf-8")) if key else b"") + _field(0x12, _value(value))


_SEEN: dict[tuple[str, str], bytes] = {}  # (key, value): its KeyValue message (one thread exports)
_SEEN_MAX = 512


def _event(event: Any) -> bytes:
    out = b"\x09" + _FIXED64(event.timestamp)
    if event.name:
        out += _field(0x12, event.name.encode("utf-8"))
    out += _attributes(0x1A, event.attributes)
    if event.dropped_attributes:
        out += b"\x20" + _varint(event.dropped_attributes)
    return out


def _span(span: Any) -> bytes:
    if span.links:
        raise Unsupported("links")
    context = span.context
    out = b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big")
    trace_state = context.trace_state
    if trace_state:
        out += _field(0x1A, ",".join(f"{key}={value}" for key, value in trace_state.items()).encode("utf-8"))
    parent = span.parent
    if parent is not None:
        out += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
    name = span.name.encode("utf-8")
    if name:
        out += _field(0x2A, name)
    out += _KINDS[span.kind] + b"\x39" + _FIXED64(span.start_time) + b"\x41" + _FIXED64(span.end_time)
    out += _attributes(0x4A, span.attributes)
    if span.dropped_attributes:
        out += b"\x50" + _varint(span.dropped_attributes)
    for event in span.events:
        out += _field(0x5A, _event(event))
    if span.dropped_events:
        out += b"\x60" + _varint(span.dropped_events)
    status = span.status
    if status.status_code is StatusCode.UNSET and status.description is None:
        out += b"\x7a\x00"
    else:
        code = _CODES[status.status_code]
        message = b"" if status.description is None else _field(0x12, status.description.encode("utf-8"))
        out += _field(0x7A, message + code)
    return out + (_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    out = _field(0x0A, scope.name.encode("utf-8")) if scope.name else b""
    if scope.version:
        out += _field(0x12, scope.version.encode("utf-8"))
    return out + _attributes(0x1A, scope.attributes)


def encode(spans: Any) -> bytes | None:
    """The ExportTraceServiceRequest of ``spans``, grouped by resource and scope as the SDK does
    (in the order each first appears); None when a span holds something not written here."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    try:
        for span in spans:
            scope = span.instrumentation_scope or None
            groups.setdefault(span.resource, {}).setdefault(scope, []).append(_field(0x12, _span(span)))
        out = []
        for resource, scopes in groups.items():
            body = _field(0x0A, _attributes(0x0A, resource.attributes))
            for scope, encoded in scopes.items():
                scope_spans = _field(0x0A, _scope(scope)) + b"".join(encoded)
                if scope is not None and scope.schema_url:
                    scope_spans += _field(0x1A, scope.schema_url.encode("utf-8"))
                body += _field(0x12, scope_spans)
            if resource.schema_url:
                body += _field(0x1A, resource.schema_url.encode("utf-8"))
            out.append(_field(0x0A, body))
    except (Unsupported, UnicodeEncodeError, AttributeError, TypeError):
        return None
    return b"".join(out)


def quick_encoding(base: type) -> type:
    """``base`` (the SDK's OTLP/HTTP span exporter) sending the batches :func:`encode` writes,
    the SDK's own export for the others (and a batch past ``max_request_size``, which it drops
    and counts). An SDK without the parts used here (its HTTP client and export metrics, from
    1.4x) exports every batch itself."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    class QuickEncodingSpanExporter(base):
        def export(self, spans: Any) -> Any:
            client, metrics = getattr(self, "_client", None), getattr(self, "_metrics", None)
            if getattr(self, "_shutdown", True) or client is None or metrics is None:
                return super().export(spans)
            body = encode(spans)
            if body is None or 0 < getattr(self, "_max_request_size", 0) < len(body):
                return super().export(spans)
            with metrics.export_operation(len(spans)) as result:
                sent = client.export(body)
                if not sent.success:
                    result.error = sent.error
                    if sent.status_code is not None:
                        result.error_attrs = {"http.response.status_code": sent.status_code}
                    return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

    return QuickEncodingSpanExporter
