"""The WorkOS Events API client: one page per call, oldest first, our own cursor (the last event id).

The cursor's rules (never backwards; a cursor WorkOS rejects is healed from a time) are in ``cursor``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.workos import cursor as cursors
from syncd.contracts import Event, Page, Quarantined, Window
from syncd.contracts.providers import storable_id
from syncd.errors import AuthError, ConnectorError, FatalError, RetryableError
from syncd.http import decode_json, make_client, parse_retry_after, send, status_error_text, with_retries
from syncd.jsoncodec import safe_raw
from syncd.redaction import printable
from syncd.retrybudget import Gate, RetryAfterBudget, credential_id
from syncd.settings import Secret
from syncd.timefmt import iso, parse_time

#: The longest event id that may become the cursor.
MAX_CURSOR_ID = 1000

log = logging.getLogger("connectors.workos")

PAGE_SIZE = 100  # the API's maximum
RETENTION = timedelta(days=30)  # events are listable for 30 days (one doc page says 90)


class CursorRejectedError(FatalError):
    """WorkOS refused our ``after`` cursor (400/422): expired or unknown. The connector heals it itself when
    the cursor says when it was made; otherwise this reaches the source's status, naming the fix."""

    def __init__(self, source: str, after: str, text: str) -> None:
        self.after = after
        super().__init__(source, f"the provider rejected the cursor {after[:60]!r} ({text}); "
                                 f"set a new one: syncd cursor reset {source} --to TIME")


class NewestFirstError(FatalError):
    """The provider listed a page newest first although syncd asked ``order=asc`` (see ``cursor.newest_first``).

    Moving the cursor to such a page's newest id would skip every older event, so the tick fails here and
    the cursor stays where it was; the next tick asks again (a provider that goes back to oldest first heals
    by itself)."""

    def __init__(self, source: str, first: str, second: str, cursor: str | None) -> None:
        self.first, self.second = first, second
        where = f"at {cursor[:60]!r}" if cursor is not None else "unset"
        super().__init__(source, f"the provider listed events newest first ({first[:40]} before {second[:40]}) "
                                 f"although syncd asks order=asc; the cursor stays {where} (a proxy or an API "
                                 f"version that ignores order? check WORKOS_BASE_URL)")


def status_policy(source: str, response: httpx.Response, *, after: str | None = None) -> None:
    """Map a non-2xx response to the error saying what to do. Never sleeps. ``after``: the cursor sent, if
    any (a 400/422 to a request carrying one is the cursor being rejected)."""
    code = response.status_code
    if code < 300:
        return
    text = status_error_text(response)
    if code in (400, 422) and after is not None:
        raise CursorRejectedError(source, after, text)
    if code == 401:
        raise AuthError(source, "WORKOS_API_KEY rejected (401 Unauthorized); check the key")
    if code == 403:
        raise AuthError(source, f"WORKOS_API_KEY lacks access to the Events API ({text})")
    if code == 429:
        raise RetryableError(source, f"rate limited ({text})", parse_retry_after(response.headers.get("retry-after")))
    if code >= 500 or code == 408:
        raise RetryableError(source, f"provider error ({text})")
    if code == 422:
        raise FatalError(source, f"request rejected ({text}); check WORKOS_EVENTS and WORKOS_BASE_URL")
    raise FatalError(source, f"unexpected response ({text})")


