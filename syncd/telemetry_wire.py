"""Protobuf wire format for OTLP spans, written by hand (no SDK import: the engine uses it while tracing).

Every string of an attribute, an event or a status goes through :func:`syncd.redaction.scrub` as it is
written. :func:`encode_roots` writes the ``event.process`` roots of a page transaction in one go, sharing
what their spans have in common (times, links, all attributes but the event id); they travel to the
exporter as one :class:`EncodedSpans` (``syncd.telemetry_otlp`` puts them in its requests).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import SpanContext, TraceFlags

from syncd.redaction import scrub

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


def encode_link(link: Any) -> bytes:
    linked = link.context
    return _field(13, b"\x0a\x10" + linked.trace_id.to_bytes(16, "big") + b"\x12\x08"
                  + linked.span_id.to_bytes(8, "big") + _attributes(4, link.attributes)
                  + _count(5, link.dropped_attributes) + b"\x35"
                  + _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if linked.is_remote else 0)))




def encode_name(name: str) -> bytes:
    """A span's name field (cached)."""
    encoded = _names.get(name)
    if encoded is None:
        if len(_names) >= _SEEN_MAX:
            _names.clear()
        encoded = _names[name] = _text(5, name)
    return encoded


_ROOT_CONTEXT = SpanContext(1, 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


class EncodedSpans:
    """Spans already encoded (``Span`` fields of a ``ScopeSpans``), ``count`` of them, of ``resource`` and
    ``scope``. It passes through the SDK's batch processor as one item (which reads only its ``context``)."""

    context = _ROOT_CONTEXT

    def __init__(self, payload: bytes, count: int, resource: Any, scope: Any) -> None:
        self.payload, self.count, self.resource, self.instrumentation_scope = payload, count, resource, scope


def encode_roots(name: str, kind: int, start_ns: int, end_ns: int,
                 roots: Iterable[tuple[int, int, Mapping[str, Any], Mapping[str, Any], Sequence[Any]]],
                 status: tuple[int, str] | None = None) -> bytes:
    """``Span`` fields (``ScopeSpans.spans``) of root spans sharing a name, a kind (the SDK's ``SpanKind``
    value), times and status: one ``(trace_id, span_id, attributes, shared_attributes, links)`` each, its
    attributes written in that order. ``shared_attributes`` and links are encoded once per object."""
    head = encode_name(name) + b"\x30" + _SMALL[kind + 1] + b"\x39" + _fixed64(start_ns) + b"\x41" + _fixed64(end_ns)
    tail = (_field(15, _text(2, status[1]) + _count(3, status[0])) if status else _UNSET_STATUS) + _FLAGS[False]
    shared: dict[int, bytes] = {}
    links_done: dict[int, bytes] = {}
    out = []
    for trace_id, span_id, attributes, common, links in roots:
        common_bytes = shared.get(id(common))
        if common_bytes is None:
            common_bytes = shared[id(common)] = _attributes(9, common)
        link_bytes = []
        for link in links:
            encoded = links_done.get(id(link))
            if encoded is None:
                encoded = links_done[id(link)] = encode_link(link)
            link_bytes.append(encoded)
        own = b"".join([_field(9, _key_value(k, v)) for k, v in attributes.items()])  # unique: not cached
        out.append(_field(2, b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big")
                          + head + own + common_bytes + b"".join(link_bytes) + tail))
    return b"".join(out)
