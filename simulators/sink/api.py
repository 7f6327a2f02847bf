"""``SinkSimulator``: record every call, fail a seeded share of them; and its command ``main``."""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from simulators.httpserver import LoopbackServer, Served, Server, answer

__all__ = ["Call", "SinkSimulator", "main"]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any
    idempotency_key: str | None
    status: int
    authorization: str | None = None  # the Authorization header as received (tests check the token is sent)
    arrived_at: float = 0.0  # wall-clock seconds (time.time) when its headers were read
    finished_at: float = 0.0  # … when its answer was written
    connection: int = 0  # which TCP connection it came on (1, 2, … in the order they were accepted)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server
    connection_number = 0

    def setup(self) -> None:
        super().setup()
        self.connection_number = self.server.context.connected()

    def _serve(self) -> None:
        sink: SinkSimulator = self.server.context
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client went away mid-body (a SIGKILL): no service acts on half a request
            self.close_connection = True
            return None
        if self.path == STATS_PATH:
            return self._answer(200, json.dumps(sink.stats()).encode())
        if self.path == "/health":
            return self._answer(200, b'{"ok": true}')
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        status = sink.decide()
        sink.entered(self.path)
        try:
            sink.wait_latency()
        finally:
            sink.left(self.path)
        # Recorded before the answer leaves: a client that has its answer finds its call in ``calls``.
        sink.record(Call(self.command, self.path, body, self.headers.get("Idempotency-Key"), status,
                         self.headers.get("Authorization"), arrived, time.time(), self.connection_number))
        self._answer(status, json.dumps({"ok": status == 200}).encode())

    def _answer(self, status: int, payload: bytes) -> None:
        sink: SinkSimulator = self.server.context
        headers: list[tuple[str, str]] = []
        if 300 <= status < 400:  # a receiver that moved: where to, on the same server
            headers.append(("Location", "/moved" + self.path))
        if status in (429, 503) and sink.retry_after is not None:
            headers.append(("Retry-After", f"{sink.retry_after:g}"))
        answer(self, status, payload, headers=tuple(headers))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, *_: Any) -> None:
        return


class SinkSimulator(Served):
    """Any method on any path is a call, recorded in ``calls``; ``/health`` always answers 200 and
    ``GET /_sink/stats`` answers :meth:`stats` as JSON (neither is a call).

    Knobs (constructor arguments, and attributes that may be changed while it serves):
    ``fail_rate`` (a seeded share of calls fail) and ``fail_status``, what a failed call answers: 503 by
    default, a 4xx, or a 3xx (sent with a ``Location`` on this server, as a receiver that moved would: a
    redirect is not a delivery); ``retry_after`` (seconds, or None): sent as ``Retry-After`` with a failed
    call's 429 or 503; ``latency`` (seconds): how long every call waits before it is answered.

    Measurements: ``max_in_flight`` (most calls being served at once, overall) and
    ``max_in_flight_by_path`` (per path), ``in_flight`` (now), ``connections`` (TCP connections accepted:
    a pooled client opens a handful for many calls), and each :class:`Call`'s ``arrived_at`` /
    ``finished_at`` (wall-clock seconds) and ``connection``. ``reset()`` forgets calls and measurements;
    ``release()`` answers at once the calls that ``latency`` holds.
    """

    def __init__(self, *, fail_rate: float = 0.0, seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 fail_status: int = 503, latency: float = 0.0, retry_after: float | None = None) -> None:
        if not 300 <= fail_status < 600:
            raise ValueError(f"fail_status must be a 3xx, 4xx or 5xx status, got {fail_status}")
        if latency < 0:
            raise ValueError(f"latency must be at least 0 seconds, got {latency}")
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self.latency = latency
        self.retry_after = retry_after
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._releases = 0
        self.calls: list[Call] = []
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._in_flight_by_path: Counter[str] = Counter()
        self.max_in_flight_by_path: dict[str, int] = {}
        self._http = LoopbackServer(_Handler, context=self, host=host, port=port, name="sink-sim",
                                    quiet_disconnects=False)
        self._http.bind()  # the URL is known before start

    def successes_by_key(self, path_prefix: str = "") -> Counter[str | None]:
        with self._lock:
            return Counter(c.idempotency_key for c in self.calls
                           if c.status < 300 and c.path.startswith(path_prefix))

    def decide(self) -> int:
        """The status of the next call: ``fail_status`` for a seeded ``fail_rate`` share, else 200."""
        with self._lock:
            return self.fail_status if self._rng.random() < self.fail_rate else 200

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def connected(self) -> int:
        """A TCP connection was accepted; returns its number."""
        with self._lock:
            self.connections += 1
            return self.connections

    def entered(self, path: str) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._in_flight_by_path[path] += 1
            self.max_in_flight_by_path[path] = max(self.max_in_flight_by_path.get(path, 0),
                                                   self._in_flight_by_path[path])

    def left(self, path: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self._in_flight_by_path[path] -= 1

    def wait_latency(self) -> None:
        """Hold a call for ``latency`` seconds, or until :meth:`release`."""
        with self._released:
            seen = self._releases
            self._released.wait_for(lambda: self._releases != seen, timeout=self.latency)

    def release(self) -> None:
        """Answer the calls being held by ``latency`` now (and on ``stop``)."""
        with self._released:
            self._releases += 1
            self._released.notify_all()

    def stop(self) -> None:
        self.release()
        super().stop()

    def reset(self) -> None:
        """Forget the calls and the measurements (connections still open are not counted again)."""
        with self._lock:
            self.calls = []
            self.connections = 0
            self.max_in_flight = self.in_flight
            self.max_in_flight_by_path = {p: n for p, n in self._in_flight_by_path.items() if n}

    def stats(self) -> dict[str, Any]:
        """The measurements, as ``GET /_sink/stats`` answers them: ``calls``, ``successes``, ``connections``,
        ``in_flight``, ``max_in_flight``, ``max_in_flight_by_path``, ``first_arrival`` and ``last_arrival``
        (wall-clock seconds, null before any call) and ``latency``."""
        with self._lock:
            arrivals = [c.arrived_at for c in self.calls]
            return {"calls": len(self.calls), "successes": sum(c.status < 300 for c in self.calls),
                    "connections": self.connections, "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight, "max_in_flight_by_path": dict(self.max_in_flight_by_path),
                    "first_arrival": min(arrivals, default=None), "last_arrival": max(arrivals, default=None),
                    "latency": self.latency}


#: Where the sink answers its measurements (``SinkSimulator.stats``) instead of recording a call.
STATS_PATH = "/_sink/stats"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncd simulate sink", description=_DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=503, help="what a failed call answers (3xx-5xx)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every call waits before its answer")
    parser.add_argument("--retry-after", type=float, default=None,
                        help="seconds sent as Retry-After with a failed call's 429 or 503")
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error(f"--latency must be at least 0 seconds, got {args.latency}")
    if not 300 <= args.fail_status < 600:
        parser.error(f"--fail-status must be a 3xx, 4xx or 5xx status, got {args.fail_status}")
    sink = SinkSimulator(fail_rate=args.fail_rate, seed=args.seed, host=args.host, port=args.port,
                         fail_status=args.fail_status, latency=args.latency, retry_after=args.retry_after)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink.start()
    print(f"sink simulator on {sink.url} (fail rate {args.fail_rate}, latency {args.latency:g} s; "
          f"measurements at {sink.url}{STATS_PATH})", flush=True)
    stop.wait()
    sink.stop()
    return 0


_DESCRIPTION = "An HTTP server that records every call and can fail a share of them."
