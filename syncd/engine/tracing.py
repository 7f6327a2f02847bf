"""The engine's spans: their names and attributes in one place (a tick, a page fetch, an event's run)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from syncd.contracts import Event, RunStatus
from syncd.engine.results import TickResult
from syncd.workflows import Workflow

tracer = trace.get_tracer("syncd")


def sync_attributes(key: str, connector_key: str) -> dict[str, Any]:
    """``source.sync``'s attributes at its start."""
    return {"syncd.source": key, "messaging.system": connector_key.split(":", 1)[0],
            "messaging.operation.type": "receive"}


def page_span(key: str, connector_key: str, parent: otel_context.Context) -> trace.Span:
    """A ``page.fetch`` span under ``parent``, started now and left for the caller to end."""
    return tracer.start_span("page.fetch", context=parent, attributes={
        "syncd.source": key, "messaging.system": connector_key.split(":", 1)[0],
        "messaging.operation.type": "receive", "messaging.destination.name": connector_key,
    })


def process_attributes(event: Event) -> dict[str, Any]:
    """``event.process``'s attributes."""
    return {
        "messaging.message.id": event.id, "messaging.operation.type": "process",
        "messaging.system": event.provider, "messaging.destination.name": event.stream,
        "syncd.event.type": event.type, "syncd.stream": event.stream,
    }


def trace_id_of(span_context: trace.SpanContext) -> str | None:
    """The trace id to store with a run (None when tracing is off: the span context is invalid)."""
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def event_spans(wf: Workflow, events: Sequence[Event], batch: trace.SpanContext, start_ns: int,
                end_ns: int, parents: Mapping[str, trace.Span]) -> None:
    """Each event of a batch gets its ``event.process › workflow.run`` spans under its page's span, as a
    per-event run would, so Jaeger finds every event by its id. They cover the batch's time and link to its
    ``workflow.batch``."""
    links = [trace.Link(batch)]
    for event in events:
        process = tracer.start_span("event.process", context=trace.set_span_in_context(parents[event.id]),
                                    kind=SpanKind.CONSUMER, start_time=start_ns, attributes=process_attributes(event))
        run = tracer.start_span("workflow.run", context=trace.set_span_in_context(process), start_time=start_ns,
                                links=links, attributes={
                                    "syncd.workflow": wf.name, "syncd.workflow.version": wf.version,
                                    "syncd.attempt": 1, "syncd.batch": True,
                                    "syncd.outcome": RunStatus.SUCCEEDED.value})
        run.end(end_time=end_ns)
        process.end(end_time=end_ns)


def tick_attributes(result: TickResult) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "syncd.pages": result.pages, "syncd.events": result.events, "syncd.new_events": result.new_events,
        "syncd.runs_failed": result.runs_failed, "syncd.ok": result.ok,
    }
    if result.cursor_before is not None:
        attrs["syncd.cursor.before"] = result.cursor_before
    if result.cursor_after is not None:
        attrs["syncd.cursor.after"] = result.cursor_after
    if result.lag_seconds is not None:
        attrs["syncd.lag_seconds"] = result.lag_seconds
    if result.skipped_reason:
        attrs["syncd.skipped_reason"] = result.skipped_reason
    return attrs
