"""OpenTelemetry set-up: a TracerProvider exporting over OTLP/HTTP (protobuf), plus httpx and SQLAlchemy
instrumentation.

Contract:

- ``OTEL_TRACES_EXPORTER`` is only read by auto-instrumentation, so syncd reads it itself: ``otlp``
  (the default when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``…_TRACES_ENDPOINT`` is set), ``console`` or
  ``none`` (the default otherwise). ``OTEL_SDK_DISABLED=true`` means ``none``.
- A collector that is down never fails a tick: spans are exported by a background batch processor,
  and :meth:`Telemetry.shutdown` waits at most ``OTEL_EXPORTER_OTLP_TIMEOUT`` for the last batch.
- No secret reaches an exported span: the httpx instrumentation records no headers unless asked to by
  ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``, and even then credential headers are redacted
  (:data:`SENSITIVE_HEADERS` is always added to the sanitize list). Connectors send credentials only in
  headers, never in URLs.
- Root spans of kind CLIENT (a SQL statement or HTTP call outside any tick: migrations at start-up,
  health probes) are dropped, so Jaeger shows ticks, not thousands of orphan ``SELECT`` traces.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from syncd.errors import ConfigError
from syncd.settings import get_float, get_int, get_str

log = logging.getLogger("syncd.telemetry")

EXPORTERS = ("otlp", "console", "none")
DEFAULT_TIMEOUT_SECONDS = 5.0
#: Above this, ``OTEL_EXPORTER_OTLP_TIMEOUT`` is read as milliseconds (the spec's unit; the Python SDK
#: reads seconds, so both are met in the wild).
MILLISECONDS_ABOVE = 60.0
#: Header names redacted in spans even if someone asks the httpx instrumentation to capture headers.
SENSITIVE_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                     ".*token.*", ".*secret.*", ".*api-key.*")
_SANITIZE_VAR = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
_SEMCONV_VAR = "OTEL_SEMCONV_STABILITY_OPT_IN"


@dataclass(frozen=True)
class Telemetry:
    """The process's tracing set-up. ``provider`` is None when tracing is off (``exporter == "none"``)."""

    provider: TracerProvider | None
    exporter: str
    timeout: float

    def shutdown(self, timeout: float | None = None) -> bool:
        """Export what is queued and stop. Waits at most ``timeout`` seconds (default: the export
        timeout), even when the collector is down; never raises. True if everything was exported."""
        if self.provider is None:
            return True
        budget = self.timeout if timeout is None else max(0.0, timeout)
        provider = self.provider
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


def exporter_name(environ: Mapping[str, str]) -> str:
    """Which exporter the environment asks for: ``otlp``, ``console`` or ``none``."""
    if (get_str(environ, "OTEL_SDK_DISABLED", "false") or "").lower() == "true":
        return "none"
    name = get_str(environ, "OTEL_TRACES_EXPORTER")
    if name is None:
        return "otlp" if _endpoint_given(environ) else "none"
    name = name.lower()
    if name not in EXPORTERS:
        raise ConfigError("OTEL_TRACES_EXPORTER", f"expected otlp, console or none, got {name!r}")
    return name


def export_timeout(environ: Mapping[str, str]) -> float:
    """``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds (values above 60 are taken as milliseconds)."""
    timeout = get_float(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_TIMEOUT_SECONDS, minimum=0.1)
    return timeout / 1000 if timeout > MILLISECONDS_ABOVE else timeout


def traces_endpoint(environ: Mapping[str, str]) -> str:
    """The OTLP/HTTP traces URL: ``…_TRACES_ENDPOINT`` as given, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` +
    ``/v1/traces`` (default ``http://localhost:4318``)."""
    name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    url = get_str(environ, name)
    if url is None:
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        base = get_str(environ, name, "http://localhost:4318") or ""
        url = base.rstrip("/") + "/v1/traces"
    if not url.startswith(("http://", "https://")):
        raise ConfigError(name, f"expected an http(s):// URL (OTLP over HTTP, e.g. http://jaeger:4318), "
                                f"got {url!r}")
    return url


#: Spans waiting for export. A catch-up transaction of 3,000 events ends about 6,000 spans at once (an
#: ``event.process`` and a ``workflow.run`` each); the SDK's default queue of 2,048 dropped most of them.
#: Only while tracing; ``OTEL_BSP_MAX_QUEUE_SIZE`` overrides it.
SPAN_QUEUE = 16_384


def setup_telemetry(environ: Mapping[str, str], *, instrument: bool = True) -> Telemetry:
    """Install the global tracer provider the environment asks for, and (``instrument``) trace httpx
    requests and SQLAlchemy statements of every engine created afterwards. Call once per process,
    before building the App. Raises ConfigError for a bad exporter name or endpoint."""
    name = exporter_name(environ)
    timeout = export_timeout(environ)
    if name == "none":
        return Telemetry(provider=None, exporter=name, timeout=timeout)
    exporter: SpanExporter
    if name == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_endpoint(environ), timeout=timeout)
    service = get_str(environ, "OTEL_SERVICE_NAME", "syncd") or "syncd"
    from syncd import __version__

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": __version__}),
        sampler=DropOrphanClientSpans(_configured_sampler()),
        shutdown_on_exit=False,  # Telemetry.shutdown bounds the wait; the SDK's atexit hook would not
    )
    provider.add_span_processor(BatchSpanProcessor(
        exporter, export_timeout_millis=timeout * 1000,
        max_queue_size=get_int(environ, "OTEL_BSP_MAX_QUEUE_SIZE", SPAN_QUEUE, minimum=1)))
    trace.set_tracer_provider(provider)
    if instrument:
        _instrument(environ)
    log.debug("tracing: exporter %s, service %s", name, service)
    return Telemetry(provider=provider, exporter=name, timeout=timeout)


def _endpoint_given(environ: Mapping[str, str]) -> bool:
    names = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(get_str(environ, name) for name in names)


def _configured_sampler() -> sampling.Sampler:
    """``OTEL_TRACES_SAMPLER`` as the SDK reads it; parent-based always-on by default."""
    try:
        return sampling._get_from_env_or_default()
    except Exception:  # a private SDK helper; never let it stop the daemon
        return sampling.ParentBased(sampling.ALWAYS_ON)


def _instrument(environ: Mapping[str, str]) -> None:
    # The instrumentations read these from the process environment when they are set up.
    os.environ[_SEMCONV_VAR] = get_str(environ, _SEMCONV_VAR, "http,database") or "http,database"
    requested = get_str(environ, _SANITIZE_VAR) or ""
    os.environ[_SANITIZE_VAR] = ",".join(p for p in (requested, *SENSITIVE_HEADERS) if p)

    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        HTTPXClientInstrumentor().instrument()
    if not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        # Patches create_engine: the App's engine, built after this, is traced. No SQL comments: the
        # statements stay cacheable and the spans carry the text.
        SQLAlchemyInstrumentor().instrument(enable_commenter=False)
