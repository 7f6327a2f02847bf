"""The OTLP encoder of ``syncd.telemetry_otlp`` against the SDK's own, and the span-loss counter.

Issue 21: the SDK's exporter cost more CPU per span than a catch-up spends per event, so syncd writes the
protobuf bytes itself. Whatever it writes must parse to exactly what the SDK's encoder builds from the
scrubbed spans (``syncd.telemetry.scrub_span``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from syncd.ops.metrics import render_metrics, span_families
from syncd.telemetry import CountingProcessor, scrub_span
from syncd.telemetry_otlp import encode_request
from syncd.telemetry_spans import COUNTS, continue_trace, root_span_id

SECRET = "sk_test_encoder_secret_77"


def _spans() -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "enc", "replicas": 3}),
                              shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    syncd, other = provider.get_tracer("syncd", "1.2"), provider.get_tracer("opentelemetry.x")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "v1")]))
    attributes: dict[str, Any] = {"s": "plain", "neg": -5, "big": 2**40, "yes": True, "ratio": 1.5, "tags": ("a", "b"),
                  "ids": [1, 2], "flags": (True, False), "url.full": "https://hooks.example/services/T/B/x?k=1",
                  "auth": f"Bearer {SECRET}", "text": "naïve ✓ ümlaut", "empty": ""}
    with syncd.start_as_current_span("event.process", kind=SpanKind.CONSUMER, attributes=attributes,
                                     links=[Link(remote, {"why": "page"}), Link(remote)]) as span:
        span.add_event("exception", {"exception.message": f"token {SECRET} refused", "n": 1})
        span.set_status(Status(StatusCode.ERROR, "failed at https://api.example/v1/secret-path"))
        with other.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={"db.query.text": "SELECT 1"}):
            pass
    child = syncd.start_span("workflow.run", context=trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    child.set_status(Status(StatusCode.OK))
    child.end()
    syncd.start_span("bare").end()
    spans = exporter.get_finished_spans()
    provider.shutdown()
    return spans


def test_the_encoder_writes_what_the_sdk_would_from_scrubbed_spans() -> None:
    spans = _spans()
    ours = encode_request(spans)
    assert ExportTraceServiceRequest.FromString(ours) == encode_spans([scrub_span(s) for s in spans])
    assert ExportTraceServiceRequest.FromString(encode_request(spans)) == ExportTraceServiceRequest.FromString(ours)
    assert SECRET.encode() not in ours and b"secret-path" not in ours and b"services/T" not in ours


def test_an_event_trace_continues_under_its_root() -> None:
    trace_id = 0x0123456789ABCDEF0011223344556677
    parent = trace.get_current_span(continue_trace(format(trace_id, "032x"))).get_span_context()
    assert parent.trace_id == trace_id and parent.span_id == root_span_id(trace_id) == 0x0011223344556677
    assert parent.is_remote and parent.trace_flags.sampled
    assert continue_trace(None) is None and continue_trace("not hex") is None and continue_trace("0" * 32) is None


class _Stuck(SpanExporter):
    """An exporter that holds its first batch until released: the queue behind it fills up."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(5)
        return SpanExportResult.SUCCESS


def test_a_full_queue_counts_its_dropped_spans_in_metrics() -> None:
    stuck = _Stuck()
    processor = CountingProcessor(stuck, max_queue_size=4, max_export_batch_size=2, schedule_delay_millis=1)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    before = COUNTS.dropped
    for _ in range(50):
        tracer.start_span("x").end()
    stuck.release.set()
    provider.shutdown()
    lost = COUNTS.dropped - before
    assert 50 - 4 - 2 <= lost <= 50 - 4  # what the queue (and the batch in the exporter) could not hold
    text = render_metrics(span_families())
    assert "# TYPE syncd_spans_dropped_total counter" in text
    assert f'syncd_spans_dropped_total{{reason="queue_full"}} {COUNTS.dropped}' in text


class _Capture:
    """A span processor keeping what ends (the sink's processor, for one test)."""

    def __init__(self) -> None:
        self.ended: list[object] = []

    def on_end(self, span: object) -> None:
        self.ended.append(span)


def _event_roots(encoded: bool) -> list[object]:
    from datetime import UTC, datetime

    from syncd import telemetry_spans
    from syncd.contracts import Event
    from syncd.engine.tracing import EventTraces

    random.seed(21)  # the same ids both times (the SDK's ids and the event traces' come from random)
    provider = TracerProvider(shutdown_on_exit=False)
    page = provider.get_tracer("t").start_span("page.fetch")
    batch = provider.get_tracer("t").start_span("workflow.batch").get_span_context()
    events = [Event("workos", f"event_{i:04d}", "user.created" if i % 3 else "user.deleted",
                    datetime(2026, 1, 1, tzinfo=UTC), {}) for i in range(7)]
    capture = _Capture()
    telemetry_spans.install(capture, Resource.create({"service.name": "enc"}), encoded=encoded)
    try:
        traces = EventTraces({e.id: page for e in events})
        traces.batched("workos.users", events[:4], batch)
        assert traces.trace_id(events[5], "my.flow") is not None
        traces.finish("RuntimeError: the page transaction rolled back")
    finally:
        telemetry_spans.uninstall()
    return capture.ended


def test_event_roots_encoded_in_one_piece_are_the_spans_the_sdk_would_send() -> None:
    [bundle] = _event_roots(encoded=True)
    spans = _event_roots(encoded=False)
    ours = ExportTraceServiceRequest.FromString(encode_request([bundle]))  # type: ignore[list-item]
    theirs = encode_spans([scrub_span(s) for s in spans])  # type: ignore[arg-type]
    for request in (ours, theirs):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.start_time_unix_nano = span.end_time_unix_nano = 0
    assert len(spans) == 5 and ours == theirs
