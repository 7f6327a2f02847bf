"""What the ``Sandbox`` points outbound integrations at: a recording HTTP receiver with canned answers, and
a recording SMTP server (when ``aiosmtpd`` is installed). Each call is kept as a ``Call``."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler
from typing import Any

from simulators.httpserver import LoopbackServer, Served, Server, answer

__all__ = ["Call", "Mailbox", "Recorder", "Reply"]


@dataclass(frozen=True)
class Call:
    """One outbound call a workflow made, as received."""

    integration: str  # ``crm`` for SYNCD_INTEGRATION_CRM_URL; ``slack``; ``email``
    method: str  # ``POST``…; ``SMTP`` for an email
    path: str  # the path below the integration's URL; an email's recipients
    json: Any  # the JSON body; an email's ``{"to", "subject", "body"}``
    idempotency_key: str | None  # the ``Idempotency-Key`` header; an email's ``Message-ID``
    status: int  # what was answered


@dataclass(frozen=True)
class Reply:
    """A canned answer: ``Sandbox(responses={"crm": Reply(503)})``; a plain value means ``Reply(200, value)``."""

    status: int = 200
    json: Any = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def _serve(self) -> None:
        recorder: Recorder = self.server.context
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        name, _, rest = self.path.lstrip("/").partition("/")
        reply = recorder.reply(name)
        recorder.record(Call(name, self.command, "/" + rest, body, self.headers.get("Idempotency-Key"), reply.status))
        answer(self, reply.status, json.dumps({} if reply.json is None else reply.json).encode())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, *_: Any) -> None:
        return


class Recorder(Served):
    """Any method on ``/<integration>/…`` is a call of that integration, recorded in order and answered
    from ``responses`` (default: 200 with ``{}``)."""

    def __init__(self, responses: Mapping[str, Any] | None = None) -> None:
        self.responses = dict(responses or {})
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._http = LoopbackServer(_Handler, context=self, name="syncd-testing-recorder")
        self._http.bind()

    def reply(self, integration: str) -> Reply:
        found = self.responses.get(integration)
        return found if isinstance(found, Reply) else Reply(200, found)

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


class Mailbox:
    """A recording SMTP server on loopback (``aiosmtpd``); ``url`` is its ``smtp://`` URL."""

    def __init__(self, record: Any) -> None:
        from aiosmtpd.controller import Controller

        self._record = record
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.url = f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls this hook by name
        message = message_from_bytes(envelope.content)
        payload = message.get_payload(decode=True)
        body = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(message.get_payload())
        to = ",".join(envelope.rcpt_tos)
        self._record(Call("email", "SMTP", to, {"to": to, "subject": message["Subject"], "body": body.strip()},
                          message["Message-ID"], 250))
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


def mailbox_available() -> bool:
    try:
        import aiosmtpd.controller  # noqa: F401
    except ImportError:
        return False
    return True
