"""OpenTelemetry set-up: a TracerProvider exporting over OTLP/HTTP (protobuf), plus httpx and SQLAlchemy
instrumentation.

Contract:

- The ``OTEL_*`` variables are read once, by ``syncd.settings.TelemetrySettings`` (a bad value is a
  ``ConfigError`` naming it, before anything is installed).
- ``OTEL_TRACES_EXPORTER`` is only read by auto-instrumentation, so syncd reads it itself: ``otlp``
  (the default when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``…_TRACES_ENDPOINT`` is set), ``console`` or
  ``none`` (the default otherwise). ``OTEL_SDK_DISABLED=true`` means ``none``.
- A collector that is down never fails a tick: spans are exported by a background batch processor,
  and :meth:`Telemetry.shutdown` waits at most ``OTEL_EXPORTER_OTLP_TIMEOUT`` for the last batch.
- No secret reaches an exported span: the httpx instrumentation records no headers unless asked to by
  ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``, and even then credential headers are redacted
  (:data:`SENSITIVE_HEADERS` is always added to the sanitize list). Connectors send credentials only in
  headers, but an integration's URL may be a secret itself (a Slack webhook's path, a key in a query):
  every URL in a span's attributes (``url.full``), event attributes (``exception.message``) and status is
  cut to scheme and host (:func:`syncd.redaction.scrub`) as the OTLP exporter encodes it
  (:mod:`syncd.telemetry_otlp`), or by :class:`ScrubbingExporter` on the console.
- ``OTEL_*`` variables the SDK reads itself (``OTEL_EXPORTER_OTLP_HEADERS`` for a hosted collector, its
  certificates, compression, ``OTEL_RESOURCE_ATTRIBUTES``…) may come from ``.env``: ``syncd.cli`` exports
  them into the process environment before this runs. Header values are never logged; a malformed
  ``…_HEADERS`` is a ``ConfigError`` that does not show the value (the SDK would log it whole).
- Root spans of kind CLIENT (a SQL statement or HTTP call outside any tick: migrations at start-up,
  health probes, workers claiming runs) are dropped, so Jaeger shows ticks and events, not thousands of
  orphan ``SELECT`` traces. Which SQL statements inside them become spans is ``SYNCD_TRACE_SQL``'s choice
  (:mod:`syncd.telemetry_spans`); spans lost on the way are counted there too.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from syncd import telemetry_spans
from syncd.errors import ConfigError
from syncd.payloads import without_emails
from syncd.redaction import scrub as scrub_text
from syncd.settings import TelemetrySettings
from syncd.telemetry_sampling import DEFAULT_CHOICE, SamplerChoice
from syncd.telemetry_spans import COUNTS

log = logging.getLogger("syncd.telemetry")

#: Header names redacted in spans even if someone asks the httpx instrumentation to capture headers.
SENSITIVE_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                     ".*token.*", ".*secret.*", ".*api-key.*")
#: Spans per OTLP request (unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says): four times the SDK's 512, a
#: catch-up's spans in a quarter of the requests (bench/README.md, "T").
EXPORT_BATCH = 2048
_SANITIZE_VAR = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
_SEMCONV_VAR = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: One OTLP header as the SDK's lenient parser takes it: an HTTP token, ``=``, a value.
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+[ \t]*=.*", re.DOTALL)


@dataclass(frozen=True)
class Telemetry:
    """The process's tracing set-up. ``provider`` is None when tracing is off (``exporter == "none"``)."""

    provider: TracerProvider | None
    exporter: str
    timeout: float
    processor: CountingProcessor | None = None  # its queue: the spans given up at a shutdown out of time

    def shutdown(self, timeout: float | None = None) -> bool:
        """Export what is queued and stop. Waits at most ``timeout`` seconds (default: the export
        timeout), even when the collector is down; never raises. True if everything was exported."""
        if self.provider is None:
            return True
        telemetry_spans.uninstall()
        try:
            return self._shutdown(timeout)
        finally:
            if COUNTS.lost:  # the bench and operators read this line; /metrics has the counters
                log.warning("%d span(s) dropped: %d with the export queue full (OTEL_BSP_MAX_QUEUE_SIZE), "
                            "%d refused by or not delivered to the collector", COUNTS.lost, COUNTS.dropped,
                            COUNTS.failed)

    def _shutdown(self, timeout: float | None) -> bool:
        budget = self.timeout if timeout is None else max(0.0, timeout)
        provider = self.provider
        assert provider is not None
        done = threading.Event()

        def stop() -> None:
            try:
                provider.shutdown()  # the batch processor exports its whole queue, then stops
            except Exception as exc:  # a dead collector must never fail shutdown
                log.warning("could not flush spans: %s: %s", type(exc).__name__, exc)
            finally:
                done.set()

        # The SDK's own shutdown may wait up to 30 s for its worker; a daemon thread bounds it. If the
        # budget runs out, the process exits and the unexported spans are dropped.
        threading.Thread(target=stop, name="syncd-telemetry-shutdown", daemon=True).start()
        if done.wait(budget):
            return True
        given_up = self.processor.abandon() if self.processor is not None else 0
        COUNTS.add(failed=given_up)  # lost too: syncd status and the exit line count them
        log.warning("spans not exported within %.1fs (is the collector down?); dropping them", budget)
        return False


