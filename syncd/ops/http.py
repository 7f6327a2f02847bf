"""``/healthz`` and ``/metrics`` over HTTP, from a daemon thread of ``syncd run``.

A :class:`Monitor` answers both for one set of sources (the rule: :mod:`syncd.ops.health`; the
families: :mod:`syncd.ops.metrics`); :class:`HealthServer` serves it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from syncd.contracts import Reads
from syncd.errors import ConfigError
from syncd.ops.health import DATABASE_HEADER, HealthReport, assess, untraced
from syncd.ops.metrics import CONTENT_TYPE_METRICS, collect_metrics, render_metrics

log = logging.getLogger("syncd.health")

TEXT = "text/plain; charset=utf-8"

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Monitor:
    """Health and metrics of ``keys`` (the configured live sources), read through ``reads``. Thread-safe.

    Its own queries are never traced (they would be orphan spans every scrape). A database error
    makes the health report unhealthy with the error's type, never its text (which may hold a URL).
    ``database``: the database's fingerprint (``health.database_id``), sent with every /healthz answer so
    ``syncd check`` knows the answer is about its database.
    """

    def __init__(self, reads: Reads, keys: Sequence[str], *, interval: float, now: Now | None = None,
                 started_at: datetime | None = None, database: str | None = None) -> None:
        self.reads = reads
        self.keys = tuple(keys)
        self.interval = interval
        self.now = now or _utcnow
        self.started_at = started_at
        self.database = database

    def health(self) -> HealthReport:
        return assess(self.reads, self.keys, now=self.now(), interval=self.interval, started_at=self.started_at)

    def metrics(self) -> str:
        """Raises SQLAlchemyError when the database cannot be read."""
        with untraced():
            families = collect_metrics(self.reads, self.keys, now=self.now(), interval=self.interval,
                                       started_at=self.started_at)
        return render_metrics(families)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # one small response per request; no Nagle stall on loopback
    timeout = 10  # a client that stops sending cannot hold a thread forever

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            report = self.server.monitor.health()
            database = self.server.monitor.database
            self._reply(200 if report.healthy else 503, report.text(), TEXT,
                        {DATABASE_HEADER: database} if database else None)
        elif path == "/metrics":
            try:
                body = self.server.monitor.metrics()
            except sa.exc.SQLAlchemyError as exc:
                log.warning("metrics could not read the database: %s", type(exc).__name__)
                self._reply(503, f"database unavailable ({type(exc).__name__})\n", TEXT)
                return
            self._reply(200, body, CONTENT_TYPE_METRICS)
        else:
            self._reply(404, "not found: try /healthz or /metrics\n", TEXT)

    def _reply(self, status: int, text: str, content_type: str, headers: dict[str, str] | None = None) -> None:
        payload = text.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would drown the daemon's own log lines


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], monitor: Monitor) -> None:
        self.monitor = monitor
        super().__init__(address, _Handler)


class HealthServer:
    """``/healthz`` and ``/metrics`` served from a daemon thread. ``port=0`` picks a free port (tests)."""

    def __init__(self, monitor: Monitor, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        self.monitor = monitor
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("health server not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Bind and serve; returns the base URL. ConfigError (naming SYNCD_HTTP_PORT) if it cannot bind."""
        try:
            self._server = _Server((self.host, self.port), self.monitor)
        except OSError as exc:
            raise ConfigError("SYNCD_HTTP_PORT", f"cannot listen on {self.host}:{self.port} "
                              f"({exc.strerror or exc}); choose another port or 0 to disable") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="syncd-health", daemon=True)
        self._thread.start()
        log.info("health and metrics on %s (/healthz, /metrics)", self.url)
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
