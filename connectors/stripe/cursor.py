"""The Stripe connector's cursor and how it moves: a pure state machine, tested by tables.

Stripe lists events newest first and pages by event id: ``starting_after=X`` gives the events just older
than X, ``ending_before=X`` the ``limit`` events just newer than X (those nearest X, still newest first;
``has_more`` says newer ones remain — Stripe's own libraries page backwards this way, reversing each
page). Ids carry no order, so nothing here compares two ids: only the list's order and ``created``
(whole seconds, non-increasing down the list) are used. syncd must hand events on oldest first, each
once, none skipped, and a tick may stop (or the process die) after any page.

**Why not walk from the newest event down to the cursor and reverse?** That is what "newest first"
suggests, and it is wrong twice over: a tick would hold every event since the cursor in memory before
handing any on (a first sync takes all 30 retained days), and a crash or stop mid-walk leaves no point
to resume from (the cursor may move only past events handed on, and those are the *oldest*, found
last), so a long walk starts again from the top each time, and never ends while events arrive faster
than it walks.

**What is done instead**: the cursor is the id of the newest event handed on, and a page is asked
``ending_before=<cursor>``: the ``limit`` events just after it, which reversed are the next events in
order. The cursor then moves to the page's newest event. Every page is committed with its cursor, so a
crash resumes exactly after the last committed page (nothing skipped; a page fetched but not committed
is fetched again and the ledger drops what it has). Memory is one page whatever the backlog. Events
created while a walk is in progress are appended at the newest end of the list, which is where the walk
is heading, so they are listed when it gets there; events of one second keep Stripe's list order, since
only the list's positions are used. An idle tick is one request (an empty page).

**Starting from a time** (a backfill window's start, ``syncd cursor reset --to``, a healed cursor): the
walk needs an event to stand after, and any event older than the start will do. The first request asks
for the newest page from the start on: if it holds them all (``has_more`` false), they are handed on at
once. Otherwise ``created[lt]=start&limit=1`` finds the newest event before the start (the *anchor*);
every event after it in the list was created at or after the start, so the walk goes on from it as from
a cursor: a window of n events costs n/100 + 2 requests.

**The first sync** takes every retained event, and nothing stands before the oldest one, which the list
gives last. Walking the whole list down to find it would cost as many requests as the sync itself, so
the oldest second is found by bisection on ``created`` (``Search``): with P(T) = "an event exists with
created in [start, T)", ``created[lt]=T`` answers P(T), and the bounds keep ``P(lo)`` false and
``P(hi)`` true (about 31 requests from the epoch to now, each resumable from its bounds; a probe that
lists events narrows ``hi`` to its oldest second at once). A probe that lists *every* event below T
(``has_more`` false) hands those on at once, oldest first, and the walk goes on from the newest of them.
Otherwise, when ``hi = lo + 1``, the oldest events lie in the second ``lo`` (more than a page of them):
that one second is walked down with ``starting_after`` (``Second``) and its last page, the oldest events
of the second, is handed on reversed. The same search serves a window that starts before every event.
Nothing but bounds and one id is ever kept, so a first sync of millions of events takes memory for one
page, and a crash during the search resumes from its bounds.

**Windows** (backfills, ``[start, end)``): ``created`` is whole seconds, so the window is
``created[gte]=ceil(start)`` and ``created[lt]=ceil(end)``; the walk starts at the anchor, every request
carries ``created[lt]``, and ``has_more`` turns false when the window is exhausted.

**Healing**: a cursor Stripe no longer lists (the event expired after 30 days, e.g. after a long
outage) is refused (404/400 naming the parameter). The walk then starts again from the refused event's
own second (through its anchor): events of that second already handed on come again and the ledger
drops them, and nothing newer is skipped. Events that expired unseen are gone at Stripe too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

CURSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class Forward:
    """Events up to and including ``last`` (an event id) have been handed on; ``created`` is its second."""

    last: str
    created: int | None = None


@dataclass(frozen=True, slots=True)
class Search:
    """Looking for the oldest event created at or after ``start`` (None: any). Before the first probe
    ``lo``/``hi`` are None; ``hi`` alone: the anchor is asked next; both: no event lies in [start, lo) and
    some lie in [start, hi) (bisection)."""

    start: int | None = None
    lo: int | None = None
    hi: int | None = None


@dataclass(frozen=True, slots=True)
class Second:
    """Walking the crowded second ``second`` (the oldest one) down, after the event ``after``."""

    start: int | None
    second: int
    after: str | None = None


State = Forward | Search | Second


@dataclass(frozen=True, slots=True)
class Bounds:
    """A window as Stripe filters it: ``created[gte]=start``, ``created[lt]=end`` (whole seconds)."""

    start: int | None = None
    end: int | None = None

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None) -> Bounds:
        return cls(start=_ceil(start), end=_ceil(end))


def _ceil(moment: datetime | None) -> int | None:
    return None if moment is None else math.ceil(moment.timestamp())


@dataclass(frozen=True, slots=True)
class Listed:
    """What the machine needs of one listed event: its id (None: unusable) and ``created`` (None: unreadable)."""

    id: str | None
    created: int | None


@dataclass(frozen=True, slots=True)
class Step:
    """After a page: hand the page's events on (reversed) or not, the next state, and whether to fetch now."""

    deliver: bool
    state: State | None
    more: bool