class WorkOSConnector:
    """Connector for one WorkOS environment. ``key`` is ``workos``.

    ``prefetch``: a page depends only on the cursor it is asked for, so the engine may fetch the next page
    (from another thread) while the current one commits.
    """

    prefetch = True

    def __init__(self, *, api_key: Secret, base_url: str, event_types: Sequence[str], timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, key: str = "workos", attempts: int = 4,
                 budget: RetryAfterBudget | None = None) -> None:
        if not event_types:
            raise ValueError("WorkOS requires at least one event type")
        self.key = key
        self.event_types = list(event_types)
        self.attempts = attempts
        #: Which budget this source spends (a hash of the base URL and key, never the key), and that budget:
        #: a 429 on any source or replica of the credential holds all of them (``syncd.retrybudget``).
        self.credential = credential_id("workos", base_url, api_key)
        self.budget = budget if budget is not None else RetryAfterBudget(self.credential)
        self._client = make_client(base_url, timeout=timeout, transport=transport, headers={
            "Authorization": f"Bearer {api_key.reveal()}", "Accept": "application/json",
            "User-Agent": "syncd/0.1",
        })
        # The list endpoint's URL, whole: httpx parses a URL given as a path and params three times (its
        # own, the base URL's and the params'), character by character; a catch-up asks for thousands.
        base = self._client.base_url  # its path always ends with a slash
        self._events_url = str(base.copy_with(raw_path=base.raw_path + b"events"))

    def __repr__(self) -> str:
        return f"WorkOSConnector(key={self.key!r}, base_url={str(self._client.base_url)!r})"

    def close(self) -> None:
        self._client.close()

    def retention_warning(self, window: Window, now: datetime | None = None) -> str | None:
        """The backfill hook (``syncd.ops.backfill.retention_warnings``): see the module function."""
        return retention_warning(window, now)

    def cursor_at(self, moment: datetime) -> str:
        """The cursor that lists events from ``moment`` on (``syncd cursor reset --to``)."""
        return cursors.at(moment)

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        try:
            start = cursors.cursor_time(cursor) if cursor is not None else None
        except ValueError:
            raise FatalError(self.key, f"unreadable cursor {cursor!r}; set a new one: "
                                       f"syncd cursor reset {self.key} --to TIME") from None
        gate = Gate(self.budget, self.key, window)
        if cursor is not None and start is None:
            try:
                body = with_retries(lambda: self._get(self._params(after=cursor), gate), attempts=self.attempts)
            except CursorRejectedError as exc:
                return self._heal(cursor, exc, window)
            return self._page(body, cursor, window, after_sent=True)
        # One SDK says range_start cannot be combined with after: the first page goes by range, later pages
        # by after, and the window's end is enforced here as well as asked of the API.
        body = with_retries(lambda: self._get(self._params(start=start, window=window), gate),
                            attempts=self.attempts)
        return self._page(body, cursor, window, after_sent=False)

    def _heal(self, cursor: str, rejected: CursorRejectedError, window: Window | None) -> Page:
        """Restart the walk from shortly before the rejected cursor's time; the ledger drops what it has."""
        start = cursors.heal_start(cursor)
        if start is None:
            raise rejected
        gate = Gate(self.budget, self.key, window)
        body = with_retries(lambda: self._get(self._params(start=start, window=window), gate),
                            attempts=self.attempts)
        page = self._page(body, cursor, window, after_sent=False)
        if page.next_cursor == cursor:  # nothing listed since: keep the time, never the rejected id
            page = replace(page, next_cursor=cursors.at(start))
        note = (f"cursor healed at {iso(datetime.now(UTC))}: the provider rejected {cursor[:40]}; "
                f"restarted from range_start {iso(start)}")
        log.warning("%s: %s", self.key, note, extra={"source": self.key})
        return replace(page, meta={**page.meta, "cursor_healed": note})

    def _params(self, *, after: str | None = None, start: datetime | None = None,
                window: Window | None = None) -> list[tuple[str, str]]:
        params = [("events", ",".join(self.event_types)), ("limit", str(PAGE_SIZE)), ("order", "asc")]
        if after is not None:
            params.append(("after", after))
            return params
        if window is not None:
            start = max(start, window.start) if start is not None else window.start
        if start is not None:
            params.append(("range_start", iso(start)))
        if window is not None:
            params.append(("range_end", iso(window.end)))
        return params

    def _get(self, params: list[tuple[str, str]], gate: Gate) -> Any:
        """One request of a retry loop (``gate``: its credential's 429 holds, ``syncd.retrybudget``)."""
        url = httpx.URL(f"{self._events_url}?{httpx.QueryParams(tuple(params))}")  # as base_url + params make it
        after = next((value for name, value in params if name == "after"), None)
        gate.before()
        response = send(self._client, self.key, "GET", url)
        gate.after(response.status_code, response.headers.get("retry-after"))
        status_policy(self.key, response, after=after)
        body = decode_json(self.key, response)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise RetryableError(self.key, "response is not an event list (no data array)")
        if not isinstance(body.get("list_metadata") or {}, dict):
            raise RetryableError(self.key, "response's list_metadata is not an object")
        return body

    def _page(self, body: dict[str, Any], cursor: str | None, window: Window | None, *, after_sent: bool) -> Page:
        """The page's events and cursor. After an ``after`` request the cursor never moves back (events older
        than it are still handed on: the ledger drops those it has). A first page by time (``@TIME``, a heal)
        may end before the old cursor: its last id comes from the provider's own listing."""
        backwards = cursors.newest_first(body["data"])
        if backwards is not None:
            raise NewestFirstError(self.key, *backwards, cursor)
        events: list[Event] = []
        held: list[Quarantined] = []
        stale = 0
        last_id = cursor if after_sent else None
        past_window = False
        for raw in body["data"]:
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            if storable_id(raw_id, MAX_CURSOR_ID):
                moved = cursors.later(last_id, raw_id)
                stale += moved != raw_id
                last_id = moved
            try:
                event = parse_event(self.key, raw)
            except ValueError as exc:
                held.append(Quarantined(self.key, raw_id if isinstance(raw_id, str) and raw_id else None,
                                        str(exc)[:300], safe_raw(raw), _time_or_none(raw)))
                log.error("skipping a malformed WorkOS event after %s: %s", printable(str(last_id)),
                          printable(str(exc)), extra={"source": self.key})
                continue
            if window is not None and event.occurred_at >= window.end:
                past_window = True
                break
            if window is not None and event.occurred_at < window.start:
                continue
            events.append(event)
        if past_window:
            last_id = cursors.later(cursor if after_sent else None, events[-1].id) if events else cursor
        if stale:
            log.warning("%s: the provider listed %d event(s) older than the cursor %s; the cursor stays",
                        self.key, stale, cursor, extra={"source": self.key})
        after = (body.get("list_metadata") or {}).get("after")
        has_more = bool(after) and not past_window and bool(body["data"])
        next_cursor = last_id if last_id is not None else cursor
        fit = storable_id(after, MAX_CURSOR_ID)
        if has_more and next_cursor == cursor and fit:  # no usable id listed: the provider's own
            next_cursor = cursors.later(cursor, after)
        return Page(events=tuple(events), next_cursor=next_cursor,
                    has_more=has_more, skipped=len(held), quarantined=tuple(held))


