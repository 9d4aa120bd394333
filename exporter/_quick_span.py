"""The spans the profiler opens for every operation, at a fraction of the SDK span's cost.

The SDK's span guards itself with a lock, keeps its attributes in a locked ``BoundedAttributes``,
its events and links in two bounded deques, and at ``end()`` copies itself into a
``ReadableSpan`` for the processors: measured in the bot's workload (operations spaced out, so
caches are cold), about 200 µs of the bot's thread per span. A :class:`QuickSpan` is its own
``ReadableSpan``: a plain attribute dict, no event list until an event is added, no copy at the
end. It still goes through the provider's sampler, id generator and span processors, so it is
exported, current and parent like any other span, and the bot's own ``set_attribute`` /
``add_event`` / ``set_status`` / ``record_exception`` on it work as on an SDK span (with the
SDK's attribute and event limits once the bot adds its own).

Imported by ``tracing.setup`` only (it subclasses SDK classes).
"""
from __future__ import annotations

import logging
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ._stacktrace import stacktrace

log = logging.getLogger("exporter.tracing")

_INTERNAL = SpanKind.INTERNAL
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags.SAMPLED
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)  # W3C level 2 flag (0 in SDKs without it)
_FLAGS = tuple(TraceFlags(bits) for bits in range(4))  # the four combinations of the two, made once
_get_current_span = trace.get_current_span
# Samplers whose decision needs no call: always on, or on unless a parent says otherwise.
INLINE_SAMPLERS = frozenset({"always_on", "parentbased_always_on"})


