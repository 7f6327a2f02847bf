"""The GitHub simulator's HTTP side: response records, GitHub's error bodies and the request handler."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Final, Protocol

from simulators.httpserver import Server

__all__ = ["Handler", "Response", "error", "etag_matches", "invalid", "json_response"]

_DOCS: Final = "https://docs.github.com/rest"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, headers, body)


def error(status: int, message: str, headers: tuple[tuple[str, str], ...] = (), **extra: Any) -> Response:
    return json_response(
        status, {"message": message, **extra, "documentation_url": _DOCS, "status": str(status)}, headers
    )


def invalid(field_: str) -> Response:
    return error(
        422, "Validation Failed", errors=[{"resource": "Issue", "field": field_, "code": "invalid"}]
    )


def etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2), as GitHub does for list endpoints."""
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


class Responder(Protocol):
    """What the handler needs of the simulator (``GitHubSimulator``)."""

    def serve(self, target: str, headers: Mapping[str, str], client_ip: str) -> Response: ...


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # otherwise Nagle + delayed ACK stall each response ~40 ms
    server: Server

    def do_GET(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        simulator: Responder = self.server.context
        response = simulator.serve(self.path, headers, self.client_address[0])
        self._send(response)

    def _send(self, response: Response) -> None:
        """Status line, headers and body in one write: split writes meet delayed ACKs."""
        reason = HTTPStatus(response.status).phrase
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Date: {self.date_time_string()}",
            "Server: github-simulator",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if response.status != 304:
            lines += [
                "Content-Type: application/json; charset=utf-8",
                f"Content-Length: {len(response.body)}",
            ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if response.status == 304 else response.body))

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: `GitHubSimulator.requests` is the log, and it never holds a token."""