def request(state: State | None, bounds: Bounds) -> list[tuple[str, str]]:
    """The query parameters (besides ``types[]``) of the request for ``state``; ``limit`` only when it is
    not the page size. A ``Forward`` request sends no ``created[gte]``: its cursor may lie before the
    window (the anchor), and every event after the cursor lies in the window anyway."""
    start, end = bounds.start, bounds.end
    params: list[tuple[str, str]] = []
    if isinstance(state, Forward):
        params.append(("ending_before", state.last))
        start = None
    elif isinstance(state, Second):
        start, end = state.second, state.second + 1
        if state.after is not None:
            params.append(("starting_after", state.after))
    else:
        search = state if state is not None else Search()
        start = _later(start, search.start)
        if search.hi is not None and search.lo is None and start is not None:  # the anchor
            return [("limit", "1"), ("created[lt]", str(start))]
        if search.lo is not None and search.hi is not None:
            end = (search.lo + search.hi) // 2
    if start is not None:
        params.append(("created[gte]", str(start)))
    if end is not None:
        params.append(("created[lt]", str(end)))
    return params


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def advance(state: State | None, listed: Sequence[Listed], has_more: bool, bounds: Bounds) -> Step:
    """The step after a page listing ``listed`` (newest first, as Stripe lists) with ``has_more``. Pure.

    ``ValueError`` when the page gives nothing to move on (no usable id, or no readable ``created`` where
    the search needs one): a provider fault, retried like any unusable page."""
    if isinstance(state, Forward):
        if not listed:
            return Step(False, state, False)
        moved = _forward(listed, fallback=state)
        if has_more and moved == state:
            raise ValueError("no listed event has a usable id")
        return Step(True, moved, has_more)
    if isinstance(state, Second):
        if not listed:  # the second expired under the walk: search again
            return Step(False, Search(state.start), True)
        if has_more:
            return Step(False, Second(state.start, state.second, _oldest_id(listed)), True)
        return Step(True, _forward(listed), True)
    return _search(state if state is not None else Search(), listed, has_more, bounds)


