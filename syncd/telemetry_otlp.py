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
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from syncd.redaction import scrub
from syncd.telemetry_spans import COUNTS

log = logging.getLogger("syncd.telemetry")

_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags: the parent's is_remote is known / is true
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 as protobuf writes it: two's complement, ten bytes
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(128)]
#: The tag of each length-delimited field number used here (all below 16: one byte).
_TAGS = [bytes((n << 3 | 2,)) for n in range(16)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    size = len(payload)
    return _TAGS[number] + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, scrub(value).encode("utf-8", "surrogatepass")) if value else b""


def _any(value: Any) -> bytes:
    """An ``AnyValue`` message."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(1, scrub(value).encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot export an attribute of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(1, key.encode()) + _field(2, _any(value))


#: Encoded (and scrubbed) attributes seen recently, per field number, when their value is a string or a
#: tuple of strings: most values repeat from span to span (a workflow's name, a stream, an operation).
#: Cleared when full: unique values (event ids) cannot grow it.
_seen: list[dict[tuple[str, Any], bytes]] = [{} for _ in range(16)]
_SEEN_MAX = 4096


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    parts = []
    tag, seen = _TAGS[number], _seen[number]
    for item in attributes.items():
        value = item[1]
        cacheable = type(value) is str or (type(value) is tuple and all(type(v) is str for v in value))
        encoded = seen.get(item) if cacheable else None
        if encoded is None:
            payload = _key_value(*item)
            encoded = tag + (_SMALL[len(payload)] if len(payload) < 0x80 else _varint(len(payload))) + payload
            if cacheable:
                if len(seen) >= _SEEN_MAX:
                    seen.clear()
                seen[item] = encoded
        parts.append(encoded)
    return b"".join(parts)


def _count(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


_UNSET_STATUS = _field(15, b"")
_FLAGS = {False: b"\x85\x01" + _fixed32(_HAS_IS_REMOTE), True: b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)}
#: Encoded span names (few: a SQL span's is its verb and database), cleared when full.
_names: dict[str, bytes] = {}


def _link(link: Any) -> bytes:
    linked = link.context
    return _field(13, b"\x0a\x10" + linked.trace_id.to_bytes(16, "big") + b"\x12\x08"
                  + linked.span_id.to_bytes(8, "big") + _attributes(4, link.attributes)
                  + _count(5, link.dropped_attributes) + b"\x35"
                  + _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if linked.is_remote else 0)))


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
    name = _names.get(span.name)
    if name is None:
        if len(_names) >= _SEEN_MAX:
            _names.clear()
        name = _names[span.name] = _text(5, span.name)
    parts += [name, b"\x30" + _SMALL[span.kind.value + 1],
              b"\x39" + _fixed64(span.start_time or 0), b"\x41" + _fixed64(span.end_time or 0),
              _attributes(9, span.attributes), _count(10, span.dropped_attributes)]
    for event in span.events:
        parts.append(_field(11, b"\x09" + _fixed64(event.timestamp) + _text(2, event.name)
                            + _attributes(3, event.attributes) + _count(4, event.dropped_attributes)))
    parts.append(_count(12, span.dropped_events))
    for link in span.links:
        if links is None:
            parts.append(_link(link))
            continue
        encoded = links.get(id(link))
        if encoded is None:
            encoded = links[id(link)] = _link(link)
        parts.append(encoded)
    parts.append(_count(14, span.dropped_links))
    status = span.status
    if status.description or status.status_code.value:
        parts.append(_field(15, _text(2, status.description or "") + _count(3, status.status_code.value)))
    else:
        parts.append(_UNSET_STATUS)
    parts.append(_FLAGS[parent is not None and parent.is_remote])
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """The ``ExportTraceServiceRequest`` of ``spans``: grouped by resource, then instrumentation scope, in
    the order they come (as the SDK's encoder does)."""
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
        groups.setdefault(key, {}).setdefault(span.instrumentation_scope, []).append(
            _field(2, encode_span(span, links)))
    out = []
    for key, scopes in groups.items():
        resource = resources[key]
        body = [_field(1, _attributes(1, resource.attributes))]
        for scope, encoded in scopes.items():
            head = b""
            if scope is not None:
                head = _field(1, _text(1, scope.name) + _text(2, scope.version or "")
                              + _attributes(3, scope.attributes))
            else:
                head = _field(1, b"")
            schema = _text(3, scope.schema_url) if scope is not None and scope.schema_url else b""
            body.append(_field(2, head + b"".join(encoded) + schema))
        if resource.schema_url:
            body.append(_text(3, resource.schema_url))
        out.append(_field(1, b"".join(body)))
    return b"".join(out)


class FastOTLPExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter with :func:`encode_request` (scrubbing included) as its encoder."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if client is None or not hasattr(client, "export"):  # another SDK version: its own path
            from syncd.telemetry import scrub_span

            outcome = super().export([scrub_span(span) for span in spans])
        elif self._shutdown:
            outcome = SpanExportResult.FAILURE
        else:
            outcome = self._post(client, spans)
        if outcome is not SpanExportResult.SUCCESS:
            COUNTS.add(failed=len(spans))
        return outcome

    def _post(self, client: Any, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            body = encode_request(spans)
        except Exception as exc:  # an attribute of a type OTLP cannot carry: drop the batch, say why
            log.error("could not encode %d span(s): %s", len(spans), exc)
            return SpanExportResult.FAILURE
        result = client.export(body)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
