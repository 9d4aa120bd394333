"""The profiler's QuickSpans: exported, current, parent and sampled as SDK spans are, and the
bot's own changes to them bounded by the same limits."""
from __future__ import annotations

import pytest

from exporter import tracing
from exporter.config import default_settings
from exporter.profiler import Profiler


@pytest.fixture
def exported(request):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    changes = getattr(request, "param", {})
    tracing.setup(default_settings().replace(ENABLE_TRACING=True, OTEL_SERVICE_NAME="test-bot", **changes),
                  span_exporter=memory)
    yield memory
    tracing.shutdown()


def _profiler() -> Profiler:
    profiler = Profiler(default_settings().replace(ENABLE_PROFILER=True))
    profiler.enable()
    return profiler


def _finished(memory) -> dict:
    tracing.force_flush()
    return {span.name: span for span in memory.get_finished_spans()}


def test_a_profiled_block_is_a_current_span_that_parents_and_exports(exported):
    from opentelemetry import trace

    from exporter.logger_manager._trace import trace_ids_function

    ids = trace_ids_function()
    with _profiler().profile_sync("download"):
        current = trace.get_current_span()
        in_block = ids()
        with tracing.span("download.chunk", size_bytes=3):
            pass
        current.set_attribute("bot.peer", "dc4")
        current.add_event("retry", {"attempt": 2})
    assert ids() is None
    spans = _finished(exported)
    block, chunk = spans["download"], spans["download.chunk"]
    assert in_block == (format(block.context.trace_id, "032x"), format(block.context.span_id, "016x"))
    assert chunk.parent.span_id == block.context.span_id and chunk.context.trace_id == block.context.trace_id
    assert block.parent is None and block.kind.name == "INTERNAL" and block.status.status_code.name == "UNSET"
    assert dict(block.attributes) == {"code.function.name": "download", "bot.peer": "dc4"}
    assert [(event.name, dict(event.attributes)) for event in block.events] == [("retry", {"attempt": 2})]
    assert block.start_time < chunk.start_time < chunk.end_time < block.end_time
    assert block.resource is chunk.resource and block.resource.attributes["service.name"] == "test-bot"
    assert block.instrumentation_scope == chunk.instrumentation_scope
    assert block.context.trace_flags.sampled and not block.is_recording()


