"""GitHub's issue listing as a source: ``since`` paging with a same-second ledger, ETag polls, rate limits.

One connector per repository polls
``GET /repos/{owner}/{repo}/issues?state=all&sort=updated&direction=asc&per_page=100[&since=S]``.

The cursor (opaque JSON text, see ``Cursor``) is ``since`` (a whole UTC second) + ``seen`` (the issue
versions already emitted whose ``updated_at`` is at or after ``since``) + ``next`` (a ``Link rel="next"``
URL being followed) + ``etag`` (of the response to the plain ``since`` request). How it moves, per page:

- **More pages, and the page reaches a later second S' than ``since``**: the next request asks again with
  ``since=S'`` and keeps only the versions seen at S'. Asking by value instead of following the page-number
  link means an issue updated while we page (it jumps to the end of the list) cannot shift an unseen one
  past a page boundary, and a source paused mid-way for an hour resumes exactly.
- **More pages, but the whole page is at ``since``** (more issues in one second than fit on a page):
  ``since`` cannot move, so the ``Link rel="next"`` URL is followed exactly as given and every id seen at
  that second is kept.
- **Last page of a plain ``since`` request**: ``since`` stays, ``seen`` keeps every version listed since it,
  and the response's ETag is kept, so the next idle poll is one free 304. When ``seen`` outgrows
  ``SEEN_LIMIT`` it is compacted to the newest second and that is fetched at once, to earn its ETag.
- **Last page reached through a link**: compacted to the newest second. No ETag is kept for a listing that
  spans several pages (a first page's ETag does not prove later pages unchanged), so idle polls of a
  repository whose newest second holds more than a page of issues cost one request per page.

Every version at or after ``since`` is either in ``seen`` or still to come, so none is lost; one in ``seen``
is never emitted again. A limit GitHub imposes on everyone: two changes of one issue within the same second
share an ``updated_at``, so they are one version (event id ``{issue id}@{updated_at}``).

The ``action`` of an event is derived without the ledger (see ``derive_action``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx

from syncd.contracts import Event, Page, Window
from syncd.errors import AuthError, FatalError, RetryableError
from syncd.http import decode_json, make_client, parse_retry_after, send, status_error_text, with_retries
from syncd.settings import Secret
from syncd.timefmt import parse_time

log = logging.getLogger("connectors.github")

EVENT_TYPE = "github.issue"
ACTIONS = frozenset({"opened", "edited", "closed", "reopened"})
PAGE_SIZE = 100  # the API's maximum
#: Keeping ``since`` on a last page makes the next idle poll a free 304, but every poll with changes
#: lists the ``seen`` versions again; beyond this many they are compacted to the newest second (which
#: costs one counted 200 on the next poll instead).
SEEN_LIMIT = 50
#: A secondary rate limit without retry-after or reset: wait this long, doubling while it repeats.
SECONDARY_WAIT_SECONDS = 60.0
SECONDARY_WAIT_CAP_SECONDS = 3600.0
ANONYMOUS_NOTE = "60/hour without GITHUB_TOKEN"
CURSOR_VERSION = 1
_MEMORY_LIMIT = 100_000


# ---- the cursor ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a repository's poll stands. Times are canonical ``YYYY-MM-DDTHH:MM:SSZ`` strings (they sort
    as text); ``seen`` holds ``(issue id, updated_at)`` of emitted versions with ``updated_at >= since``."""

    since: str | None = None
    seen: frozenset[tuple[int, str]] = frozenset()
    next_url: str | None = None
    etag: str | None = None

    def dumps(self) -> str:
        grouped: dict[str, list[int]] = {}
        for issue_id, second in sorted(self.seen, key=lambda s: (s[1], s[0])):
            grouped.setdefault(second, []).append(issue_id)
        body: dict[str, Any] = {"v": CURSOR_VERSION, "since": self.since, "seen": grouped}
        if self.next_url:
            body["next"] = self.next_url
        if self.etag:
            body["etag"] = self.etag
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Cursor:
        """Parse ``dumps`` output; ``ValueError`` on anything else."""
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("v") != CURSOR_VERSION:
                raise ValueError("not a version 1 GitHub cursor")
            since = body.get("since")
            seen = frozenset((int(i), canonical_second(second))
                             for second, ids in body.get("seen", {}).items() for i in ids)
            return cls(since=canonical_second(since) if since else None, seen=seen,
                       next_url=body.get("next") or None, etag=body.get("etag") or None)
        except (TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable GitHub cursor: {exc}") from None

    def compacted(self, second: str) -> Cursor:
        """Only the versions at ``second``, which becomes ``since``; the ETag no longer applies."""
        return Cursor(since=second, seen=frozenset(s for s in self.seen if s[1] == second))


def advance(cursor: Cursor, listed: Sequence[tuple[int, str]], *, next_url: str | None, etag: str | None,
            via_link: bool, seen_limit: int = SEEN_LIMIT) -> tuple[Cursor, bool]:
    """The cursor after a page listing ``listed`` (every valid ``(id, updated_at)`` on it, emitted or not),
    and whether to fetch again now. ``via_link``: the page came from a ``next`` link. Pure; see the module
    docstring for the rules."""
    grown = replace(cursor, seen=cursor.seen | frozenset(listed), next_url=None, etag=None)
    top = max((second for _, second in listed), default=None)
    if next_url is not None:
        if top is not None and (cursor.since is None or top > cursor.since):
            return grown.compacted(top), True
        return replace(grown, next_url=next_url), True
    newest = max(filter(None, (top, cursor.since)), default=None)
    compact = grown.compacted(newest) if newest is not None else grown
    if via_link:  # a chain through one crowded second ended: fetch again only if ``since`` can move
        return compact, compact.since != cursor.since
    if len(grown.seen) <= seen_limit or compact == grown:
        return replace(grown, etag=etag), False
    return compact, True  # fetch ``since=newest`` now, so the tick ends holding an ETag for the next poll


# ---- snapshots → events ----------------------------------------------------------------------------


def canonical_second(value: Any) -> str:
    """Any ISO-8601 timestamp → ``YYYY-MM-DDTHH:MM:SSZ`` (GitHub's own form); ``ValueError`` otherwise."""
    return parse_time(value).strftime("%Y-%m-%dT%H:%M:%SZ")


#: What ``derive_action`` remembers of an older version of an issue: ``(state, state_reason)``.
Previous = tuple[str | None, str | None]


def derive_action(issue: Mapping[str, Any], updated: str, previous: Previous | None) -> str:
    """The action a version stands for, from its snapshot and, when this process has seen an older version
    of the issue, that version's ``(state, state_reason)``. No ledger is read; pure.

    - ``opened``: ``created_at == updated_at`` — GitHub stamps both at creation, so this is the first version.
    - ``closed``: now closed and either ``closed_at == updated_at`` (the close is what changed) or the
      older version seen was open.
    - ``reopened``: now open and either the older version seen was closed, or the snapshot says
      ``state_reason == "reopened"`` and the older version seen did not (none seen counts as "did not").
      GitHub keeps that reason until the next close, so after a restart the first later edit of a reopened
      issue is reported ``reopened`` once more: a reopen is never reported as a mere edit.
    - ``edited``: anything else.
    """
    state, reason = issue.get("state"), issue.get("state_reason")
    if _second_or_none(issue.get("created_at")) == updated:
        return "opened"
    was_state, was_reason = previous if previous is not None else (None, None)
    if state == "closed" and (was_state == "open" or _second_or_none(issue.get("closed_at")) == updated):
        return "closed"
    if state == "open" and (was_state == "closed" or (reason == "reopened" and was_reason != "reopened")):
        return "reopened"
    return "edited"


def _second_or_none(value: Any) -> str | None:
    try:
        return canonical_second(value) if value else None
    except ValueError:
        return None


@dataclass
class _StateMemory:
    """The last version of each issue this process turned into an event: ``id → (updated, previous,
    action)``. Lets ``derive_action`` see state changes, and gives a re-fetched version (after a rolled
    back page) the same action. Bounded: the oldest entries go first. Lost on restart, by design."""

    limit: int = _MEMORY_LIMIT
    _last: dict[int, tuple[str, Previous, str]] = field(default_factory=dict)

    def action(self, issue_id: int, issue: Mapping[str, Any], updated: str) -> str:
        known = self._last.get(issue_id)
        if known is not None and known[0] == updated:
            return known[2]
        if known is not None and known[0] > updated:  # an older version (a backfill): the snapshot alone
            return derive_action(issue, updated, None)
        action = derive_action(issue, updated, known[1] if known else None)
        self._last.pop(issue_id, None)
        self._last[issue_id] = (updated, (issue.get("state"), issue.get("state_reason")), action)
        if len(self._last) > self.limit:
            del self._last[next(iter(self._last))]
        return action


def parse_issue(raw: Any) -> tuple[int, str]:
    """``(id, canonical updated_at)`` of a listed issue; ``ValueError`` names what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"issue is not an object: {type(raw).__name__}")
    issue_id = raw.get("id")
    if not isinstance(issue_id, int) or isinstance(issue_id, bool):
        raise ValueError(f"issue #{raw.get('number')} has no numeric id")
    try:
        return issue_id, canonical_second(raw.get("updated_at"))
    except ValueError as exc:
        raise ValueError(f"issue {issue_id}: updated_at {exc}") from None


# ---- status codes and rate limits ------------------------------------------------------------------


def secondary_wait(strikes: int) -> float:
    """At least 60 s, doubling with each consecutive secondary limit (``strikes`` before this one)."""
    doublings: int = max(0, min(strikes, 10))
    return min(SECONDARY_WAIT_CAP_SECONDS, SECONDARY_WAIT_SECONDS * float(2**doublings))


def throttle_wait(response: httpx.Response, *, now: float, strikes: int = 0) -> float | None:
    """Seconds to wait when this 403/429 is a rate limit, None when it is not one. Never sleeps.

    retry-after → that long; ``x-ratelimit-remaining: 0`` → until ``x-ratelimit-reset`` (epoch seconds,
    +1 s as reset is a whole second); a 429, or a 403 whose message says "rate limit", with neither →
    a secondary limit: ``secondary_wait(strikes)``.
    """
    if response.status_code not in (403, 429):
        return None
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is not None:
        return max(1.0, retry_after)
    if response.headers.get("x-ratelimit-remaining", "").strip() == "0":
        reset = _header_int(response.headers, "x-ratelimit-reset")
        return max(1.0, reset - now + 1) if reset is not None else secondary_wait(strikes)
    if response.status_code == 429 or "rate limit" in status_error_text(response).lower():
        return secondary_wait(strikes)
    return None


def status_policy(source: str, repo: str, response: httpx.Response, *, now: float, strikes: int = 0,
                  anonymous: bool = False) -> None:
    """Map a response that is neither 2xx nor 304 to the error saying what to do. Never sleeps."""
    code = response.status_code
    if code < 300 or code == 304:
        return
    text = status_error_text(response)
    wait = throttle_wait(response, now=now, strikes=strikes)
    if wait is not None:
        raise RetryableError(source, f"rate limited ({text}); next try in {wait:.0f}s", wait)
    if code == 401:
        raise AuthError(source, "GITHUB_TOKEN rejected (401 Bad credentials); check the token")
    if code == 403:
        hint = "set GITHUB_TOKEN" if anonymous else "GITHUB_TOKEN lacks access"
        raise AuthError(source, f"access to {repo} denied ({text}); {hint}")
    if code == 404:
        hint = " (a private repository needs GITHUB_TOKEN)" if anonymous else ""
        raise FatalError(source, f"repository {repo} not found (HTTP 404){hint}; check GITHUB_REPOS")
    if code in (301, 302, 307, 308):
        raise FatalError(source, f"repository {repo} moved (HTTP {code}); update GITHUB_REPOS")
    if code >= 500 or code == 408:
        raise RetryableError(source, f"provider error ({text})")
    raise FatalError(source, f"unexpected response ({text})")


def rate_limit_meta(headers: httpx.Headers, *, anonymous: bool) -> dict[str, Any]:
    """What ``syncd status`` shows about the rate limit, from a response's headers."""
    meta: dict[str, Any] = {}
    for name, key in (("x-ratelimit-remaining", "ratelimit_remaining"),
                      ("x-ratelimit-limit", "ratelimit_limit")):
        value = _header_int(headers, name)
        if value is not None:
            meta[key] = value
    reset = _header_int(headers, "x-ratelimit-reset")
    if reset is not None:
        meta["ratelimit_reset"] = datetime.fromtimestamp(reset, UTC).isoformat()
    if anonymous:
        meta["ratelimit_note"] = ANONYMOUS_NOTE
    return meta


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    try:
        return int(headers.get(name, "").strip())
    except ValueError:
        return None


# ---- the connector ---------------------------------------------------------------------------------


class GitHubConnector:
    """Connector for one repository. ``key`` is ``github:owner/repo`` (lower case)."""

    def __init__(self, *, repo: str, base_url: str, token: Secret | None = None, timeout: float = 30.0,
                 page_size: int = PAGE_SIZE, transport: httpx.BaseTransport | None = None, attempts: int = 4,
                 clock: Callable[[], float] = time.time) -> None:
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{PAGE_SIZE}")
        self.repo = repo.lower()
        self.key = f"github:{self.repo}"
        self.page_size = page_size
        self.attempts = attempts
        self.anonymous = token is None
        self._clock = clock
        self._strikes = 0  # consecutive secondary rate limits
        self._memory = _StateMemory()
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "syncd/0.1"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        self._client = make_client(base_url, timeout=timeout, transport=transport, headers=headers)

    def __repr__(self) -> str:
        return f"GitHubConnector(key={self.key!r}, base_url={str(self._client.base_url)!r})"

    def close(self) -> None:
        self._client.close()

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        state = self._state(cursor, window)
        response = with_retries(lambda: self._get(state), attempts=self.attempts)
        meta = rate_limit_meta(response.headers, anonymous=self.anonymous)
        if response.status_code == 304:
            return Page(events=(), next_cursor=None, has_more=False, meta=meta)
        body = decode_json(self.key, response)
        if not isinstance(body, list):
            raise RetryableError(self.key, "response is not an issue list (no JSON array)")
        next_url = response.links.get("next", {}).get("url")
        return self._page(state, body, next_url=next_url, etag=response.headers.get("etag"), window=window,
                          meta=meta)

    def _state(self, cursor: str | None, window: Window | None) -> Cursor:
        if cursor is not None:
            try:
                return Cursor.loads(cursor)
            except ValueError as exc:
                raise FatalError(self.key, f"{exc}; reset this source's cursor") from None
        return Cursor(since=canonical_second(window.start)) if window is not None else Cursor()

    def _get(self, state: Cursor) -> httpx.Response:
        if state.next_url is not None:
            response = send(self._client, self.key, "GET", self._checked_link(state.next_url))
        else:
            params = [("state", "all"), ("sort", "updated"), ("direction", "asc"),
                      ("per_page", str(self.page_size))]
            if state.since is not None:
                params.append(("since", state.since))
            headers = {"If-None-Match": state.etag} if state.etag else {}
            response = send(self._client, self.key, "GET", f"/repos/{self.repo}/issues", params=params,
                            headers=headers)
        try:
            status_policy(self.key, self.repo, response, now=self._clock(), strikes=self._strikes,
                          anonymous=self.anonymous)
        except RetryableError:
            if _is_secondary(response):
                self._strikes += 1
            raise
        self._strikes = 0
        return response

    def _checked_link(self, url: str) -> str:
        """The token only ever goes to the configured API host: a link elsewhere is refused."""
        link, base = httpx.URL(url), self._client.base_url
        if (link.scheme, link.host, link.port) != (base.scheme, base.host, base.port):
            raise FatalError(self.key, f"refusing to follow a Link to another host ({link.host}); "
                                       "check GITHUB_BASE_URL")
        return url

    def _page(self, state: Cursor, body: list[Any], *, next_url: str | None, etag: str | None,
              window: Window | None, meta: Mapping[str, Any]) -> Page:
        events: list[Event] = []
        listed: list[tuple[int, str]] = []
        skipped = 0
        past_window = False
        for raw in body:
            try:
                version = parse_issue(raw)
            except ValueError as exc:
                skipped += 1
                log.error("skipping a malformed GitHub issue: %s", exc, extra={"source": self.key})
                continue
            if window is not None and parse_time(version[1]) >= window.end:
                past_window = True
                break
            listed.append(version)
            if version in state.seen or (state.since is not None and version[1] < state.since):
                continue
            event = self._event(raw, *version)
            if window is None or window.contains(event.occurred_at):
                events.append(event)
        if past_window:
            next_url, etag = None, None
        new_state, has_more = advance(state, listed, next_url=next_url, etag=etag,
                                      via_link=state.next_url is not None or past_window)
        return Page(events=tuple(events), next_cursor=new_state.dumps(),
                    has_more=has_more and not past_window, skipped=skipped, meta=meta)

    def _event(self, raw: dict[str, Any], issue_id: int, updated: str) -> Event:
        action = self._memory.action(issue_id, raw, updated)
        return Event(stream=self.key, id=f"{issue_id}@{updated}", type=EVENT_TYPE,
                     occurred_at=parse_time(updated), data=raw, action=action)


def _is_secondary(response: httpx.Response) -> bool:
    """A throttle that gave neither retry-after nor an exhausted primary window."""
    headers = response.headers
    return (response.status_code in (403, 429) and not headers.get("retry-after")
            and headers.get("x-ratelimit-remaining", "").strip() != "0")


def is_pull_request(issue: Mapping[str, Any]) -> bool:
    """GitHub lists pull requests as issues carrying a ``pull_request`` key."""
    return issue.get("pull_request") is not None


def valid_actions(actions: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(actions)
    unknown = chosen - ACTIONS
    if unknown:
        raise ValueError(f"unknown GitHub issue action(s) {sorted(unknown)}; "
                         f"expected some of {sorted(ACTIONS)}")
    return chosen


__all__ = ["ACTIONS", "EVENT_TYPE", "Cursor", "GitHubConnector", "advance", "derive_action",
           "is_pull_request", "rate_limit_meta", "secondary_wait", "status_policy", "throttle_wait"]
