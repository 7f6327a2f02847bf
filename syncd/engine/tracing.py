"""The engine's spans: their names and attributes in one place (a tick, a page fetch, an event's trace).

Two kinds of trace: a tick's (``syncd.tick › source.sync › page.fetch › (GET, page.transaction › SQL,
workflow.batch)``) and an event's (``event.process`` › one ``workflow.run`` per attempt of each of its runs ›
steps, SQL), linked to the ``page.fetch`` that brought the event. See README, "Tracing"."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from syncd import telemetry_spans, telemetry_wire
from syncd.contracts import Event
from syncd.engine.results import TickResult

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


class EventTraces:
    """The ``event.process`` spans of one page transaction: each event given a run here starts a trace of
    its own, linked to the ``page.fetch`` span that brought it (the tick's trace keeps the fetches and the
    page transactions). A queued run stores the trace id (``syncd_runs.trace_id``), and its attempts join
    the trace under that root (``syncd.telemetry_spans.continue_trace``); an inline run and a batch's
    fallback run under it now (``context``). A batch workflow's events get no span each beyond their root:
    it links to the ``workflow.batch`` span. The spans are built and queued in ``finish``, without the SDK's
    per-span machinery; all of this is a no-op when tracing is off."""

    def __init__(self, pages: Mapping[str, trace.Span]) -> None:
        self._pages = pages
        first = next(iter(pages.values()), None)
        page = first.get_span_context() if first is not None else trace.INVALID_SPAN_CONTEXT
        # Not only when the tick's trace is sampled: each event's trace is sampled on its own id
        # (syncd.telemetry_sampling), and its id is stored and logged either way.
        self.on = page.is_valid and telemetry_spans.emitting()
        self._roots: dict[str, tuple[Event, int, list[str], list[trace.Link]]] = {}
        self._links: dict[int, trace.Link] = {}  # one link per page span, shared by its events
        self._start_ns = time.time_ns()

    def _root(self, event: Event) -> tuple[Event, int, list[str], list[trace.Link]]:
        root = self._roots.get(event.id)
        if root is None:
            page = self._pages[event.id]
            link = self._links.get(id(page))
            if link is None:
                link = self._links[id(page)] = trace.Link(page.get_span_context())
            # a link to a page whose trace was not kept would lead nowhere
            links = [link] if link.context.trace_flags.sampled else []
            root = self._roots[event.id] = (event, telemetry_spans.new_trace_id(), [], links)
        return root

    def trace_id(self, event: Event, workflow: str) -> str | None:
        """The trace id a run of ``workflow`` on ``event`` stores (None when tracing is off)."""
        if not self.on:
            return None
        _, trace_id, workflows, _ = self._root(event)
        workflows.append(workflow)
        return format(trace_id, "032x")

    def context(self, event: Event, workflow: str) -> otel_context.Context | None:
        """The context to run ``workflow`` on ``event`` under now (None when tracing is off)."""
        trace_id = self.trace_id(event, workflow)
        return telemetry_spans.continue_trace(trace_id)

    def batched(self, workflow: str, events: Sequence[Event], batch: trace.SpanContext) -> None:
        """``events`` were applied by ``workflow``'s batch, whose span is ``batch``."""
        if not self.on:
            return
        link, roots, root = trace.Link(batch), self._roots, self._root
        linked = batch.trace_flags.sampled  # as for pages: no link into a trace that was not kept
        for event in events:
            _, _, workflows, links = roots.get(event.id) or root(event)
            workflows.append(workflow)
            if linked:
                links.append(link)

    @contextmanager
    def finishing(self) -> Iterator[None]:
        """``finish`` when the block ends: with the error if it raised."""
        try:
            yield
        except BaseException as exc:
            self.finish(f"{type(exc).__name__}: the page transaction rolled back")
            raise
        self.finish()

    def finish(self, error: str | None = None) -> None:
        """End every root now (with ``error``: the transaction failed, the runs it gave were not stored)."""
        if not self.on or not self._roots:
            return
        end_ns = time.time_ns()
        if telemetry_spans.encodes():
            self._finish_encoded(end_ns, error)
            return
        status = trace.Status(trace.StatusCode.ERROR, error) if error else None
        spans = []
        kept = telemetry_spans.kept
        for event, trace_id, workflows, links in self._roots.values():
            if not kept(trace_id):
                continue
            attributes = process_attributes(event)
            attributes["syncd.workflows"] = tuple(workflows)
            span = telemetry_spans.make_span(
                "event.process", telemetry_spans.root_context(trace_id), parent=None, kind=SpanKind.CONSUMER,
                attributes=attributes, links=links, start_ns=self._start_ns, end_ns=end_ns, status=status)
            if span is not None:
                spans.append(span)
        self._roots.clear()
        telemetry_spans.emit(spans)

    def _finish_encoded(self, end_ns: int, error: str | None) -> None:
        """As ``finish``, the spans encoded here in one piece: the same attributes (in the same order) and
        links, written once for all the events that share them."""
        shared: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}
        rows = []
        kept = telemetry_spans.kept
        for event, trace_id, workflows, links in self._roots.values():
            if not kept(trace_id):
                continue
            key = (event.type, event.stream, tuple(workflows))
            common = shared.get(key)
            if common is None:
                common = shared[key] = process_attributes(event)
                del common["messaging.message.id"]
                common["syncd.workflows"] = key[2]
            rows.append((trace_id, telemetry_spans.root_span_id(trace_id), {"messaging.message.id": event.id},
                         common, links))
        self._roots.clear()
        if not rows:
            return
        status = (trace.StatusCode.ERROR.value, error) if error else None
        telemetry_spans.emit_encoded(telemetry_wire.encode_roots(
            "event.process", SpanKind.CONSUMER.value, self._start_ns, end_ns, rows, status), len(rows))


def attempt_context(event: Event, stored_trace_id: str | None) -> tuple[otel_context.Context | None, Any]:
    """Where a worker's attempt of a run on ``event`` starts its ``workflow.run``: under the root of the
    trace stored on the run, or (none stored: enqueued while tracing was off) under a new root, returned
    second, for the caller to ``end`` when the attempt does. ``(None, None)`` when tracing is off."""
    parent = telemetry_spans.continue_trace(stored_trace_id)
    if parent is not None or not telemetry_spans.emitting():
        return parent, None
    root = _LateRoot(event)
    return telemetry_spans.continue_trace(format(root.trace_id, "032x")), root


class _LateRoot:
    """The root of an event trace begun by a worker (its run was enqueued while tracing was off)."""

    def __init__(self, event: Event) -> None:
        self.event, self.trace_id, self.start_ns = event, telemetry_spans.new_trace_id(), time.time_ns()

    def end(self) -> None:
        if not telemetry_spans.kept(self.trace_id):
            return
        span = telemetry_spans.make_span(
            "event.process", telemetry_spans.root_context(self.trace_id), parent=None, kind=SpanKind.CONSUMER,
            attributes=process_attributes(self.event), links=(), start_ns=self.start_ns, end_ns=time.time_ns())
        if span is not None:
            telemetry_spans.emit([span])


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
