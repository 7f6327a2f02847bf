"""A receiver of outbound calls that takes ``latency`` seconds to answer each one, as a real integration
does, and counts what the run-queue scenario needs: calls, distinct ``Idempotency-Key``\\ s, the most
calls it held open at once, and calls per ``X-Bench-Replica`` header (which process made them).

Every method on every path answers 200 after the wait. It stands in until ``simulators.sink`` grows a
latency knob and an in-flight count of its own; ``stats()`` is the only thing the benchmark reads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

from simulators.httpserver import LoopbackServer, Served, Server

__all__ = ["LatencySink"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def _serve(self) -> None:
        sink: LatencySink = self.server.context
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        sink.enter(self.headers.get("Idempotency-Key"), self.headers.get("X-Bench-Replica") or "")
        try:
            time.sleep(sink.latency)  # the integration's own work; the handler thread just waits
        finally:
            sink.leave()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b'{"ok":true}')

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, *_: Any) -> None:
        return


class LatencySink(Served):
    """Answers every call with 200 after ``latency`` seconds; thread-safe counters in ``stats()``."""

    def __init__(self, *, latency: float, host: str = "127.0.0.1", port: int = 0) -> None:
        if latency < 0:
            raise ValueError("latency must not be negative")
        self.latency = latency
        self._lock = threading.Lock()
        self._calls = 0
        self._keys: set[str | None] = set()
        self._replicas: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self._first: float | None = None  # monotonic time the first call arrived
        self._last = 0.0  # ... and the latest call ended
        self._http = LoopbackServer(_Handler, context=self, host=host, port=port, name="latency-sink")
        self._http.bind()

    def enter(self, key: str | None, replica: str) -> None:
        with self._lock:
            self._calls += 1
            self._keys.add(key)
            self._replicas[replica] += 1
            if self._first is None:
                self._first = time.monotonic()
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._last = time.monotonic()

    def stats(self) -> dict[str, Any]:
        """``calls`` received, distinct ``keys`` among them, most ``max_in_flight`` at once, ``in_flight``
        now, ``span``: seconds from the first call's arrival to the latest call's answer, and
        ``by_replica``: calls per ``X-Bench-Replica`` header."""
        with self._lock:
            span = self._last - self._first if self._first is not None else 0.0
            return {"calls": self._calls, "keys": len(self._keys), "max_in_flight": self._max_in_flight,
                    "in_flight": self._in_flight, "span": round(max(span, 0.0), 3),
                    "by_replica": dict(sorted(self._replicas.items()))}
