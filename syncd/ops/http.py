"""``/healthz``, ``/metrics`` and the dashboard over HTTP, from a daemon thread of ``syncd run`` (and ``syncd ui``).

A :class:`Monitor` answers the two probes for one set of sources (the rule: :mod:`syncd.ops.health`; the
families: :mod:`syncd.ops.metrics`); :class:`HealthServer` serves them, and the dashboard
(:mod:`syncd.ops.dashboard`) when one is given, from one Starlette application run by uvicorn.

The socket is bound here, before uvicorn starts, so a port in use is a ``ConfigError`` in the caller (uvicorn
itself would log it and exit its thread), and ``port=0`` gives the chosen port at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING

import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from syncd.contracts import Reads
from syncd.errors import ConfigError
from syncd.ops.health import DATABASE_HEADER, HealthReport, assess, untraced
from syncd.ops.metrics import CONTENT_TYPE_METRICS, collect_metrics, render_metrics, span_families

if TYPE_CHECKING:
    from syncd.ops.dashboard import Dashboard

log = logging.getLogger("syncd.health")

TEXT = "text/plain; charset=utf-8"
#: How long a stop waits for requests in hand (the daemon's SIGTERM budget is 9 s in all).
STOP_SECONDS = 2.0

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
        return render_metrics([*families, *span_families()])


def text_reply(status: int, text: str, content_type: str = TEXT, headers: dict[str, str] | None = None) -> Response:
    """A plain answer that no cache keeps (probes and scrapes must see the database as it is now)."""
    return Response(text, status, headers={**(headers or {}), "Cache-Control": "no-store"}, media_type=content_type)


def probe_routes(monitor: Monitor) -> list[BaseRoute]:
    """``GET /healthz`` (200 healthy, 503 not; the database's fingerprint in a header) and ``GET /metrics``.
    Plain functions: Starlette runs them in its thread pool, so their blocking reads never stall the loop."""

    def healthz(request: Request) -> Response:
        report = monitor.health()
        headers = {DATABASE_HEADER: monitor.database} if monitor.database else None
        return text_reply(200 if report.healthy else 503, report.text(), TEXT, headers)

    def metrics(request: Request) -> Response:
        try:
            body = monitor.metrics()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics could not read the database: %s", type(exc).__name__)
            return text_reply(503, f"database unavailable ({type(exc).__name__})\n")
        return text_reply(200, body, CONTENT_TYPE_METRICS)

    return [Route("/healthz", healthz), Route("/metrics", metrics)]


def build_app(monitor: Monitor, dashboard: Dashboard | None = None) -> Starlette:
    """The whole HTTP surface: the probes, then the dashboard's pages when ``dashboard`` is on."""
    routes = probe_routes(monitor)
    if dashboard is not None and dashboard.enabled:
        routes += dashboard.routes()

    async def not_found(request: Request, exc: Exception) -> Response:
        return text_reply(404, "not found: try /healthz or /metrics\n")

    async def database_error(request: Request, exc: Exception) -> Response:
        # The type only: SQLAlchemy's text quotes SQL parameters (payload values) and may hold a URL.
        log.warning("%s could not read the database: %s", request.url.path, type(exc).__name__)
        return text_reply(503, f"database unavailable ({type(exc).__name__})\n")

    return Starlette(routes=routes, exception_handlers={404: not_found, sa.exc.SQLAlchemyError: database_error})


class HealthServer:
    """The HTTP server, from a daemon thread. ``port=0`` picks a free port (tests).

    ``dashboard``: served beside the probes when it is enabled (see :mod:`syncd.ops.dashboard` for when).
    """

    def __init__(self, monitor: Monitor, *, host: str = "0.0.0.0", port: int = 8080,
                 dashboard: Dashboard | None = None) -> None:
        self.monitor = monitor
        self.host = host
        self.port = port
        self.dashboard = dashboard
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._socket is None:
            raise RuntimeError("health server not started")
        host, port = self._socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def start(self) -> str:
        """Bind and serve; returns the base URL. ConfigError (naming SYNCD_HTTP_PORT) if it cannot bind."""
        self._socket = _bind(self.host, self.port)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # not "Started server process" every start
        off = self.dashboard.off_reason() if self.dashboard is not None else None
        if off:
            log.warning("%s", off)
        config = uvicorn.Config(build_app(self.monitor, self.dashboard), http="h11", loop="asyncio", ws="none",
                                lifespan="off", log_config=None, access_log=False, server_header=False,
                                timeout_graceful_shutdown=int(STOP_SECONDS), timeout_keep_alive=5)
        self._server = server = uvicorn.Server(config)
        ready = threading.Event()

        def serve() -> None:
            asyncio.run(_serve(server, self._socket, ready))  # type: ignore[arg-type]

        self._thread = threading.Thread(target=serve, name="syncd-http", daemon=True)
        self._thread.start()
        while not ready.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server stopped while starting (see the log)")
        pages = ", dashboard /" if self.dashboard is not None and self.dashboard.enabled else ""
        log.info("health and metrics on %s (/healthz, /metrics%s)", self.url, pages)
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
            if self._thread is not None:
                self._thread.join(STOP_SECONDS + 1.0)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


async def _serve(server: uvicorn.Server, sock: socket.socket, ready: threading.Event) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    ready.set()
    await task


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError("SYNCD_HTTP_PORT", f"cannot listen on {host}:{port} "
                          f"({exc.strerror or exc}); choose another port or 0 to disable") from None
    sock.setblocking(False)
    return sock
