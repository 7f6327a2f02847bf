"""OTLP/HTTP export at a catch-up's rate: spans written straight to protobuf bytes, scrubbed on the way.

The SDK's exporter builds a protobuf object per span, attribute and value before serialising them: about
35 µs a span, more than syncd spends on the event itself while catching up (bench/README.md, "T"). Here
:func:`encode_request` writes the same ``ExportTraceServiceRequest`` (tests compare the two, field by
field) directly as bytes, and runs every string of a span's attributes, events and status through
:func:`syncd.redaction.scrub` as it writes them (what :class:`syncd.telemetry.ScrubbingExporter` does,
without copying the spans). :class:`FastOTLPExporter` posts those bytes with the SDK's own HTTP client,
retries and headers; if that client ever changes shape, it falls back to the SDK's encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from syncd.telemetry_wire import (
    _FLAGS,
    _SMALL,
    _UNSET_STATUS,
    EncodedSpans,
    _attributes,
    _count,
    _field,
    _fixed64,
    _text,
    encode_link,
    encode_name,
)

log = logging.getLogger("syncd.telemetry")

def encode_span(span: ReadableSpan, links: dict[int, bytes] | None = None) -> bytes:
    """One ``Span`` message's bytes (without its tag). ``links``: encoded links by ``id()``, shared by the
    spans of one request (every event of a page links to the same page span)."""
    context = span.context
    assert context is not None
    parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"), b"\x12\x08" + context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        parts.append(_text(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts += [encode_name(span.name), b"\x30" + _SMALL[span.kind.value + 1],
              b"\x39" + _fixed64(span.start_time or 0), b"\x41" + _fixed64(span.end_time or 0),
              _attributes(9, span.attributes), _count(10, span.dropped_attributes)]
    for event in span.events:
        parts.append(_field(11, b"\x09" + _fixed64(event.timestamp) + _text(2, event.name)
                            + _attributes(3, event.attributes) + _count(4, event.dropped_attributes)))
    parts.append(_count(12, span.dropped_events))
    for link in span.links:
        if links is None:
            parts.append(encode_link(link))
            continue
        encoded = links.get(id(link))
        if encoded is None:
            encoded = links[id(link)] = encode_link(link)
        parts.append(encoded)
    parts.append(_count(14, span.dropped_links))
    status = span.status
    if status.description or status.status_code.value:
        parts.append(_field(15, _text(2, status.description or "") + _count(3, status.status_code.value)))
    else:
        parts.append(_UNSET_STATUS)
    parts.append(_FLAGS[parent is not None and parent.is_remote])
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan | EncodedSpans]) -> bytes:
    """The ``ExportTraceServiceRequest`` of ``spans`` (and of spans encoded already): grouped by resource,
    then instrumentation scope, in the order they come (as the SDK's encoder does)."""
    # A Resource hashes by serialising its attributes: spans are grouped by the id of the first equal
    # resource object instead, comparing each new object once.
    groups: dict[int, dict[Any, list[bytes]]] = {}
    same: dict[int, int] = {}  # id(resource) -> id of the first equal one
    resources: dict[int, Any] = {}
    links: dict[int, bytes] = {}  # the links in this request (kept alive by its spans: ids stay unique)
    for span in spans:
        key = same.get(id(span.resource))
        if key is None:
            resource = span.resource
            key = same[id(resource)] = next((k for k, r in resources.items() if r == resource), id(resource))
            resources.setdefault(key, resource)
        payload = span.payload if isinstance(span, EncodedSpans) else _field(2, encode_span(span, links))
        groups.setdefault(key, {}).setdefault(span.instrumentation_scope, []).append(payload)
    out = []
    for key, scopes in groups.items():
        resource = resources[key]
        body = [_field(1, _attributes(1, resource.attributes))]
        for scope, payloads in scopes.items():
            head = b""
            if scope is not None:
                head = _field(1, _text(1, scope.name) + _text(2, scope.version or "")
                              + _attributes(3, scope.attributes))
            else:
                head = _field(1, b"")
            schema = _text(3, scope.schema_url) if scope is not None and scope.schema_url else b""
            body.append(_field(2, head + b"".join(payloads) + schema))
        if resource.schema_url:
            body.append(_text(3, resource.schema_url))
        out.append(_field(1, b"".join(body)))
    return b"".join(out)


class FastOTLPExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter with :func:`encode_request` (scrubbing included) as its encoder; it
    takes :class:`~syncd.telemetry_wire.EncodedSpans` too (``takes_encoded``)."""

    @property
    def takes_encoded(self) -> bool:
        client = getattr(self, "_client", None)
        return client is not None and hasattr(client, "export")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if client is None or not hasattr(client, "export"):  # another SDK version: its own path
            from syncd.telemetry import scrub_span

            outcome = super().export([scrub_span(span) for span in spans])
        elif self._shutdown:
            outcome = SpanExportResult.FAILURE
        else:
            outcome = self._post(client, spans)
        return outcome  # a failure is counted by syncd.telemetry.CountingExporter

    def _post(self, client: Any, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            body = encode_request(spans)
        except Exception as exc:  # an attribute of a type OTLP cannot carry: drop the batch, say why
            log.error("could not encode %d span(s): %s", len(spans), exc)
            return SpanExportResult.FAILURE
        result = client.export(body)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
