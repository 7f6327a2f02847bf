"""A minimal OTLP/HTTP trace receiver for scenario T: accepts ``POST /v1/traces`` (protobuf), counts the
spans by name and the distinct traces, answers 200. It runs in a thread of the harness (its CPU is not the
contender's: the contender is measured with ``os.wait4`` on its own process)."""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_OK = ExportTraceServiceResponse().SerializeToString()


class OTLPSink:
    """``with OTLPSink() as sink:`` export to ``sink.url``; ``sink.take()`` returns and resets the counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: Counter[str] = Counter()
        self._traces: set[bytes] = set()
        self._requests = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                sink.record(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(_OK)))
                self.end_headers()
                self.wfile.write(_OK)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, request: ExportTraceServiceRequest) -> None:
        names: Counter[str] = Counter()
        traces = set()
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    names[span.name] += 1
                    traces.add(span.trace_id)
        with self._lock:
            self._names.update(names)
            self._traces |= traces
            self._requests += 1

    def take(self) -> dict[str, Any]:
        """What arrived since the last call: spans by name, total spans, distinct traces, requests."""
        with self._lock:
            names, traces, requests = dict(self._names), len(self._traces), self._requests
            self._names, self._traces, self._requests = Counter(), set(), 0
        return {"spans": sum(names.values()), "by_name": names, "traces": traces, "requests": requests}

    def __enter__(self) -> OTLPSink:
        threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
