"""The GitHub connector's cursor and how it moves: a pure state machine, tested by tables.

The cursor (opaque JSON text, see ``Cursor``) is ``since`` (a whole UTC second) + ``seen`` (the issue
versions already emitted whose ``updated_at`` is at or after ``since``) + ``next`` (a ``Link rel="next"``
URL being followed) + ``etag`` (of the response to the plain ``since`` request) + ``walk`` / ``last`` (the
issue ids at ``since`` listed by the walk through a crowded second under way, and by the last complete
one). How it moves, per page:

- **More pages, and the page reaches a later second S' than ``since``**: the next request asks again with
  ``since=S'`` and keeps only the versions seen at S'. Asking by value instead of following the page-number
  link means an issue updated while we page (it jumps to the end of the list) cannot shift an unseen one
  past a page boundary, and a source paused mid-way for an hour resumes exactly.
- **More pages, but the whole page is at ``since``** (a *crowded second*: more issues in one second than
  fit on a page): ``since`` cannot move, so the ``Link rel="next"`` URL is followed exactly as given and
  every id seen at that second is kept.
- **A walk through a crowded second ends** (its chain of links reaches a later second or the end of the
  list): page numbers are offsets, so an issue of an earlier page edited (or deleted) between two requests
  leaves the listing of that second, and the first issue of the next page slides onto the page already
  read: it would never be listed. So the second is walked again from its first page until one walk lists
  exactly the ids the walk before it listed. An edit or deletion during a walk removes a version from the
  second for good, so the next walk differs from it and another follows; a walk that equals the one
  before therefore had no shift in the walk before it, and every version of the second has been listed.
  Versions at a past second only ever leave it, so this ends. Only then does ``since`` move.
- **Last page of a plain ``since`` request**: ``since`` stays, ``seen`` keeps every version listed since it,
  and the response's ETag is kept, so the next idle poll is one free 304. When ``seen`` outgrows
  ``SEEN_LIMIT`` it is compacted to the newest second and that is fetched at once, to earn its ETag.
- **A verified walk ends at the end of the list**: compacted to the newest second. No ETag is kept for a
  listing that spans several pages (a first page's ETag does not prove later pages unchanged), so idle polls
  of a repository whose newest second is crowded cost one request per page (the last walk's ids are kept:
  an unchanged second is verified by one walk).
- **Seconds beyond ``horizon``** (an ``updated_at`` in the future: a provider's clock or data fault) are
  listed and emitted, but never become ``since``: else ``since`` would jump past every real change to come.

Every version at or after ``since`` is either in ``seen`` or still to come, so none is lost; one in ``seen``
is never emitted again. A limit GitHub imposes on everyone: two changes of one issue within the same second
share an ``updated_at``, so they are one version (event id ``{issue id}@{updated_at}``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from syncd.timefmt import parse_time

#: Keeping ``since`` on a last page makes the next idle poll a free 304, but every poll with changes
#: lists the ``seen`` versions again; beyond this many they are compacted to the newest second (which
#: costs one counted 200 on the next poll instead).
SEEN_LIMIT = 50
CURSOR_VERSION = 1

Version = tuple[int, str]  # (issue id, canonical updated_at)


def canonical_second(value: Any) -> str:
    """Any ISO-8601 timestamp → ``YYYY-MM-DDTHH:MM:SSZ`` (GitHub's own form); ``ValueError`` otherwise."""
    return parse_time(value).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a repository's poll stands. Times are canonical ``YYYY-MM-DDTHH:MM:SSZ`` strings (they sort
    as text); ``seen`` holds ``(issue id, updated_at)`` of emitted versions with ``updated_at >= since``;
    ``walk`` the ids at ``since`` listed by the link walk under way; ``last`` those listed by the last
    complete walk through ``since`` (None: no complete walk yet)."""

    since: str | None = None
    seen: frozenset[Version] = frozenset()
    next_url: str | None = None
    etag: str | None = None
    walk: frozenset[int] = frozenset()
    last: frozenset[int] | None = None

    def dumps(self) -> str:
        grouped: dict[str, list[int]] = {}
        for issue_id, second in sorted(self.seen, key=lambda s: (s[1], s[0])):
            grouped.setdefault(second, []).append(issue_id)
        body: dict[str, Any] = {"v": CURSOR_VERSION, "since": self.since, "seen": grouped}
        if self.next_url:
            body["next"] = self.next_url
        if self.etag:
            body["etag"] = self.etag
        if self.walk:
            body["walk"] = sorted(self.walk)
        if self.last is not None:
            body["last"] = sorted(self.last)
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
            last = body.get("last")
            return cls(since=canonical_second(since) if since else None, seen=seen,
                       next_url=body.get("next") or None, etag=body.get("etag") or None,
                       walk=frozenset(int(i) for i in body.get("walk", ())),
                       last=frozenset(int(i) for i in last) if last is not None else None)
        except (TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable GitHub cursor: {exc}") from None

    def compacted(self, second: str) -> Cursor:
        """Only the versions at ``second``, which becomes ``since``; the ETag and the walks no longer apply."""
        return Cursor(since=second, seen=frozenset(s for s in self.seen if s[1] == second))


def advance(cursor: Cursor, listed: Sequence[Version], *, next_url: str | None, etag: str | None,
            via_link: bool, seen_limit: int = SEEN_LIMIT, horizon: str | None = None) -> tuple[Cursor, bool]:
    """The cursor after a page listing ``listed`` (every valid ``(id, updated_at)`` on it, emitted or not),
    and whether to fetch again now. ``via_link``: the page came from a ``next`` link. ``horizon``: the latest
    second ``since`` may take (now + a skew). Pure; see the module docstring for the rules."""
    since = cursor.since
    grown = replace(cursor, seen=cursor.seen | frozenset(listed), next_url=None, etag=None)
    top = max((second for _, second in listed if horizon is None or second <= horizon), default=None)
    walk = (cursor.walk if via_link else frozenset()) | {i for i, second in listed if second == since}
    if next_url is not None:
        if top is not None and (since is None or top > since):
            if via_link and since is not None and walk != cursor.last:
                return _walk_again(grown, walk), True
            return grown.compacted(top), True
        return replace(grown, next_url=next_url, walk=walk), True
    newest = max(filter(None, (top, since)), default=None)
    compact = grown.compacted(newest) if newest is not None else grown
    if via_link:  # a walk through a crowded second ended
        if since is not None and walk != cursor.last:
            return _walk_again(grown, walk), True
        if compact.since == since:
            return replace(compact, last=walk), False
        return compact, True  # fetch ``since=newest`` now, to earn an ETag
    if len(grown.seen) <= seen_limit or compact == grown:
        return replace(grown, etag=etag, walk=frozenset(), last=None), False
    return compact, True  # fetch ``since=newest`` now, so the tick ends holding an ETag for the next poll


def _walk_again(grown: Cursor, walk: frozenset[int]) -> Cursor:
    """Walk the crowded second ``since`` again from its first page, remembering what this walk listed."""
    return replace(grown, walk=frozenset(), last=walk)


__all__ = ["CURSOR_VERSION", "SEEN_LIMIT", "Cursor", "Version", "advance", "canonical_second"]
