"""OpenTelemetry set-up: a TracerProvider exporting over OTLP/HTTP, plus httpx and SQLAlchemy instrumentation.

``OTEL_TRACES_EXPORTER`` is only read by auto-instrumentation, so syncd reads it itself:
``otlp`` (default when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set), ``console``, or ``none``.
A collector that is down never fails a tick: export happens in a background batch processor,
and shutdown waits at most ``OTEL_EXPORTER_OTLP_TIMEOUT`` (bounded) for the last batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from syncd.errors import ConfigError
from syncd.settings import get_float, get_str

log = logging.getLogger("syncd.telemetry")

# Stable semantic-convention names from the instrumentations (they emit old ones otherwise).
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")


@dataclass
class Telemetry:
    provider: TracerProvider | None
    exporter: str
    timeout: float

    def shutdown(self) -> None:
        """Flush and stop, waiting at most ``timeout`` seconds even if the collector is down."""
        if self.provider is None:
            return
        try:
            self.provider.force_flush(timeout_millis=int(self.timeout * 1000))
        except Exception as exc:  # a dead collector must not fail shutdown
            log.warning("could not flush spans: %s", exc)
        self.provider.shutdown()


def exporter_name(environ: Mapping[str, str]) -> str:
    if (get_str(environ, "OTEL_SDK_DISABLED", "false") or "").lower() == "true":
        return "none"
    name = get_str(environ, "OTEL_TRACES_EXPORTER")
    if name is None:
        endpoint = get_str(environ, "OTEL_EXPORTER_OTLP_ENDPOINT") or get_str(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return "otlp" if endpoint else "none"
    name = name.lower()
    if name not in ("otlp", "console", "none"):
        raise ConfigError("OTEL_TRACES_EXPORTER", f"expected otlp, console or none, got {name!r}")
    return name


def setup_telemetry(environ: Mapping[str, str], *, instrument: bool = True) -> Telemetry:
    name = exporter_name(environ)
    timeout = get_float(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", 5.0, minimum=0.1)
    if timeout > 60:  # the variable is sometimes given in milliseconds (the spec's unit)
        timeout = timeout / 1000
    if name == "none":
        return Telemetry(provider=None, exporter=name, timeout=timeout)
    resource = Resource.create({"service.name": get_str(environ, "OTEL_SERVICE_NAME", "syncd") or "syncd"})
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    if name == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=_traces_endpoint(environ), timeout=timeout)
    provider.add_span_processor(BatchSpanProcessor(exporter, export_timeout_millis=int(timeout * 1000)))
    trace.set_tracer_provider(provider)
    if instrument:
        _instrument()
    return Telemetry(provider=provider, exporter=name, timeout=timeout)


def _traces_endpoint(environ: Mapping[str, str]) -> str:
    explicit = get_str(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if explicit:
        return explicit
    base = get_str(environ, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318") or ""
    return base.rstrip("/") + "/v1/traces"


def _instrument() -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        HTTPXClientInstrumentor().instrument()
    if not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        SQLAlchemyInstrumentor().instrument(enable_commenter=False)