def test_it_encodes_to_otlp_as_the_sdk_span_with_the_same_content(exported):
    """The OTLP request of a QuickSpan and of an SDK span made of the same data are the same."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan

    with pytest.raises(ValueError):
        with _profiler().profile_sync("parse"):
            raise ValueError("bad update")
    quick = _finished(exported)["parse"]
    same = ReadableSpan(name=quick.name, context=quick.context, parent=quick.parent, resource=quick.resource,
                        attributes=dict(quick.attributes), events=tuple(quick.events), links=(),
                        kind=quick.kind, status=quick.status, start_time=quick.start_time,
                        end_time=quick.end_time, instrumentation_scope=quick.instrumentation_scope)
    assert encode_spans([quick]).SerializeToString() == encode_spans([same]).SerializeToString()
    assert quick.status.status_code.name == "ERROR" and quick.status.description == "bad update"
    assert quick.attributes["error.type"] == "ValueError"
    (event,) = quick.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "bad update"
    assert 'raise ValueError("bad update")' in event.attributes["exception.stacktrace"]


def test_the_status_follows_the_sdks_rules(exported):
    from opentelemetry.trace import Status, StatusCode

    with _profiler().profile_sync("ok"):
        from opentelemetry import trace

        current = trace.get_current_span()
        current.set_status(StatusCode.UNSET)
        current.set_status(Status(StatusCode.OK))
        current.set_status(StatusCode.ERROR, "ignored: OK is final")
        current.update_name("ok.renamed")
    assert _finished(exported)["ok.renamed"].status.status_code is StatusCode.OK


def test_a_second_end_and_later_changes_are_ignored(exported, caplog):
    quick = tracing._quick.start("once", {"code.function.name": "once"})
    quick.end(end_time=quick.start_time + 5)
    quick.end()
    quick.set_attribute("late", 1)
    quick.add_event("late")
    (span,) = _finished(exported).values()
    assert span.end_time == span.start_time + 5 and "late" not in span.attributes and span.events == ()
    assert "ended twice" in caplog.text


def test_the_bots_attributes_and_events_keep_the_sdks_limits(monkeypatch):
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    memory = InMemorySpanExporter()
    tracing.setup(default_settings().replace(ENABLE_TRACING=True), span_exporter=memory)
    try:
        with _profiler().profile_sync("busy"):
            current = trace.get_current_span()
            current.set_attributes({"a": 1, "b": [1, 2], "c": 3})
            current.add_event("one")
            current.add_event("two")
        (span,) = _finished(memory).values()
    finally:
        tracing.shutdown()
    assert len(span.attributes) == 2 and span.dropped_attributes == 2
    assert [event.name for event in span.events] == ["two"] and span.dropped_events == 1  # the oldest go, as in the SDK


@pytest.mark.parametrize("exported", [{"OTEL_TRACES_SAMPLER": "always_off"},
                                      {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                       "OTEL_TRACES_SAMPLER_ARG": "0"}], indirect=True)
def test_a_sampler_that_drops_makes_no_span_and_no_trace_id(exported):
    with _profiler().profile_sync("dropped"):
        assert tracing.current_trace_id() is None
    tracing.record_span("bot.download", 1.0, task_id="t1")
    assert _finished(exported) == {}


def test_under_a_parent_that_was_not_sampled_nothing_is_recorded(exported):
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(0x1234, 0x99, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        with _profiler().profile_sync("child"):
            current = trace.get_current_span().get_span_context()
            assert not current.trace_flags.sampled and current.trace_id == 0x1234
    finally:
        context.detach(token)
    sampled = SpanContext(0x5678, 0x98, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(sampled)))
    try:
        with _profiler().profile_sync("sampled child"):
            pass
    finally:
        context.detach(token)
    (span,) = _finished(exported).values()
    assert span.name == "sampled child" and span.parent.span_id == 0x98 and span.context.trace_id == 0x5678


def test_a_processor_the_bot_adds_later_sees_them_too(exported):
    """Ours alone, a span goes straight to it; once the bot adds one, through the provider's chain."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    profiler = _profiler()
    with profiler.profile_sync("before"):
        pass
    added = InMemorySpanExporter()
    tracing.provider().add_span_processor(SimpleSpanProcessor(added))
    with profiler.profile_sync("after"):
        pass
    assert sorted(_finished(exported)) == ["after", "before"]
    assert [span.name for span in added.get_finished_spans()] == ["after"]


def _nest_and_check(profiler) -> None:
    """Nested blocks under an SDK span and around another: each block's span is current inside
    it, parented by what was current, and the context after it is the very one before it."""
    from opentelemetry import context, trace

    before = context.get_current()
    with tracing.span("request"):
        outer_context = context.get_current()
        with profiler.profile_sync("outer"):
            outer = trace.get_current_span()
            with profiler.profile_sync("inner"):
                assert trace.get_current_span().get_span_context().trace_id == outer.get_span_context().trace_id
                with tracing.span("chunk"):
                    pass
            assert trace.get_current_span() is outer
        assert context.get_current() is outer_context
    assert context.get_current() is before


def test_spans_nest_and_the_context_comes_back_the_same(exported):
    """Blocks nested with SDK spans, and blocks of two asyncio tasks at once: each parent is
    what was current, and each task sees its own span after the other ran."""
    import asyncio

    profiler = _profiler()
    _nest_and_check(profiler)

    async def task(name: str) -> tuple[int, int]:
        from opentelemetry import trace

        async with profiler.profile_async(name):
            mine = trace.get_current_span().get_span_context().span_id
            await asyncio.sleep(0.01)  # the other task runs its block meanwhile
            return mine, trace.get_current_span().get_span_context().span_id

    async def both() -> list:
        return await asyncio.gather(task("a"), task("b"))

    for mine, after_switch in asyncio.run(both()):
        assert mine == after_switch
    spans = _finished(exported)
    request, outer, inner, chunk = spans["request"], spans["outer"], spans["inner"], spans["chunk"]
    assert outer.parent.span_id == request.context.span_id and inner.parent.span_id == outer.context.span_id
    assert chunk.parent.span_id == inner.context.span_id
    assert len({span.context.trace_id for span in (request, outer, inner, chunk)}) == 1
    assert spans["a"].parent is None and spans["b"].parent is None
    assert spans["a"].context.trace_id != spans["b"].context.trace_id
    for span in spans.values():
        assert span.context.is_valid and span.context.trace_state is not None
        assert 0 < span.context.span_id < 2**64 and 0 < span.context.trace_id < 2**128