class DropOrphanClientSpans(sampling.Sampler):
    """Drops root spans of kind CLIENT; every other decision is ``delegate``'s.

    A SQL or HTTP client span with no parent was made outside a tick (migrations, health probes,
    connection checks) and would be a one-span trace of its own.
    """

    def __init__(self, delegate: sampling.Sampler) -> None:
        self._delegate = delegate

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
                      ) -> sampling.SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind == SpanKind.CLIENT and not parent.is_valid:
            return sampling.SamplingResult(sampling.Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                            trace_state)

    def get_description(self) -> str:
        return f"DropOrphanClientSpans{{{self._delegate.get_description()}}}"


class CountingExporter(SpanExporter):
    """Exports through ``inner``, counting the spans it fails to deliver (``COUNTS.failed``: refused, or an
    exception), and knowing the batch in flight, so that a shutdown out of time counts it as given up
    (:meth:`abandon`): each span is counted once, by whichever comes first."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._flying = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._flying = sum(getattr(span, "count", 1) for span in spans)  # a bundle: all its spans
        result: SpanExportResult | None = None
        try:
            result = self.inner.export(spans)
            return result
        finally:
            with self._lock:
                lost, self._flying = (0 if result is SpanExportResult.SUCCESS else self._flying), 0
            COUNTS.add(failed=lost)

    def abandon(self) -> int:
        """The spans of the batch in flight, now counted as lost by the caller (not here any more)."""
        with self._lock:
            flying, self._flying = self._flying, 0
        return flying

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` that counts the spans it drops because its queue is full."""

    def __init__(self, exporter: SpanExporter, **options: Any) -> None:
        super().__init__(exporter, **options)
        self._counting = exporter if isinstance(exporter, CountingExporter) else None
        # The SDK's queue drops the oldest span when full; it has no public length (a private attribute,
        # read defensively: without it nothing is counted, nothing breaks).
        queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)
        self._queue: Any = queue if queue is not None and getattr(queue, "maxlen", None) else None

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue is not None and len(queue) >= queue.maxlen:
            COUNTS.add(dropped=getattr(queue[-1], "count", 1))  # the oldest goes (a bundle: all its spans)
        super().on_end(span)

    def abandon(self) -> int:
        """Empty the queue (a shutdown out of time) and return how many spans it held. Each item is taken
        with the export thread's own atomic ``pop``, so none is both counted here and exported."""
        queue, spans = self._queue, 0
        while queue is not None:
            try:
                spans += getattr(queue.pop(), "count", 1)
            except IndexError:
                break
        return spans + (self._counting.abandon() if self._counting is not None else 0)




class SqlSampler(sampling.Sampler):
    """Samples SQL statement spans by ``mode`` (``SYNCD_TRACE_SQL``: see :mod:`syncd.telemetry_spans`),
    then as ``delegate`` says."""

    def __init__(self, delegate: sampling.Sampler, mode: str) -> None:
        self._delegate, self._mode = delegate, mode

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
                      ) -> sampling.SamplingResult:
        first_word = name.split(" ", 1)[0].upper()
        if self._mode == "none" or (self._mode == "some" and first_word in telemetry_spans.BOOKKEEPING):
            return sampling.SamplingResult(sampling.Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                            trace_state)

    def get_description(self) -> str:
        return f"SqlSampler{{{self._mode},{self._delegate.get_description()}}}"


class ScrubbingExporter(SpanExporter):
    """Exports through ``inner`` copies of the spans whose text was scrubbed: every string attribute of
    the span and of its events, its name and its status description (:func:`syncd.redaction.scrub`).

    It sits under the batch processor, so the scrubbing happens on the export thread, off the tick.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrub_span(span) for span in spans])  # failures: CountingExporter

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def scrub(text: str) -> str:
    """Span text as it may leave: :func:`syncd.redaction.scrub`, and e-mail addresses masked unless
    ``SYNCD_LOG_PAYLOADS`` is on (``syncd.payloads``)."""
    return without_emails(scrub_text(text))


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with its text scrubbed; ``span`` itself when there was nothing to change."""
    attributes = _scrub_attributes(span.attributes)
    events = [Event(e.name, _scrub_attributes(e.attributes), e.timestamp) for e in span.events]
    description = span.status.description
    status = Status(span.status.status_code, scrub(description)) if description else span.status
    name = scrub(span.name)
    if (attributes == span.attributes and status is span.status and name == span.name
            and all(new.attributes == old.attributes for new, old in zip(events, span.events, strict=True))):
        return span
    return ReadableSpan(name=name, context=span.context, parent=span.parent, resource=span.resource,
                        attributes=attributes, events=events, links=span.links, kind=span.kind, status=status,
                        start_time=span.start_time, end_time=span.end_time,
                        instrumentation_scope=span.instrumentation_scope)


