"""GitHub's issue listing as a source: ``since`` paging with a same-second ledger, ETag polls, rate limits.

One connector per repository polls
``GET /repos/{owner}/{repo}/issues?state=all&sort=updated&direction=asc&per_page=100[&since=S]``.
By responsibility: ``cursor`` (the cursor and its state machine, ``advance``: read its docstring first),
``policy`` (status codes and rate limits), ``actions`` (snapshots → events), ``reconcile`` and ``recstate``
(deleted and transferred issues, which the listing never shows: steps run as pages of the same cursor when
one is due, its state under ``"rec"`` in the cursor), ``mirrorindex`` (what the mirror holds), and here the
connector, which does the I/O and guards what a provider may get wrong:

- a ``Link rel="next"`` to another host, or relative, is never followed nor stored (the token only goes to
  ``GITHUB_BASE_URL``): the next page's URL is built from our own base instead, and status says so; a
  cursor stored with such a link (before this rule) drops it and walks its second again from the start;
- an ``updated_at`` later than now + ``FUTURE_SKEW_SECONDS`` is emitted but never becomes ``since``, and
  status says so; a stored ``since`` beyond that is brought back to it;
- waits computed from rate-limit headers are capped (``policy.MAX_WAIT_SECONDS``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.github.actions import (
    ACTIONS,
    EVENT_TYPE,
    StateMemory,
    derive_action,
    is_pull_request,
    parse_issue,
    valid_actions,
)
from connectors.github.cursor import SEEN_LIMIT, Cursor, advance, canonical_second
from connectors.github.mirrorindex import MirrorIndex
from connectors.github.policy import (
    is_secondary,
    rate_limit_meta,
    secondary_wait,
    status_policy,
    throttle_wait,
)
from connectors.github.pool import MAX_CONNECTIONS, clients, credential_id
from connectors.github.ratebudget import CredentialBudget, budget_for
from connectors.github.reconcile import Reconciler
from connectors.github.recstate import Rec
from syncd.contracts import Event, Page, Quarantined, Window
from syncd.errors import FatalError, RetryableError
from syncd.http import decode_json, make_client, send, with_retries
from syncd.jsoncodec import safe_raw
from syncd.redaction import printable, redact_url
from syncd.settings import Secret
from syncd.timefmt import parse_time

log = logging.getLogger("connectors.github")

PAGE_SIZE = 100  # the API's maximum
#: How far ahead of our clock an ``updated_at`` may lie and still move ``since`` (clocks drift a little).
FUTURE_SKEW_SECONDS = 300
NOTE_FUTURE = "note_future_updated_at"
NOTE_LINK = "note_link"


class GitHubConnector:
    """Connector for one repository. ``key`` is ``github:owner/repo`` (lower case)."""

    def __init__(self, *, repo: str, base_url: str, token: Secret | None = None, timeout: float = 30.0,
                 page_size: int = PAGE_SIZE, transport: httpx.BaseTransport | None = None, attempts: int = 4,
                 clock: Callable[[], float] = time.time, budget: CredentialBudget | None = None,
                 reconcile_seconds: float = 0.0, mirror: MirrorIndex | None = None) -> None:
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{PAGE_SIZE}")
        self.repo = repo.lower()
        self.key = f"github:{self.repo}"
        self.page_size = page_size
        self.attempts = attempts
        self.anonymous = token is None
        self._clock = clock
        self._strikes = 0  # consecutive secondary rate limits
        self._memory = StateMemory()
        #: Provider faults worth showing in status while they last (shown with every page's meta).
        self._notes: dict[str, str] = {}
        #: Which budget this repository spends (``pool.credential_id``: a hash, never the token).
        self.credential = credential_id(base_url, token)
        #: The credential's request budget, shared by its repositories (the scheduler paces them with it).
        self.budget = budget if budget is not None else budget_for(self.credential)
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "syncd/0.1"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        self._shared: tuple[str, ...] | None = None  # the pool's key when the client is shared
        self._released = False
        if transport is None:  # one client per credential in the process (see pool)
            self._shared = (self.credential, base_url, repr(timeout))
            self._client = clients.acquire(self._shared, lambda: make_client(
                base_url, timeout=timeout, headers=headers, max_connections=MAX_CONNECTIONS))
        else:
            self._client = make_client(base_url, timeout=timeout, transport=transport, headers=headers)
        self._rate_meta: dict[str, Any] = {}  # of the last answer: shown with a reconciliation's pages
        self._last_url: tuple[str | None, httpx.URL] | None = None  # see _listing_url
        #: Deletions and transfers (``reconcile``): on when the mirror is there to compare with.
        self._mirror = mirror
        self._reconciler = (Reconciler(key=self.key, repo=self.repo, every=reconcile_seconds, mirror=mirror,
                                       request=self._request, clock=clock, page_size=page_size)
                            if mirror is not None and reconcile_seconds > 0 else None)

    def __repr__(self) -> str:
        return f"GitHubConnector(key={self.key!r}, base_url={str(self._client.base_url)!r})"

    def close(self) -> None:
        """Let go of the HTTP client (a shared one closes with its last repository) and of the mirror's
        connections. Idempotent."""
        if self._mirror is not None:
            self._mirror.close()
        if self._shared is None:
            self._client.close()
        elif not self._released:
            self._released = True
            clients.release(self._shared)

    def cursor_at(self, moment: datetime) -> str:
        """The cursor that lists every issue version from ``moment`` on (``syncd cursor reset --to``); the
        next reconciliation is one interval away."""
        text = Cursor(since=canonical_second(moment)).dumps()
        return with_rec(text, Rec(at=self._clock())) if self._reconciler is not None else text

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        """A page of the listing (see ``cursor``) or, when one is due and the listing is caught up, a step of
        a reconciliation (see ``reconcile``). Backfill windows only list."""
        reconciler = self._reconciler
        if reconciler is None or window is not None:
            return self._poll(cursor, window)
        now = self._clock()
        rec, stored = self._rec(cursor, now)
        spare = self.budget.spare(now)  # below the reconciliation's reserve, only polls spend
        if rec.active and spare:
            events, rec = reconciler.step(rec)
            return Page(events=tuple(events), next_cursor=with_rec(cursor or Cursor().dumps(), rec),
                        has_more=rec.active, meta=self._meta(rec))
        page = self._poll(cursor, window)
        begin = not page.has_more and spare and rec.due(now, reconciler.every)
        if begin:
            rec = rec.begin(now)
        if page.next_cursor is None and stored and not begin:  # nothing moved: no write (idle ticks stay free)
            return replace(page, meta={**page.meta, **self._meta(rec)})
        moved = page.next_cursor if page.next_cursor is not None else (cursor or Cursor().dumps())
        return replace(page, next_cursor=with_rec(moved, rec), has_more=page.has_more or begin,
                       meta={**page.meta, **self._meta(rec)})

    def _rec(self, cursor: str | None, now: float) -> tuple[Rec, bool]:
        """The cursor's reconciliation state, and whether it holds one (else: the first one interval away)."""
        body = _json_object(cursor)
        if body is None or "rec" not in body:
            return Rec(at=now), False
        try:
            return Rec.from_json(body["rec"]), True
        except ValueError as exc:  # only reconciliation's own state is lost: it starts over later
            log.warning("%s: %s; the next reconciliation is one interval away", self.key, exc,
                        extra={"source": self.key})
            return Rec(at=now), False

    def _meta(self, rec: Rec) -> dict[str, Any]:
        meta: dict[str, Any] = {**self._rate_meta, **self._notes,
                                "reconciled_at": datetime.fromtimestamp(rec.at, UTC).isoformat()}
        if rec.page:
            meta["reconciling"] = f"listing page {rec.page}"
        elif rec.check:
            meta["reconciling"] = f"{len(rec.check)} missing issue(s) to ask about"
        return meta

    def _request(self, path: str, *, params: list[tuple[str, str]] | None = None,
                 headers: Mapping[str, str] | None = None, answers: frozenset[int] = frozenset()) -> httpx.Response:
        """GET ``path`` with retries, counted in the budget; the status policy applies except to ``answers``."""
        def once() -> httpx.Response:
            response = send(self._client, self.key, "GET", path, params=params, headers=dict(headers or {}))
            self._answered(response, check=response.status_code not in answers)
            return response

        return with_retries(once, attempts=self.attempts)

    def _poll(self, cursor: str | None, window: Window | None) -> Page:
        state = self._state(cursor, window)
        response = with_retries(lambda: self._get(state), attempts=self.attempts)
        meta = self._rate_meta  # the headers of this response (``_answered``), read once
        if response.status_code == 304:
            return Page(events=(), next_cursor=None, has_more=False, meta={**meta, **self._notes})
        body = decode_json(self.key, response)
        if not isinstance(body, list):
            raise RetryableError(self.key, "response is not an issue list (no JSON array)")
        next_url = self._next_link(response, state)
        return self._page(state, body, next_url=next_url, etag=response.headers.get("etag"), window=window,
                          meta=meta)

    def _horizon(self) -> str:
        return canonical_second(datetime.fromtimestamp(self._clock() + FUTURE_SKEW_SECONDS, UTC))

    def _state(self, cursor: str | None, window: Window | None) -> Cursor:
        if cursor is None:
            return Cursor(since=canonical_second(window.start)) if window is not None else Cursor()
        try:
            state = Cursor.loads(cursor)
        except ValueError as exc:
            raise FatalError(self.key, f"{exc}; reset it: syncd cursor reset {self.key} --to TIME") from None
        if state.next_url is not None and not self._on_base(state.next_url):
            log.warning("%s: the stored cursor follows a link off %s; walking its second again from the start",
                        self.key, self._base_text(), extra={"source": self.key})
            state = replace(state, next_url=None, walk=frozenset())
        horizon = self._horizon()
        if state.since is not None and state.since > horizon:
            self._note(NOTE_FUTURE, f"the stored since {state.since} lay in the future; moved back to {horizon}. "
                                    f"Changes since the jump may be missing: syncd cursor reset {self.key} --to TIME")
            state = Cursor(since=horizon)
        return state

    def _get(self, state: Cursor) -> httpx.Response:
        if state.next_url is not None:
            response = send(self._client, self.key, "GET", state.next_url)
        else:
            headers = {"If-None-Match": state.etag} if state.etag else None
            response = send(self._client, self.key, "GET", self._listing_url(state.since), headers=headers)
        self._answered(response)
        return response

    def _listing_url(self, since: str | None) -> httpx.URL:
        """The listing's URL from ``since``, as httpx builds it; kept while ``since`` stays (every idle poll of
        a repository asks the same URL: it is built and parsed once, not per poll)."""
        cached = self._last_url
        if cached is None or cached[0] != since:
            url = self._client.build_request("GET", f"/repos/{self.repo}/issues",
                                             params=tuple(self._listing_params(since))).url
            cached = self._last_url = (since, url)
        return cached[1]

    def _answered(self, response: httpx.Response, *, check: bool = True) -> None:
        """Count ``response`` in the budget, keep its rate-limit headers and (``check``) apply the status policy."""
        self.budget.seen(response.headers)
        self._rate_meta = rate_limit_meta(response.headers, anonymous=self.anonymous)
        if not check:
            return
        try:
            status_policy(self.key, self.repo, response, now=self._clock(), strikes=self._strikes,
                          anonymous=self.anonymous)
        except RetryableError:
            if is_secondary(response):
                self._strikes += 1
            raise
        self._strikes = 0

    def _listing_params(self, since: str | None, page: int | None = None) -> list[tuple[str, str]]:
        params = [("state", "all"), ("sort", "updated"), ("direction", "asc"), ("per_page", str(self.page_size))]
        if since is not None:
            params.append(("since", since))
        if page is not None:
            params.append(("page", str(page)))
        return params

    def _next_link(self, response: httpx.Response, state: Cursor) -> str | None:
        """The next page's URL: the ``Link rel="next"`` as given when it points at our base; otherwise (another
        host, relative, unreadable) one built from our base, so no cursor ever holds a link we refuse."""
        link = response.links.get("next", {}).get("url")
        if link is None:
            return None
        if self._on_base(link):
            self._notes.pop(NOTE_LINK, None)
            return link
        shown = redact_url(link) if "://" in link else "a relative URL"
        self._note(NOTE_LINK, f"the provider's next link pointed at {shown}, not {self._base_text()}; "
                              "following our own page URL instead")
        page = _page_number(str(response.request.url)) + 1
        built = self._client.build_request("GET", f"/repos/{self.repo}/issues",
                                           params=tuple(self._listing_params(state.since, page)))
        return str(built.url)

    def _on_base(self, url: str) -> bool:
        try:
            link = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            return False
        base = self._client.base_url
        return link.is_absolute_url and (link.scheme, link.host, link.port) == (base.scheme, base.host, base.port)

    def _base_text(self) -> str:
        return redact_url(str(self._client.base_url))

    def _page(self, state: Cursor, body: list[Any], *, next_url: str | None, etag: str | None,
              window: Window | None, meta: Mapping[str, Any]) -> Page:
        events: list[Event] = []
        listed: list[tuple[int, str]] = []
        held: list[Quarantined] = []
        past_window = False
        horizon = self._horizon()
        future: list[tuple[int, str]] = []
        for raw in body:
            try:
                version = parse_issue(raw)
            except ValueError as exc:
                raw_id = raw.get("id") if isinstance(raw, dict) else None
                held.append(Quarantined(self.key, str(raw_id) if isinstance(raw_id, int | str) and raw_id != ""
                                        else None, str(exc)[:300], safe_raw(raw)))
                log.error("skipping a malformed GitHub issue: %s", printable(str(exc)[:300]),
                          extra={"source": self.key})
                continue
            if window is not None and parse_time(version[1]) >= window.end:
                past_window = True
                break
            listed.append(version)
            if version[1] > horizon:
                future.append(version)
            if version in state.seen or (state.since is not None and version[1] < state.since):
                continue
            event = self._event(raw, *version)
            if window is None or window.contains(event.occurred_at):
                events.append(event)
        self._note_future(future, last_page=next_url is None)
        if past_window:
            next_url, etag = None, None
        new_state, has_more = advance(state, listed, next_url=next_url, etag=etag, horizon=horizon,
                                      via_link=state.next_url is not None or past_window)
        return Page(events=tuple(events), next_cursor=new_state.dumps(),
                    has_more=has_more and not past_window, skipped=len(held), meta={**meta, **self._notes},
                    quarantined=tuple(held))

    def _note_future(self, future: list[tuple[int, str]], *, last_page: bool) -> None:
        if future:
            issue_id, second = max(future, key=lambda v: v[1])
            self._note(NOTE_FUTURE, f"issue {issue_id} has updated_at {second}, after now + {FUTURE_SKEW_SECONDS}s; "
                                    "since is held at now + that")
        elif last_page:  # the end of the list holds the latest versions: none lies in the future any more
            self._notes.pop(NOTE_FUTURE, None)

    def _note(self, name: str, text: str) -> None:
        """Keep a note for status; log it when it is new (not on every poll while the fault lasts)."""
        if self._notes.get(name) != text:
            log.warning("%s: %s", self.key, text, extra={"source": self.key})
        self._notes[name] = text

    def _event(self, raw: dict[str, Any], issue_id: int, updated: str) -> Event:
        action = self._memory.action(issue_id, raw, updated)
        return Event(stream=self.key, id=f"{issue_id}@{updated}", type=EVENT_TYPE,
                     occurred_at=parse_time(updated), data=raw, action=action)


def with_rec(cursor: str, rec: Rec) -> str:
    """``cursor`` (a listing cursor's text) holding ``rec`` under ``"rec"`` (``Cursor.loads`` ignores it)."""
    body = _json_object(cursor) or {}
    body["rec"] = rec.to_json()
    return json.dumps(body, separators=(",", ":"))


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _page_number(url: str) -> int:
    try:
        return max(1, int(httpx.URL(url).params.get("page", "1")))
    except (ValueError, httpx.InvalidURL):
        return 1


__all__ = ["ACTIONS", "EVENT_TYPE", "FUTURE_SKEW_SECONDS", "PAGE_SIZE", "SEEN_LIMIT", "Cursor", "GitHubConnector",
           "advance", "derive_action", "is_pull_request", "rate_limit_meta", "secondary_wait", "status_policy",
           "throttle_wait", "valid_actions"]
