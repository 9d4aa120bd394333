"""``trace.id`` and ``span.id`` of the active OpenTelemetry span, cheap when there is none."""
from __future__ import annotations

import contextvars
from collections.abc import Callable


def trace_ids_function() -> Callable[[], tuple[str, str] | None] | None:
    """A function returning the hex ``(trace_id, span_id)`` of the current span, or None.

    None when ``opentelemetry-api`` is not installed. Imported here, at enable time, not at the
    import of the package.
    """
    try:
        from opentelemetry.trace import Span, get_current_span
    except ImportError:
        return None

    # The last (span context, ids) pair, swapped as one object: a span often logs many lines.
    last: list = [(None, None)]

    def ids_of(span) -> tuple[str, str] | None:
        context = span.get_span_context()
        cached = last[0]
        if context is cached[0]:
            return cached[1]
        if not context.is_valid:
            return None
        ids = (format(context.trace_id, "032x"), format(context.span_id, "016x"))
        last[0] = (context, ids)
        return ids

    current_context, span_key = _context_variable()
    if current_context is None:
        return lambda: ids_of(get_current_span())

    def current() -> tuple[str, str] | None:
        # get_current_span() without its three layers of calls: most lines are outside any span
        span = current_context.get().get(span_key)
        if span is None:
            return None
        if not isinstance(span, Span):
            return ids_of(get_current_span())
        return ids_of(span)

    return current


def _context_variable() -> tuple[contextvars.ContextVar | None, object]:
    """The ContextVar OpenTelemetry keeps the current context in, and the key of the span in it.

    Both are internals of ``opentelemetry-api``; when they are not where expected (another
    version, a custom ``OTEL_PYTHON_CONTEXT``) the public ``get_current_span()`` is used.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY
    except ImportError:
        return None, None
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is not ContextVarsRuntimeContext or not isinstance(variable, contextvars.ContextVar):
        return None, None
    if variable.get() is not otel_context.get_current():
        return None, None
    return variable, _SPAN_KEY
