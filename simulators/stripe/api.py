"""``StripeSimulator``: the event list, a clock, retention and the faults behind one loopback HTTP server."""

from __future__ import annotations

import base64
import hmac
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulators.httpserver import LoopbackServer, Served
from simulators.stripe.data import Lifecycle, mirror_state
from simulators.stripe.stream import Entry, EventList, QueryError, new_id, parse_query
from simulators.workos.wire import RESET, Handler, Response

__all__ = ["API_VERSION", "DEFAULT_NOW", "RETENTION_SECONDS", "Faults", "StripeSimulator"]

#: The simulator's clock starts here (epoch seconds), so runs depend only on their arguments.
DEFAULT_NOW = int(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp())
RETENTION_SECONDS = 30 * 86_400  # Stripe lists events of the last 30 days
API_VERSION = "2024-06-20"
HISTORY_SECONDS = 20 * 86_400


@dataclass
class Faults:
    """Fault knobs, per ``/v1/events`` request. Rates draw from one seeded RNG (reproducible for a
    sequential client); ``queue`` holds one-shot answers served first, in order: ``(status, retry_after)``
    (status 0: the connection is reset). ``latency``: seconds every answer waits."""

    rate_limit_rate: float = 0.0
    error_rate: float = 0.0
    retry_after: float | None = 1.0
    latency: float = 0.0
    queue: list[tuple[int, float | None]] = field(default_factory=list)

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = 1.0) -> None:
        self.queue.extend([(status, retry_after)] * count)


class _Handler(Handler):
    server_version = "StripeSimulator/1"


class StripeSimulator(Served):
    """Stripe's ``GET /v1/events`` on loopback. Thread-safe.

    ``events`` initial events are spread over the 20 days before ``now`` (a few per second in places, so
    same-second runs exist). New events are created at ``now`` (``add``, ``generate``); ``advance`` moves
    the clock, and events older than 30 days expire. ``on_request(n)`` (optional) is called before the
    n-th ``/v1/events`` request is answered: tests add events there, as if they arrived mid-walk.
    """

    def __init__(self, *, events: int = 0, seed: int = 0, api_key: str = "sk_test_simulator",
                 now: int = DEFAULT_NOW, api_version: str = API_VERSION, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.now = now
        self.api_version = api_version
        self.faults = Faults()
        self.requests: list[tuple[str, int]] = []
        self.on_request: Callable[[int], None] | None = None
        self._served = 0  # /v1/events requests so far
        self._api_key = api_key
        self._lock = threading.RLock()
        self._ids = random.Random(seed ^ 0x1D5)
        self._fault_rng = random.Random(seed ^ 0xFA17)
        self._lifecycle = Lifecycle(seed)
        self._list = EventList()
        self._http = LoopbackServer(_Handler, context=self, host=host, port=port, name="stripe-simulator")
        self._seed_history(events)

    def __repr__(self) -> str:  # never shows the api key
        return f"StripeSimulator(events={len(self._list)}, url={self._http.url_or_none!r})"

    def _seed_history(self, count: int) -> None:
        start, created = self.now - HISTORY_SECONDS, self.now - HISTORY_SECONDS
        for i in range(count):
            if self._lifecycle.rng.random() > 0.3:  # else another event in the same second
                created = max(created, start + (i * HISTORY_SECONDS) // max(count, 1))
            self._push(*self._lifecycle.next(created), created)

    # ---- data
    def _push(self, etype: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
        event_id = new_id(self._ids)
        event: dict[str, Any] = {"id": event_id, "object": "event", "api_version": self.api_version, "created": created,
                 "data": {"object": obj}, "livemode": False, "pending_webhooks": 0,
                 "request": {"id": None, "idempotency_key": None}, "type": etype}
        self._list.append(Entry(event, created, event_id))
        return event

    def generate(self, n: int, *, at: int | None = None) -> list[dict[str, Any]]:
        """Append ``n`` lifecycle events created at second ``at`` (default ``now``; not before the newest)."""
        with self._lock:
            created = self.now if at is None else at
            return [self._push(*self._lifecycle.next(created), created) for _ in range(n)]

    def add(self, etype: str, obj: dict[str, Any], *, at: int | None = None) -> dict[str, Any]:
        """Append one event of type ``etype`` about ``obj``."""
        with self._lock:
            return self._push(etype, obj, self.now if at is None else at)

    def append_raw(self, raw: Any) -> None:
        """Append an event served exactly as given (malformed ones too), listed as created ``now``."""
        with self._lock:
            event_id = raw.get("id") if isinstance(raw, dict) else None
            self._list.append(Entry(raw, self.now, event_id if isinstance(event_id, str) else None))

    def advance(self, seconds: int) -> int:
        """Move the clock; events past retention expire. Returns how many expired."""
        with self._lock:
            self.now += seconds
            return self._list.expire(self.now - RETENTION_SECONDS)

    def events(self) -> list[dict[str, Any]]:
        """Every listed event, oldest first (Stripe's list order, reversed)."""
        with self._lock:
            return [json.loads(json.dumps(e.raw)) for e in self._list.events]

    def final_state(self) -> dict[str, dict[str, dict[str, Any]]]:
        return mirror_state(self.events())

    def record(self, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((path, status))

    # ---- serving
    def respond(self, target: str, authorization: str) -> Response:
        path, _, query = target.partition("?")
        if path != "/v1/events":
            return _error(QueryError(404, None, f"Unrecognized request URL (GET: {path[:80]})", "url_invalid"))
        with self._lock:
            number, self._served = self._served, self._served + 1
            fault = self._fault()
        if self.faults.latency:
            threading.Event().wait(self.faults.latency)
        if fault is not None:
            return fault
        if not self._authorized(authorization):
            return Response(401, b'{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: '
                                 + _masked(authorization).encode() + b'"}}')
        if self.on_request is not None:
            self.on_request(number)
        with self._lock:
            try:
                data, more = self._list.page(parse_query(query))
            except QueryError as exc:
                return _error(exc)
            body = {"object": "list", "url": "/v1/events", "has_more": more,
                    "data": [e.raw for e in data]}
            return Response(200, json.dumps(body).encode())

    def _fault(self) -> Response | None:
        faults = self.faults
        if faults.queue:
            status, wait = faults.queue.pop(0)
        else:
            draw = self._fault_rng.random()
            if draw < faults.rate_limit_rate:
                status, wait = 429, faults.retry_after
            elif draw < faults.rate_limit_rate + faults.error_rate:
                status, wait = 500, None
            else:
                return None
        if status == 0:
            return RESET
        headers = (("Retry-After", f"{wait:g}"),) if wait is not None else ()
        message = b"Too many requests" if status == 429 else b"An unknown error occurred"
        return Response(status, b'{"error":{"type":"api_error","message":"' + message + b'"}}', headers=headers)

    def _authorized(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.encode(), self._api_key.encode())


def _masked(authorization: str) -> str:
    """Stripe's way of quoting a wrong key back: its prefix and last four characters."""
    key = authorization.partition(" ")[2]
    return (key[:8] + "*" * 4 + key[-4:]) if len(key) > 12 else "****"


def _error(exc: QueryError) -> Response:
    return Response(exc.status, exc.body())