def _time_or_none(raw: Any) -> datetime | None:
    """A malformed event's time, if it has a readable one (``syncd cursor reset --to`` fetches it again)."""
    try:
        return parse_time(raw.get("created_at")) if isinstance(raw, dict) else None
    except (ValueError, OverflowError):
        return None




def parse_event(stream: str, raw: Any) -> Event:
    """A WorkOS event dict → Event. ``ValueError`` names what is wrong (the event is then skipped)."""
    if not isinstance(raw, dict):
        raise ValueError(f"event is not an object: {type(raw).__name__}")
    event_id, event_type, data = raw.get("id"), raw.get("event"), raw.get("data")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event has no id")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event {event_id[:100]} has no type ('event' field)")
    if not isinstance(data, dict):
        raise ValueError(f"event {event_id[:100]} has no data object")
    try:
        occurred_at = parse_time(raw.get("created_at"))
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"event {event_id[:100]}: created_at {exc}"[:300]) from None
    return Event(stream=stream, id=event_id, type=event_type, occurred_at=occurred_at, data=data)


def retention_warning(window: Window, now: datetime | None = None) -> str | None:
    """A warning when a backfill window starts before what WorkOS still lists."""
    oldest = (now or datetime.now(UTC)) - RETENTION
    if window.start < oldest:
        return (f"the window starts {window.start.isoformat()}, but WorkOS keeps events for about "
                f"{RETENTION.days} days (from {oldest.isoformat()}); older events cannot be fetched")
    return None


__all__ = ["ConnectorError", "CursorRejectedError", "NewestFirstError", "WorkOSConnector", "parse_event",
           "retention_warning", "status_policy"]
