"""``syncd simulate sink``: an HTTP server that records every call and can fail a share of them.

Each call is kept as (method, path, body, Idempotency-Key, status). Failures are decided by a seeded RNG,
so runs are reproducible. ``successes_by_key()`` tells how many calls with a key succeeded: a receiver
that dedupes on the key performs each such effect once.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any
    idempotency_key: str | None
    status: int


class SinkSimulator:
    def __init__(self, *, fail_rate: float = 0.0, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fail_rate = fail_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="sink-sim", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SinkSimulator:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def successes_by_key(self, path_prefix: str = "") -> Counter[str | None]:
        with self._lock:
            return Counter(c.idempotency_key for c in self.calls
                           if c.status < 300 and c.path.startswith(path_prefix))

    def _decide(self) -> int:
        with self._lock:
            return 503 if self._rng.random() < self.fail_rate else 200

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                status = 200 if self.path == "/health" else sink._decide()
                if self.path != "/health":
                    sink._record(Call(self.command, self.path, body, self.headers.get("Idempotency-Key"), status))
                payload = json.dumps({"ok": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *_: Any) -> None:
                return

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncd simulate sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sink = SinkSimulator(fail_rate=args.fail_rate, seed=args.seed, host=args.host, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink.start()
    print(f"sink simulator on {sink.url} (fail rate {args.fail_rate})", flush=True)
    stop.wait()
    sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