class QuickSpan(trace.Span, ReadableSpan):
    """A recording span that is its own ``ReadableSpan``.

    No lock: the attribute dict and the event list are changed by single operations (atomic
    under the GIL), and a span is ended once by the code that started it; a second ``end()`` is
    ignored, as by the SDK.
    """

    def __init__(self, spans: "QuickSpans", name: str, span_context: SpanContext,
                 parent: SpanContext | None, attributes: dict[str, Any], start_time: int) -> None:
        ReadableSpan.__init__(self, name=name, context=span_context, parent=parent,
                              resource=spans.resource, attributes=attributes, events=(), links=(),
                              kind=_INTERNAL, status=_UNSET, start_time=start_time,
                              instrumentation_scope=spans.scope)
        self._spans = spans

    # -------------------------------------------------------------- the API span
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            log.warning("span %s ended twice; the second end is ignored", self._name)
            return
        self._end_time = end_time if end_time is not None else time_ns()
        self._spans.ended(self)

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Any) -> None:
        """The bot's own attributes: checked and bounded as by the SDK (the profiler's own are
        plain strings, set at the start without this)."""
        if self._end_time is not None:
            return
        bounded = self._attributes
        if not isinstance(bounded, BoundedAttributes):
            limits = self._spans.limits
            bounded = BoundedAttributes(limits.max_span_attributes, bounded, immutable=False,
                                        max_value_len=limits.max_span_attribute_length)
            self._attributes = bounded
        for key, value in attributes.items():
            bounded[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            return
        events = self._events
        if not isinstance(events, BoundedList):
            events = self._events = BoundedList(self._spans.limits.max_events)
        limits = self._spans.limits
        events.append(Event(name, BoundedAttributes(limits.max_event_attributes, attributes,
                                                    max_value_len=limits.max_attribute_length),
                            timestamp if timestamp is not None else time_ns()))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: an OK status is final, UNSET is ignored, a description goes with a code."""
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception: BaseException, attributes: Any = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        """An ``exception`` event with the semantic-convention attributes; the stack trace is
        the stdlib's text without its position markers (see ``_stacktrace``)."""
        kind = type(exception)
        module = kind.__module__
        found = {
            "exception.type": kind.__qualname__ if module in (None, "builtins") else f"{module}.{kind.__qualname__}",
            "exception.message": str(exception),
            "exception.stacktrace": stacktrace(exception),
            "exception.escaped": str(escaped),
        }
        if attributes:
            found.update(attributes)
        self.add_event("exception", found, timestamp)

    def __repr__(self) -> str:
        return f'QuickSpan(name="{self._name}", context={self._context})'


class QuickSpans:
    """Starts :class:`QuickSpan` objects with a tracer's sampler, ids, resource and processors."""

    def __init__(self, tracer: Any, name: str, version: str, sampler_name: str, own: Any = None) -> None:
        """``sampler_name`` (``OTEL_TRACES_SAMPLER``) says whether ``tracer.sampler`` is one of
        the INLINE_SAMPLERS, decided here without calling it (a third of a span's cost).

        ``own``: the provider's only span processor, registered by ``tracing.setup``. While no
        other is added, a QuickSpan goes to it directly rather than through the provider's
        SynchronousMultiSpanProcessor and back (a quarter of a span's cost); the moment another
        processor is added (its tuple of processors is replaced), through the provider again.
        """
        self.sampler = tracer.sampler
        self._inline = sampler_name if sampler_name in INLINE_SAMPLERS else None
        self.ids = tracer.id_generator
        self.resource = tracer.resource
        self.scope = InstrumentationScope(name, version)
        self.limits = SpanLimits()  # the provider's own, from the same OTEL_SPAN_* defaults
        processor = self._chain = tracer.span_processor
        self._on_ending = getattr(processor, "_on_ending", None)  # a hook of newer SDKs
        self._alone = getattr(processor, "_span_processors", None)  # SynchronousMultiSpanProcessor's
        self._own = own if self._alone == (own,) else None
        random_ids = getattr(self.ids, "is_trace_id_random", None)
        self._root_flags = _RANDOM if random_ids is not None and random_ids() else 0

    def start(self, name: str, attributes: dict[str, Any], start_time: int | None = None) -> Any:
        """A started span, child of the current one (not made current); a NonRecordingSpan when
        the sampler drops it."""
        parent = _get_current_span().get_span_context()
        if parent.is_valid:
            trace_id = parent.trace_id
            flags = parent.trace_flags & _RANDOM
        else:
            parent = None
            trace_id = self.ids.generate_trace_id()
            flags = self._root_flags
        inline = self._inline
        if inline is None:
            recording, sampled, trace_state, attributes = self._ask_sampler(trace_id, name, attributes)
        else:  # as the sampler would decide: the parent's trace state, the given attributes
            recording = sampled = inline == "always_on" or parent is None or parent.trace_flags.sampled
            trace_state = None if parent is None else parent.trace_state
        if sampled:
            flags |= _SAMPLED
        span_context = SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False,
                                   trace_flags=_FLAGS[flags], trace_state=trace_state)
        if not recording:
            return NonRecordingSpan(span_context)
        span = QuickSpan(self, name, span_context, parent, attributes,
                         start_time if start_time is not None else time_ns())
        own = self._own
        if own is not None and self._chain._span_processors is self._alone:
            own.on_start(span, parent_context=None)
        else:
            self._chain.on_start(span, parent_context=None)
        return span

    def _ask_sampler(self, trace_id: int, name: str, attributes: dict[str, Any]) -> tuple[bool, bool, Any, dict]:
        """(recording, sampled, trace state, attributes) as the configured sampler decides."""
        result = self.sampler.should_sample(None, trace_id, name, _INTERNAL, attributes, ())
        found = result.attributes
        return (result.decision.is_recording(), result.decision.is_sampled(), result.trace_state,
                attributes if found == attributes else dict(found))

    def start_current(self, name: str, attributes: dict[str, Any]) -> tuple[Any, object]:
        """A started span made current: ``(span, token)`` for :func:`opentelemetry.context.detach`."""
        span = self.start(name, attributes)
        return span, otel_context.attach(trace.set_span_in_context(span))

    def ended(self, span: QuickSpan) -> None:
        own = self._own
        if own is not None and self._chain._span_processors is self._alone:
            own.on_end(span)
            return
        if self._on_ending is not None:
            self._on_ending(span)
        self._chain.on_end(span)
