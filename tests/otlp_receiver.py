"""A real OTLP/HTTP trace receiver on loopback, for tests: ``POST /v1/traces`` with an
``ExportTraceServiceRequest`` in protobuf (optionally gzip- or deflate-encoded).

It keeps the raw bytes of every request (decoded from gzip, so a secret cannot hide in compression)
and the decoded spans, flattened into :class:`ReceivedSpan` records.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from simulators.httpserver import LoopbackServer, Served, Server

STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids as lowercase hex as Jaeger shows them."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: str
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: tuple[tuple[str, dict[str, Any]], ...]
    resource: dict[str, Any]
    scope: str
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id) of each linked span
    start_ns: int = 0
    end_ns: int = 0

    @property
    def is_error(self) -> bool:
        return self.status_code == STATUS_ERROR


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in items}


def decode(body: bytes) -> list[ReceivedSpan]:
    """Flatten an ``ExportTraceServiceRequest`` into spans."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(), kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                    attributes=_attributes(span.attributes), status_code=span.status.code,
                    status_message=span.status.message,
                    events=tuple((e.name, _attributes(e.attributes)) for e in span.events),
                    resource=resource, scope=scope_spans.scope.name,
                    links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                    start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                ))
    return spans


class _Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        if self.path != "/v1/traces":
            self._reply(404, b"")
            return
        try:
            spans = decode(body)
        except Exception:  # a malformed request is the client's bug: say so, keep serving
            self._reply(400, b"")
            return
        receiver: OTLPReceiver = self.server.context
        receiver.record(body, spans, dict(self.headers.items()))
        self._reply(200, ExportTraceServiceResponse().SerializeToString())

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class OTLPReceiver(Served):
    """``with OTLPReceiver() as rx:`` point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``rx.url``; read
    ``rx.spans``, ``rx.raw`` (every request body, decompressed) and ``rx.headers``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._raw: list[bytes] = []
        self._headers: list[dict[str, str]] = []
        self._http = LoopbackServer(_Handler, context=self, name="otlp-receiver")

    def record(self, body: bytes, spans: list[ReceivedSpan], headers: dict[str, str]) -> None:
        with self._lock:
            self._raw.append(body)
            self._spans.extend(spans)
            self._headers.append(headers)

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    @property
    def raw(self) -> bytes:
        with self._lock:
            return b"".join(self._raw)

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._headers)

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool],
                 timeout: float = 5.0) -> list[ReceivedSpan]:
        """Spans once ``predicate(spans)`` holds; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"OTLP receiver: nothing matched within {timeout}s ({len(spans)} spans)")
            time.sleep(0.02)
