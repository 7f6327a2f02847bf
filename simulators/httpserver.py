"""One small threaded HTTP server for the simulators and the tests' own servers.

``LoopbackServer(handler, context=obj)`` binds ``127.0.0.1:0`` (a free port) by default, serves each
connection in a daemon thread, and gives its base URL as ``.url``. ``start()`` and ``stop()`` are
idempotent, and ``stop()`` also cuts open keep-alive connections, as a server going away would, so no
handler thread outlives it. Handlers reach their owner through ``self.server.context``::

    class Handler(BaseHTTPRequestHandler):
        server: Server

        def do_GET(self) -> None:
            owner = self.server.context
            ...

    with LoopbackServer(Handler, context=owner) as server:
        httpx.get(server.url + "/")

It imports nothing from ``syncd``: the simulators must never agree with the client by accident.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["LoopbackServer", "Served", "Server", "answer"]


class Server(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that knows its open connections and carries a ``context`` for handlers."""

    daemon_threads = True
    #: socketserver's default backlog of 5 drops connections in a burst (a client then waits a second to
    #: retry its SYN): a pooled client of many worker threads opens dozens at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: Any = None,
                 *, quiet_disconnects: bool = True) -> None:
        self.context = context
        self.quiet_disconnects = quiet_disconnects
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Tracked before the thread starts, so that cut_connections() cannot miss a connection.
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up (timeouts, resets); report anything else."""
        if not (self.quiet_disconnects and isinstance(sys.exc_info()[1], OSError)):
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        """Shut open keep-alive connections so that their threads end with the server."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)


class LoopbackServer:
    """A ``Server`` serving ``handler`` from a background thread. Thread-safe to start and stop.

    ``bind()`` takes the port without serving yet (``url`` is then known); ``start()`` binds if needed
    and serves; ``stop()`` stops serving, cuts open connections and closes the socket. After ``stop()``
    a new ``start()`` binds again (with port 0, on a new port).
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, context: Any = None, host: str = "127.0.0.1",
                 port: int = 0, name: str = "loopback-server", poll_interval: float = 0.05,
                 quiet_disconnects: bool = True) -> None:
        self._handler = handler
        self._context = context
        self._address = (host, port)
        self._name = name
        self._poll_interval = poll_interval
        self._quiet = quiet_disconnects
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once bound; ``RuntimeError`` before."""
        url = self.url_or_none
        if url is None:
            raise RuntimeError(f"{self._name} is not started")
        return url

    @property
    def url_or_none(self) -> str | None:
        server = self._server
        if server is None:
            return None
        host, port = server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def bind(self) -> str:
        """Take the address (idempotent); returns ``url``."""
        with self._lock:
            if self._server is None:
                self._server = Server(self._address, self._handler, self._context,
                                      quiet_disconnects=self._quiet)
        return self.url

    def start(self) -> str:
        """Bind if needed and serve in a daemon thread (idempotent); returns ``url``."""
        self.bind()
        with self._lock:
            if self._thread is None and self._server is not None:
                self._thread = threading.Thread(target=self._server.serve_forever,
                                                kwargs={"poll_interval": self._poll_interval},
                                                name=self._name, daemon=True)
                self._thread.start()
        return self.url

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop serving, cut open connections, close the socket (idempotent)."""
        with self._lock:
            server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
        server.cut_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=timeout)

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def answer(handler: BaseHTTPRequestHandler, status: int, payload: bytes, *,
           headers: tuple[tuple[str, str], ...] = (), content_type: str = "application/json") -> None:
    """Send ``payload`` as the whole response, with its length (keep-alive clients need it) and ``headers``."""
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class Served:
    """Base of a double that a ``LoopbackServer`` (``self._http``) serves: its ``url``, ``start``/``stop``
    and ``with`` handling, delegated, so each double only says what it answers."""

    _http: LoopbackServer

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> str:
        return self._http.start()

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