def _search(state: Search, listed: Sequence[Listed], has_more: bool, bounds: Bounds) -> Step:
    start = _later(bounds.start, state.start)
    if state.hi is None:  # the whole range, its newest page
        if not listed:  # nothing (in the window) yet: the next tick asks again
            return Step(False, None if state == Search() else state, False)
        if not has_more:  # one page holds every event: hand them on, walk from the newest
            return Step(True, _forward(listed), False)
        hi = _oldest_created(listed) + 1
        if start is not None:  # ask for the anchor next
            return Step(False, Search(state.start, hi=hi), True)
        return _narrowed(state, 0, hi)
    if state.lo is None:  # the anchor probe (``created[lt]=start&limit=1``)
        if listed:  # go on just after the newest event before start: nothing to search
            return Step(False, _forward(listed), True)
        return _narrowed(state, start if start is not None else 0, state.hi)
    if not listed:
        return _narrowed(state, (state.lo + state.hi) // 2, state.hi)
    if not has_more:  # this page holds every event below the probe: hand them on, walk from the newest
        return Step(True, _forward(listed), True)
    return _narrowed(state, state.lo, _oldest_created(listed) + 1)


def _oldest_created(listed: Sequence[Listed]) -> int:
    oldest = min((item.created for item in listed if item.created is not None), default=None)
    if oldest is None:
        raise ValueError("no listed event has a readable created time")
    return oldest


def _narrowed(state: Search, lo: int, hi: int) -> Step:
    if hi <= lo + 1:
        return Step(False, Second(state.start, lo), True)
    return Step(False, Search(state.start, lo, hi), True)


def _forward(listed: Sequence[Listed], fallback: Forward | None = None) -> Forward:
    """The cursor after handing ``listed`` on: its newest event with a usable id."""
    for item in listed:
        if item.id is not None:
            return Forward(item.id, item.created)
    if fallback is not None:
        return fallback
    raise ValueError("no listed event has a usable id")


def _oldest_id(listed: Sequence[Listed]) -> str:
    """The page's oldest usable id (where ``starting_after`` goes on from)."""
    for item in reversed(listed):
        if item.id is not None:
            return str(item.id)
    raise ValueError("no listed event has a usable id")


def heal(state: State, bounds: Bounds) -> Search:
    """Where to go when Stripe refuses ``state``'s cursor id: search again from its second (see above)."""
    if isinstance(state, Forward):
        return Search(_later(bounds.start, state.created) if state.created is not None else bounds.start)
    if isinstance(state, Second):
        return Search(state.start)
    return state


def dumps(state: State) -> str:
    if isinstance(state, Forward):
        body: dict[str, Any] = {"v": CURSOR_VERSION, "last": state.last, "created": state.created}
    elif isinstance(state, Search):
        body = {"v": CURSOR_VERSION, "search": state.start, "lo": state.lo, "hi": state.hi}
    else:
        body = {"v": CURSOR_VERSION, "second": state.second, "start": state.start, "after": state.after}
    return json.dumps(body, separators=(",", ":"))


def loads(text: str) -> State:
    """A stored cursor; a bare ``evt_…`` id is a ``Forward`` from that event. ``ValueError`` if unreadable."""
    if text.startswith("evt_"):
        return Forward(text)
    try:
        body = json.loads(text)
        if not isinstance(body, dict) or body.get("v") != CURSOR_VERSION:
            raise ValueError("not a Stripe cursor")
        if "last" in body:
            return Forward(_text(body["last"]), _int_or_none(body.get("created")))
        if "search" in body:
            return Search(_int_or_none(body["search"]), _int_or_none(body.get("lo")), _int_or_none(body.get("hi")))
        return Second(_int_or_none(body.get("start")), _int(body["second"]), _text_or_none(body.get("after")))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable Stripe cursor ({type(exc).__name__})") from None


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _int_or_none(value: Any) -> int | None:
    return None if value is None else _int(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("not a string")
    return value


def _text_or_none(value: Any) -> str | None:
    return None if value is None else _text(value)


__all__ = ["CURSOR_VERSION", "Bounds", "Forward", "Listed", "Search", "Second", "State", "Step", "advance",
           "dumps", "heal", "loads", "request"]