def _scrub_attributes(attributes: Attributes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, str):
            out[key] = scrub(value)
        elif isinstance(value, (tuple, list)) and any(isinstance(v, str) for v in value):
            out[key] = tuple(scrub(v) if isinstance(v, str) else v for v in value)
        else:
            out[key] = value
    return out


def setup_telemetry(settings: TelemetrySettings, *, instrument: bool = True) -> Telemetry:
    """Install the global tracer provider ``settings`` ask for, and (``instrument``) trace httpx
    requests and SQLAlchemy statements of every engine created afterwards. Call once per process,
    before building the App. (Bad ``OTEL_*`` values were already rejected by ``TelemetrySettings``.)"""
    if settings.exporter == "none":
        return Telemetry(provider=None, exporter=settings.exporter, timeout=settings.timeout)
    exporter: SpanExporter
    if settings.exporter == "console":
        exporter = ScrubbingExporter(ConsoleSpanExporter())
    else:
        from syncd.telemetry_otlp import FastOTLPExporter

        check_otlp_headers(os.environ)
        exporter = FastOTLPExporter(endpoint=settings.endpoint, timeout=settings.timeout)  # scrubs as it encodes
    from syncd import __version__

    resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
    provider = TracerProvider(
        resource=resource,
        sampler=DropOrphanClientSpans(settings.sampler.sdk_sampler()),  # OTEL_TRACES_SAMPLER (telemetry_sampling)
        shutdown_on_exit=False,  # Telemetry.shutdown bounds the wait; the SDK's atexit hook would not
    )
    processor = CountingProcessor(CountingExporter(exporter), export_timeout_millis=settings.timeout * 1000,
                                  max_queue_size=settings.max_queue_size,
                                  max_export_batch_size=_export_batch(settings.max_queue_size))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    telemetry_spans.install(processor, resource, encoded=getattr(exporter, "takes_encoded", False),
                            keeps=settings.sampler.keeps)
    if instrument:
        _instrument(settings, sql_provider(provider, resource, settings.sql, settings.sampler))
    log.debug("tracing: exporter %s, service %s", settings.exporter, settings.service_name)
    return Telemetry(provider=provider, exporter=settings.exporter, timeout=settings.timeout, processor=processor)


def _export_batch(queue: int) -> int | None:
    """The batch size to give the SDK: None (it reads OTEL_BSP_MAX_EXPORT_BATCH_SIZE) when that is set,
    else :data:`EXPORT_BATCH`; never more than the queue (the SDK refuses that, with a traceback)."""
    if os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        return None
    return min(EXPORT_BATCH, queue)


def check_otlp_headers(environ: Mapping[str, str]) -> None:
    """ConfigError naming ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`` when it is not ``name=value`` pairs.

    The SDK would log a malformed entry whole, API key included; the error shows no part of the value."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        items = [item.strip() for item in (environ.get(name) or "").split(",")]
        if any(item and not _HEADER.fullmatch(item) for item in items):
            raise ConfigError(name, "expected comma-separated name=value pairs, e.g. x-api-key=… "
                                    "(the value is not shown)")


def sql_provider(provider: TracerProvider, resource: Resource, mode: str,
                 sampler: SamplerChoice = DEFAULT_CHOICE) -> TracerProvider:
    """The tracer provider of SQL statement spans: ``provider``'s pipeline, sampled by ``SYNCD_TRACE_SQL``,
    then by ``sampler``."""
    return TracerProvider(resource=resource, shutdown_on_exit=False,
                          sampler=DropOrphanClientSpans(SqlSampler(sampler.sdk_sampler(), mode)),
                          active_span_processor=provider._active_span_processor)


def _instrument(settings: TelemetrySettings, sql: TracerProvider) -> None:
    # The instrumentations read these from the process environment when they are set up.
    os.environ[_SEMCONV_VAR] = settings.semconv_opt_in
    os.environ[_SANITIZE_VAR] = ",".join(p for p in (settings.sanitize_headers, *SENSITIVE_HEADERS) if p)

    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        HTTPXClientInstrumentor().instrument()
    if settings.sql != "none" and not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        # Patches create_engine: the App's engine, built after this, is traced. No SQL comments: the
        # statements stay cacheable and the spans carry the text.
        SQLAlchemyInstrumentor().instrument(enable_commenter=False, tracer_provider=sql)
