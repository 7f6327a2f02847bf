"""Stripe's Events API (``GET /v1/events``) as a source: one page per call, oldest first.

How the walk goes (newest-first lists, id cursors that carry no order, first sync, crashes, windows,
healing) is the state machine in ``cursor``: read its docstring first. Here: the I/O, the status-code
policy and reading events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.stripe import cursor as cursors
from connectors.stripe.cursor import Bounds, Listed, State
from syncd.contracts import Event, Page, Quarantined, Window
from syncd.contracts.providers import storable_id
from syncd.errors import AuthError, FatalError, RetryableError
from syncd.http import decode_json, make_client, parse_retry_after, send, with_retries
from syncd.jsoncodec import safe_raw
from syncd.redaction import printable, scrub
from syncd.retrybudget import Gate, RetryAfterBudget, credential_id
from syncd.settings import Secret
from syncd.timefmt import iso

log = logging.getLogger("connectors.stripe")

PAGE_SIZE = 100  # the API's maximum
MAX_TYPES = 20  # Stripe's limit on types[]
RETENTION = timedelta(days=30)
ACTION_LIMIT = 64  # the ledger's action column, where the event's api_version is kept
_CURSOR_PARAMS = ("ending_before", "starting_after")


class CursorRejectedError(FatalError):
    """Stripe no longer lists the event our cursor names (expired, or unknown): the connector heals it."""

    def __init__(self, source: str, param: str, text: str) -> None:
        self.param = param
        self.detail = f"the provider refused {param} ({text})"
        super().__init__(source, self.detail)


def error_text(response: httpx.Response) -> str:
    """``HTTP 404: <Stripe's message>``, short and scrubbed (never used for 401/403: Stripe quotes the key)."""
    message = ""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("code") or "")
    except ValueError:
        pass
    return f"HTTP {response.status_code}" + (f": {scrub(message[:300])}" if message else "")


