"""``SinkSimulator``: record every call, fail a seeded share of them; and its command ``main``."""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from simulators.httpserver import LoopbackServer, Served, Server

__all__ = ["Call", "SinkSimulator", "main"]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any
    idempotency_key: str | None
    status: int
    authorization: str | None = None  # the Authorization header as received (tests check the token is sent)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def _serve(self) -> None:
        sink: SinkSimulator = self.server.context
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        status = 200 if self.path == "/health" else sink.decide()
        if self.path != "/health":
            sink.record(Call(self.command, self.path, body, self.headers.get("Idempotency-Key"), status,
                             self.headers.get("Authorization")))
        payload = json.dumps({"ok": status == 200}).encode()
        self.send_response(status)
        if 300 <= status < 400:  # a receiver that moved: where to, on the same server
            self.send_header("Location", "/moved" + self.path)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, *_: Any) -> None:
        return


class SinkSimulator(Served):
    """Any method on any path is a call, recorded in ``calls``; ``/health`` always answers 200.

    Fault knobs: ``fail_rate`` (a seeded share of calls fail) and ``fail_status``, what a failed call
    answers: 503 by default, a 4xx, or a 3xx (sent with a ``Location`` on this server, as a receiver
    that moved would: a redirect is not a delivery).
    """

    def __init__(self, *, fail_rate: float = 0.0, seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 fail_status: int = 503) -> None:
        if not 300 <= fail_status < 600:
            raise ValueError(f"fail_status must be a 3xx, 4xx or 5xx status, got {fail_status}")
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: list[Call] = []
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncd simulate sink", description=_DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=503, help="what a failed call answers (3xx-5xx)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 300 <= args.fail_status < 600:
        parser.error(f"--fail-status must be a 3xx, 4xx or 5xx status, got {args.fail_status}")
    sink = SinkSimulator(fail_rate=args.fail_rate, seed=args.seed, host=args.host, port=args.port,
                         fail_status=args.fail_status)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink.start()
    print(f"sink simulator on {sink.url} (fail rate {args.fail_rate})", flush=True)
    stop.wait()
    sink.stop()
    return 0


_DESCRIPTION = "An HTTP server that records every call and can fail a share of them."
