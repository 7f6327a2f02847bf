"""The simulator's HTTP side: response records and the request handler (one write per response)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from simulators.httpserver import Server

__all__ = ["REASONS", "RESET", "Handler", "Response"]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    send_only: int | None = None  # send this many body bytes, then drop the connection


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable"}
RESET = Response(0, b"")  # sentinel: close the connection abruptly without a response


class Responder(Protocol):
    """What the handler needs of the simulator (``WorkOSSimulator``)."""

    def respond(self, target: str, authorization: str) -> Response: ...

    def record(self, path: str, status: int) -> None: ...


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # plus one buffer per response: no Nagle / delayed-ACK stalls
    server_version = "WorkOSSimulator/1"
    timeout = 60  # bounds idle keep-alive connections
    server: Server

    def do_GET(self) -> None:
        simulator: Responder = self.server.context
        response = simulator.respond(self.path, self.headers.get("Authorization", ""))
        simulator.record(self.path, response.status)
        if response is RESET:
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # with linger 0 the final close sends RST, not FIN
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}",
                 f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}",
                 *(f"{name}: {value}" for name, value in response.headers)]
        if response.send_only is not None:
            self.close_connection = True
        if self.close_connection:
            lines.append("Connection: close")
        body = response.body if response.send_only is None else response.body[:response.send_only]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is ``WorkOSSimulator.requests``."""