def _error_field(response: httpx.Response, name: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get(name) if isinstance(error, dict) else None


def status_policy(source: str, response: httpx.Response, *, cursor_param: str | None = None) -> None:
    """Map a non-2xx response to the error saying what to do. Never sleeps. ``cursor_param``: the id
    cursor the request carried, if any (a 400/404 naming it, or ``resource_missing``, refuses the cursor)."""
    code = response.status_code
    if code < 300:
        return
    if code == 401:  # Stripe's message quotes part of the key: never repeated
        raise AuthError(source, "STRIPE_API_KEY rejected (401 Unauthorized); check the key")
    if code == 403:
        raise AuthError(source, "STRIPE_API_KEY may not list events (403 Forbidden); a restricted key needs "
                                "read access to Events")
    text = error_text(response)
    if code == 429:
        raise RetryableError(source, f"rate limited ({text})", parse_retry_after(response.headers.get("retry-after")))
    if code >= 500 or code == 408:
        raise RetryableError(source, f"provider error ({text})")
    if code in (400, 404) and cursor_param is not None and (
            _error_field(response, "param") == cursor_param or _error_field(response, "code") == "resource_missing"):
        raise CursorRejectedError(source, cursor_param, text)
    if code == 400:
        raise FatalError(source, f"request refused ({text}); check STRIPE_EVENTS")
    if code == 404:
        raise FatalError(source, f"no events list there ({text}); check STRIPE_BASE_URL")
    raise FatalError(source, f"unexpected response ({text})")


class StripeConnector:
    """Connector for one Stripe account. ``key`` is ``stripe``.

    ``event_types``: sent as ``types[]`` (at most 20; None or empty: every type). ``prefetch``: a page
    depends only on the cursor it is asked for, so the engine may fetch the next one while this one commits.
    """

    prefetch = True

    def __init__(self, *, api_key: Secret, base_url: str, event_types: Sequence[str] | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None, key: str = "stripe",
                 attempts: int = 4, budget: RetryAfterBudget | None = None, page_size: int = PAGE_SIZE) -> None:
        if event_types is not None and len(event_types) > MAX_TYPES:
            raise ValueError(f"Stripe accepts at most {MAX_TYPES} event types")
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{PAGE_SIZE}")
        self.key = key
        self.event_types = sorted(set(event_types or ()))
        self.attempts = attempts
        #: Which budget this source spends (a hash of the base URL and key, never the key), and that budget:
        #: a 429 on any source or replica of the credential holds all of them (``syncd.retrybudget``).
        self.credential = credential_id("stripe", base_url, api_key)
        self.budget = budget if budget is not None else RetryAfterBudget(self.credential)
        self.page_size = page_size
        self._client = make_client(base_url, timeout=timeout, transport=transport, headers={
            "Authorization": f"Bearer {api_key.reveal()}", "Accept": "application/json", "User-Agent": "syncd/0.1",
        })

    def __repr__(self) -> str:
        return f"StripeConnector(key={self.key!r}, base_url={str(self._client.base_url)!r})"

    def close(self) -> None:
        self._client.close()

    def cursor_at(self, moment: datetime) -> str:
        """The cursor that lists events created from ``moment`` on (``syncd cursor reset --to``)."""
        return cursors.dumps(cursors.Search(Bounds.of(moment, None).start))

    def retention_warning(self, window: Window, now: datetime | None = None) -> str | None:
        """The backfill hook (``syncd.ops.backfill.retention_warnings``)."""
        oldest = (now or datetime.now(UTC)) - RETENTION
        if window.start < oldest:
            return (f"the window starts {iso(window.start)}, but Stripe keeps events for {RETENTION.days} days "
                    f"(from {iso(oldest)}); older events cannot be fetched")
        return None

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        bounds = Bounds.of(window.start, window.end) if window is not None else Bounds()
        state = self._state(cursor)
        gate = Gate(self.budget, self.key, window)
        try:
            body = with_retries(lambda: self._get(state, bounds, gate), attempts=self.attempts)
        except CursorRejectedError as exc:
            assert state is not None  # only a request with an id cursor can be refused
            healed = cursors.heal(state, bounds)
            since = "the oldest event" if healed.start is None else iso(datetime.fromtimestamp(healed.start, UTC))
            note = f"cursor healed at {iso(datetime.now(UTC))}: {exc.detail}; walking again from {since}"
            log.warning("%s: %s", self.key, note, extra={"source": self.key})
            return Page(events=(), next_cursor=cursors.dumps(healed), has_more=True, meta={"cursor_healed": note})
        data: list[Any] = body["data"]
        listed = [_listed(raw) for raw in data]
        try:
            step = cursors.advance(state, listed, body["has_more"], bounds)
        except ValueError as exc:
            raise RetryableError(self.key, f"unusable page: {exc}") from None
        events: list[Event] = []
        held: list[Quarantined] = []
        if step.deliver:
            self._read(reversed(data), window, events, held)
        next_cursor = cursors.dumps(step.state) if step.state is not None else None
        return Page(events=tuple(events), next_cursor=next_cursor, has_more=step.more, skipped=len(held),
                    quarantined=tuple(held))

    def _state(self, cursor: str | None) -> State | None:
        if cursor is None:
            return None
        try:
            return cursors.loads(cursor)
        except ValueError as exc:
            raise FatalError(self.key, f"{exc}; set a new one: syncd cursor reset {self.key} --to TIME") from None

    def _get(self, state: State | None, bounds: Bounds, gate: Gate) -> dict[str, Any]:
        """One request of a retry loop (``gate``: its credential's 429 holds, ``syncd.retrybudget``)."""
        asked = cursors.request(state, bounds)
        limit = [] if any(name == "limit" for name, _ in asked) else [("limit", str(self.page_size))]
        params = [*limit, *(("types[]", t) for t in self.event_types), *asked]
        cursor_param = next((name for name, _ in params if name in _CURSOR_PARAMS), None)
        gate.before()
        response = send(self._client, self.key, "GET", "/v1/events", params=params)
        gate.after(response.status_code, response.headers.get("retry-after"))
        status_policy(self.key, response, cursor_param=cursor_param)
        body = decode_json(self.key, response)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise RetryableError(self.key, "response is not an event list (no data array)")
        if not isinstance(body.get("has_more"), bool):
            raise RetryableError(self.key, "response's has_more is not a boolean")
        return body

    def _read(self, oldest_first: Any, window: Window | None, events: list[Event], held: list[Quarantined]) -> None:
        for raw in oldest_first:
            try:
                event = parse_event(self.key, raw)
            except ValueError as exc:
                raw_id = raw.get("id") if isinstance(raw, dict) else None
                held.append(Quarantined(self.key, raw_id if isinstance(raw_id, str) and raw_id else None,
                                        str(exc)[:300], safe_raw(raw), _time_or_none(raw)))
                log.error("skipping a malformed Stripe event: %s", printable(str(exc)[:300]),
                          extra={"source": self.key})
                continue
            if window is None or window.contains(event.occurred_at):
                events.append(event)




def _created(raw: Any) -> int | None:
    created = raw.get("created") if isinstance(raw, dict) else None
    return created if isinstance(created, int) and not isinstance(created, bool) else None


def _listed(raw: Any) -> Listed:
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    return Listed(raw_id if storable_id(raw_id, 255) else None, _created(raw))


def _time_or_none(raw: Any) -> datetime | None:
    created = _created(raw)
    try:
        return datetime.fromtimestamp(created, UTC) if created is not None else None
    except (OverflowError, OSError, ValueError):
        return None


def parse_event(stream: str, raw: Any) -> Event:
    """A Stripe event → Event: ``data`` is ``data.object``, ``action`` the event's ``api_version``.
    ``ValueError`` names what is wrong (the event is then quarantined)."""
    if not isinstance(raw, dict):
        raise ValueError(f"event is not an object: {type(raw).__name__}")
    event_id, event_type, data = raw.get("id"), raw.get("type"), raw.get("data")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event has no id")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event {event_id[:100]} has no type")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise ValueError(f"event {event_id[:100]} has no data.object")
    occurred_at = _time_or_none(raw)
    if occurred_at is None:
        raise ValueError(f"event {event_id[:100]} has no readable created time")
    version = raw.get("api_version")
    action = version if isinstance(version, str) and 0 < len(version) <= ACTION_LIMIT else None
    return Event(stream=stream, id=event_id, type=event_type, occurred_at=occurred_at, data=obj, action=action)


__all__ = ["MAX_TYPES", "PAGE_SIZE", "CursorRejectedError", "StripeConnector", "error_text", "parse_event",
           "status_policy"]
