"""The parts of the span pipeline syncd shapes itself: event traces' ids, spans built without the SDK's
per-span machinery, which SQL statements become spans, and how many spans were lost.

Contract:

- **Event traces.** An event's trace has a root span (``event.process``) whose span id is the low 64 bits
  of its trace id (:func:`root_span_id`). So a run row stores only the trace id (``syncd_runs.trace_id``)
  and every later attempt of the run, on any replica, continues the trace under that root
  (:func:`continue_trace`). Whether an event trace is sampled is decided by its trace id alone
  (:func:`kept`: ``OTEL_TRACES_SAMPLER``, :mod:`syncd.telemetry_sampling`), so every attempt reaches the
  same decision as the root.
- **Emitted spans.** :func:`emit` hands finished spans built by the engine straight to the export
  pipeline, and :func:`emit_encoded` spans encoded already (the ``event.process`` roots of a page
  transaction, in one piece: see :mod:`syncd.telemetry_wire`), at a small part of the cost of spans
  started through the SDK; both are no-ops unless :func:`install` was called (``setup_telemetry``), and
  :func:`emitting` says so.
- **SQL spans** (``SYNCD_TRACE_SQL``): ``some`` (the default) keeps the statements that explain something
  — a page's ledger insert, run insert and cursor move, a lease claim, a run's own and its user's
  statements — and drops the transaction bookkeeping (``SAVEPOINT``, ``RELEASE``, ``ROLLBACK TO``,
  ``BEGIN``, ``COMMIT``, ``PRAGMA``); ``all`` keeps every statement; ``none`` makes no SQL span.
- **Lost spans** are counted (:data:`COUNTS`): ``dropped`` when the export queue was full
  (``OTEL_BSP_MAX_QUEUE_SIZE``), ``failed`` when the collector refused or could not be reached.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:  # the SDK is imported by syncd.telemetry, only when tracing is on
    from opentelemetry.sdk.trace import ReadableSpan

_MASK64 = (1 << 64) - 1
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = trace.Status(trace.StatusCode.UNSET)
#: First words of the statements ``SYNCD_TRACE_SQL=some`` makes no span for: transaction bookkeeping.
BOOKKEEPING = frozenset({"SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT", "PRAGMA"})


def root_span_id(trace_id: int) -> int:
    """The span id of the root of the event trace ``trace_id`` (never 0, which would be invalid)."""
    return (trace_id & _MASK64) or 1


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def root_context(trace_id: int) -> SpanContext:
    """The span context of the root (``event.process``) of the event trace ``trace_id``."""
    return SpanContext(trace_id, root_span_id(trace_id), is_remote=False, trace_flags=_flags(trace_id))


def _keep_all(_trace_id: int) -> bool:
    return True


#: The sampler's decision for an event trace (``install``): every trace until told otherwise.
_keeps: Callable[[int], bool] = _keep_all


def kept(trace_id: int) -> bool:
    """Whether the event trace ``trace_id`` is sampled (``OTEL_TRACES_SAMPLER``, decided by the id alone)."""
    return _keeps(trace_id)


def _flags(trace_id: int) -> TraceFlags:
    return SAMPLED if _keeps(trace_id) else _NOT_SAMPLED


def continue_trace(trace_id_hex: str | None) -> Context | None:
    """A context whose current span is the root of the stored event trace ``trace_id_hex``, for a later
    attempt of its run to start under; None when there is none (or it is not a trace id)."""
    if not trace_id_hex:
        return None
    try:
        trace_id = int(trace_id_hex, 16)
    except ValueError:
        return None
    if not 0 < trace_id <= (1 << 128) - 1:
        return None
    parent = SpanContext(trace_id, root_span_id(trace_id), is_remote=True, trace_flags=_flags(trace_id))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())


# ---- spans built by the engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sink:
    processor: Any  # an SDK SpanProcessor
    resource: Any  # the SDK Resource of every span
    scope: Any  # the SDK InstrumentationScope "syncd"
    span_class: Any  # the SDK's ReadableSpan
    encoded: bool  # the exporter takes spans encoded already (syncd.telemetry_wire.EncodedSpans)


_sink: _Sink | None = None


def install(processor: Any, resource: Any, *, encoded: bool = False,
            keeps: Callable[[int], bool] = _keep_all) -> None:
    """Where :func:`emit` sends spans (``setup_telemetry``, once per process); ``encoded``: its exporter
    takes :class:`syncd.telemetry_wire.EncodedSpans` (OTLP), so :func:`emit_encoded` may be used;
    ``keeps``: which event traces are sampled (:meth:`syncd.telemetry_sampling.SamplerChoice.keeps`)."""
    global _sink, _keeps
    _keeps = keeps
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from syncd import __version__

    _sink = _Sink(processor, resource, InstrumentationScope("syncd", __version__), ReadableSpan, encoded)


def uninstall() -> None:
    global _sink, _keeps
    _sink, _keeps = None, _keep_all


def emitting() -> bool:
    """True when spans built by the engine go somewhere (syncd's own tracing set-up is installed)."""
    return _sink is not None


def make_span(name: str, context: SpanContext, *, parent: SpanContext | None, kind: SpanKind,
              attributes: Attributes, links: Sequence[Link], start_ns: int, end_ns: int,
              status: trace.Status | None = None) -> ReadableSpan | None:
    """A finished span as the SDK would export it (None when nothing is installed)."""
    sink = _sink
    if sink is None:
        return None
    span: ReadableSpan = sink.span_class(
        name=name, context=context, parent=parent, resource=sink.resource, attributes=attributes, links=links,
        kind=kind, start_time=start_ns, end_time=end_ns, status=status or _UNSET, instrumentation_scope=sink.scope)
    return span


def encodes() -> bool:
    """True when spans may be handed over encoded already (:func:`emit_encoded`)."""
    sink = _sink
    return sink is not None and sink.encoded


def emit_encoded(payload: bytes, count: int) -> None:
    """Queue ``count`` spans of syncd's scope, encoded as ``ScopeSpans.spans`` fields, for export."""
    sink = _sink
    if sink is None or not sink.encoded or not count:
        return
    from syncd.telemetry_wire import EncodedSpans

    sink.processor.on_end(EncodedSpans(payload, count, sink.resource, sink.scope))


def emit(spans: Sequence[ReadableSpan]) -> None:
    """Queue finished ``spans`` for export, as if they had just ended."""
    sink = _sink
    if sink is None:
        return
    on_end = sink.processor.on_end
    for span in spans:
        on_end(span)


# ---- lost spans ---------------------------------------------------------------------------------


class SpanCounts:
    """Spans lost since the process started: ``dropped`` (the export queue was full), ``failed`` (the
    collector refused them or could not be reached). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dropped = 0
        self.failed = 0

    def add(self, *, dropped: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.dropped += dropped
            self.failed += failed

    @property
    def lost(self) -> int:
        return self.dropped + self.failed


COUNTS = SpanCounts()


def attach(ctx: Context | None) -> object | None:
    """``otel_context.attach(ctx)`` when there is one; pair with :func:`detach`."""
    return otel_context.attach(ctx) if ctx is not None else None


def detach(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]
