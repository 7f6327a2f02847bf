"""A loopback HTTP server that speaks the WorkOS Events API (``GET /events``), with knobs for faults.

Used by the tests, ``syncd demo`` and ``bench/`` in their own processes, so it imports nothing from
``syncd``. The stream is generated deterministically from a seed: lifecycles of organizations, users
and organization memberships (created → updated 0..k times → sometimes deleted; memberships are
deleted before their user or organization), plus a small share of other event types.

Contract served (see /work/shared/PROVIDERS.md):

- ``Authorization: Bearer <api_key>`` else ``401 {"message":"Unauthorized"}``.
- ``events`` is required, as ``events=a,b``, ``events=a&events=b`` or ``events[]=a&events[]=b``.
- ``limit`` 1..100 (default 10); ``order`` ``asc``/``normal`` (default, oldest first) or ``desc``.
- ``after`` / ``before`` are event ids read in listing order: in ``desc`` order ``after=X`` gives
  events older than X. Because ids are time-ordered ULIDs, an id that is well formed but not in the
  stream (e.g. a cursor kept from another run) is placed by ordering, like a keyset cursor; a
  malformed id is a 422. ``after`` may be combined with the range filters (intersection).
- ``range_start`` (inclusive) / ``range_end`` (exclusive): ISO-8601 on the event time (the time in its
  id, which is ``created_at`` for every generated event); malformed → 422.
- ``organization_id``: events whose ``data.organization_id`` (or, for ``organization.*``, ``data.id``)
  matches.
- ``list_metadata.after`` is the id of the page's last event when more events remain, else null;
  ``list_metadata.before`` is always null.

Faults are drawn per ``/events`` request from one seeded RNG with a single uniform draw against the
cumulative rates (reset, timeout, rate limit, error, broken — so the rates must sum to at most 1),
which makes a sequential client's run reproducible. They apply before authentication, like a proxy.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import hmac
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl

__all__ = ["DEFAULT_NOW", "Faults", "WorkOSSimulator", "format_timestamp", "main", "mirror_state",
           "parse_timestamp", "ulid", "ulid_ms"]

DEFAULT_NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
"""The fixed ``now`` used when none is given, so a seed alone determines every byte."""

HISTORY = timedelta(days=20)
MAX_LIMIT = 100
DEFAULT_LIMIT = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_SIZE = 64  # distinct filters kept; a daemon uses one or two
_MAX_LOG = 200_000  # requests kept in WorkOSSimulator.requests
_LIVE_BURST = 10_000  # most live events created by one request; the rest follow on later requests

# --------------------------------------------------------------------------------------------- ids
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 chars; 13 pairs = 26 chars
_FROM_CROCKFORD = str.maketrans(_CROCKFORD, "0123456789abcdefghijklmnopqrstuv")
_EVENT_ID = re.compile(r"event_[0-7][0-9A-HJKMNP-TV-Z]{25}")


def ulid(ms: int, randomness: int) -> str:
    """A 26-character ULID: 10 Crockford chars of milliseconds, then 16 of 80-bit randomness."""
    # Unrolled over small ints (ms < 2**50, randomness in two 40-bit halves): twice as fast as a loop
    # over one 128-bit int, and this runs for every generated id.
    pairs, high, low = _PAIRS, randomness >> 40, randomness & 0xFF_FFFF_FFFF
    return (pairs[ms >> 40] + pairs[(ms >> 30) & 1023] + pairs[(ms >> 20) & 1023] + pairs[(ms >> 10) & 1023]
            + pairs[ms & 1023] + pairs[high >> 30] + pairs[(high >> 20) & 1023] + pairs[(high >> 10) & 1023]
            + pairs[high & 1023] + pairs[low >> 30] + pairs[(low >> 20) & 1023] + pairs[(low >> 10) & 1023]
            + pairs[low & 1023])


def ulid_ms(value: str) -> int:
    """The millisecond time encoded in a ULID (or a prefixed id such as ``event_01…``)."""
    return int(value[-26:-16].translate(_FROM_CROCKFORD), 32)


# ---------------------------------------------------------------------------------------- times
@lru_cache(maxsize=4096)
def _minute(minute: int, separator: str) -> str:
    """``2026-01-15T12:00:`` for a minute since the epoch (generated events share minutes)."""
    return (_EPOCH + timedelta(minutes=minute)).strftime(f"%Y-%m-%d{separator}%H:%M:")


def format_timestamp(ms: int, form: int = 0) -> str:
    """Render epoch milliseconds in one of the forms WorkOS has been seen to send.

    0: ``2026-01-15T12:00:00.000Z``; 1: ``2023-04-28 20:05:31.093``; 2: ``2020-05-06 04:21:48.649164``
    (naive forms are UTC; form 2 adds deterministic sub-millisecond digits, never crossing a millisecond).
    """
    minute, rest = divmod(ms, 60_000)
    second, milli = divmod(rest, 1000)
    if form == 0:
        return f"{_minute(minute, 'T')}{second:02d}.{milli:03d}Z"
    if form == 1:
        return f"{_minute(minute, ' ')}{second:02d}.{milli:03d}"
    return f"{_minute(minute, ' ')}{second:02d}.{milli * 1000 + (ms * 7919) % 1000:06d}"


def parse_timestamp(text: str) -> datetime:
    """Parse any ISO-8601 form above (naive means UTC) to an aware datetime; ValueError otherwise."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


# ----------------------------------------------------------------------------------------- faults
@dataclass(frozen=True)
class Faults:
    """Fault knobs; rates are fractions of ``/events`` requests. Replace ``simulator.faults`` to change them.

    ``error_rate``: 500/502/503 in rotation. ``rate_limit_rate``: 429 with ``Retry-After: retry_after``.
    ``timeout_rate``: wait ``slow_seconds`` before answering normally. ``broken_rate``: a 200 whose body
    is truncated, not JSON, or shorter than its Content-Length (rotating). ``reset_rate``: the connection
    is reset without a response. ``repeat_boundary``: a page requested with ``after=X`` starts with X
    again (asc order). ``stuck_after``: once a request has ``after=<id>``, every later ``/events``
    response repeats that same page. ``latency``: seconds every ``/events`` answer waits, as a real API
    over the internet does (benchmarks of prefetching).
    """

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    timeout_rate: float = 0.0
    slow_seconds: float = 5.0
    broken_rate: float = 0.0
    reset_rate: float = 0.0
    repeat_boundary: bool = False
    stuck_after: str | None = None
    latency: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.rate_limit_rate, self.timeout_rate, self.broken_rate, self.reset_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must each be within [0, 1] and sum to at most 1")
        if self.retry_after < 0 or self.slow_seconds < 0 or self.latency < 0:
            raise ValueError("retry_after, slow_seconds and latency must not be negative")

    def draw(self, uniform: float) -> str | None:
        """The fault for one request given a uniform draw in [0, 1), or None."""
        edge = 0.0
        for name, rate in (("reset", self.reset_rate), ("timeout", self.timeout_rate),
                           ("rate_limit", self.rate_limit_rate), ("error", self.error_rate),
                           ("broken", self.broken_rate)):
            edge += rate
            if uniform < edge:
                return name
        return None


# ------------------------------------------------------------------------------------ generation
_FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "José", "Zoë", "Chidi", "Mei", "Ravi",
          "Sofia", "Hiro", "Amara", "Lukas", "Nia", "Omar", "Priya", "Tomás", "Yuki", "Elena")
_LAST = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Núñez", "Okafor", "Chen", "Patel",
         "Rossi", "Tanaka", "Mensah", "Müller", "Diallo", "Haddad", "Iyer", "García", "Sato", "Petrova",
         "Kim")
_WORDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell",
          "Cyberdyne")
_SUFFIX = ("Labs", "Inc", "Group", "Systems", "Partners", "Health", "Bank", "Studio")
_AGENTS = ("Mozilla/5.0 (Macintosh)", "Mozilla/5.0 (Windows NT 10.0)", "curl/8.5.0")
_TIERS = ("free", "pro", "enterprise")
_PLANS = ("free", "pro")
_ROLES = ("member", "admin", "owner")
_OTHER_TYPES = ("session.created", "dsync.user.created", "authentication.email_verification_succeeded",
                "connection.activated", "dsync.group.created")
USER, ORG, MEMBERSHIP = "user", "organization", "organization_membership"
_PREFIX = {USER: "user_", ORG: "org_", MEMBERSHIP: "om_"}


_ASCII = str.maketrans("éëáúñüíó", "eeaunuio")


def _ascii(text: str) -> str:
    return text.lower().translate(_ASCII)


class _Pool:
    """Live object ids with O(1) add, remove and uniform choice."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: str) -> None:
        self._where[item] = len(self._items)
        self._items.append(item)

    def remove(self, item: str) -> None:
        slot = self._where.pop(item)
        last = self._items.pop()
        if last != item:
            self._items[slot] = last
            self._where[last] = slot

    def pick(self, uniform: float) -> str:
        return self._items[int(uniform * len(self._items))]


_EDGES = (0.05, 0.09, 0.25, 0.40, 0.46, 0.76, 0.90, 0.95, 0.985)
_ACTIONS = (("other", ""), ("create", ORG), ("create", USER), ("create", MEMBERSHIP), ("update", ORG),
            ("update", USER), ("update", MEMBERSHIP), ("delete", MEMBERSHIP), ("delete", USER),
            ("delete", ORG))


class _Lifecycle:
    """Deterministic source of lifecycle events; ``next(ms, stamp)`` returns the ``(type, data)`` at ``ms``.

    Deletions are planned as a cascade (memberships first, then the user or organization) and emitted one
    per call, so a generation cut at any length is still consistent; the rest follows on the next call.
    Choices use ``random()`` and indexing rather than ``Random.choice``: it is several times faster.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._random = self.rng.random
        self._pools = {kind: _Pool() for kind in _PREFIX}
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._members: defaultdict[str, set[str]] = defaultdict(set)  # user or org id -> membership ids
        self._pairs: set[tuple[str, str]] = set()
        self._pending: deque[tuple[str, str]] = deque()
        self._serial = 0

    def _pick(self, options: tuple[Any, ...]) -> Any:
        return options[int(self._random() * len(options))]

    def next(self, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        """The next event at time ``ms``; ``stamp`` is that time as written into snapshots."""
        if self._pending:
            return self._emit_delete(*self._pending.popleft(), stamp)
        verb, kind = _ACTIONS[bisect.bisect_right(_EDGES, self._random())]
        if verb == "other":
            return self._other(ms, stamp)
        pool = self._pools[kind]
        if verb == "update" and pool:
            return self._update(kind, pool.pick(self._random()), stamp)
        if verb == "delete" and pool:
            self._plan_delete(kind, pool.pick(self._random()))
            return self._emit_delete(*self._pending.popleft(), stamp)
        return self._create(kind, ms, stamp)

    def _new_id(self, prefix: str, ms: int) -> str:
        return prefix + ulid(ms, self.rng.getrandbits(80))

    def _create(self, kind: str, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        users, orgs = self._pools[USER], self._pools[ORG]
        if kind == MEMBERSHIP and not (users and orgs):
            kind = ORG if not orgs else USER
        self._serial += 1
        if kind == MEMBERSHIP:
            user_id, org_id = users.pick(self._random()), orgs.pick(self._random())
            if (user_id, org_id) in self._pairs:
                return self._update(USER, user_id, stamp)
            data = self._membership(self._new_id("om_", ms), user_id, org_id, stamp)
            self._pairs.add((user_id, org_id))
            self._members[user_id].add(data["id"])
            self._members[org_id].add(data["id"])
        elif kind == USER:
            data = self._user(self._new_id("user_", ms), stamp)
        else:
            data = self._organization(self._new_id("org_", ms), stamp)
        self._pools[kind].add(data["id"])
        self._snapshots[data["id"]] = data
        return f"{kind}.created", data

    def _user(self, user_id: str, stamp: str) -> dict[str, Any]:
        rand, serial = self._random, self._serial
        first, last = self._pick(_FIRST), self._pick(_LAST)
        return {"object": "user", "id": user_id,
                "email": f"{_ascii(first)}.{_ascii(last)}.{serial}@example-{int(rand() * 50)}.com",
                "first_name": first, "last_name": last, "email_verified": rand() < 0.7,
                "profile_picture_url": None if rand() < 0.5 else f"https://avatars.example.com/{serial}.png",
                "external_id": None if rand() < 0.6 else f"ext_{serial}",
                "last_sign_in_at": None, "metadata": {}, "created_at": stamp, "updated_at": stamp}

    def _organization(self, org_id: str, stamp: str) -> dict[str, Any]:
        name = f"{self._pick(_WORDS)} {self._pick(_SUFFIX)} {self._serial}"
        domain = {"object": "organization_domain", "id": f"org_domain_{org_id[4:]}",
                  "domain": f"{_ascii(name).replace(' ', '-')}.com", "state": "verified",
                  "verification_strategy": "dns"}
        return {"object": "organization", "id": org_id, "name": name, "domains": [domain],
                "metadata": {"tier": self._pick(_TIERS)},
                "external_id": None if self._random() < 0.5 else f"ext_org_{self._serial}",
                "created_at": stamp, "updated_at": stamp}

    def _membership(self, om_id: str, user_id: str, org_id: str, stamp: str) -> dict[str, Any]:
        rand = self._random
        return {"object": "organization_membership", "id": om_id, "user_id": user_id,
                "organization_id": org_id, "status": "active" if rand() < 0.85 else "pending",
                "role": {"slug": "member" if rand() < 0.8 else "admin"}, "custom_attributes": {},
                "directory_managed": rand() < 0.2, "created_at": stamp, "updated_at": stamp}

    def _update(self, kind: str, object_id: str, stamp: str) -> tuple[str, dict[str, Any]]:
        self._serial += 1
        data = {**self._snapshots[object_id], **self._change(kind, object_id, stamp), "updated_at": stamp}
        self._snapshots[object_id] = data
        return f"{kind}.updated", data

    def _change(self, kind: str, object_id: str, stamp: str) -> dict[str, Any]:
        """One field change, chosen first so only that value is built (and only its draws are made)."""
        which = int(self._random() * (5 if kind == USER else 2 if kind == ORG else 3))
        if kind == USER:
            if which == 0:
                return {"first_name": self._pick(_FIRST)}
            if which == 1:
                return {"last_name": self._pick(_LAST)}
            if which == 2:
                return {"email_verified": True}
            if which == 3:
                return {"last_sign_in_at": stamp}
            return {"metadata": {"plan": self._pick(_PLANS), "rev": self._serial}}
        if kind == ORG:
            if which == 0:
                return {"name": f"{self._snapshots[object_id]['name'].split(' (')[0]} ({self._serial})"}
            return {"metadata": {"tier": self._pick(_TIERS)}}
        if which == 0:
            return {"role": {"slug": self._pick(_ROLES)}}
        if which == 1:
            return {"status": self._pick(("active", "inactive"))}
        return {"custom_attributes": {"team": self._pick(_WORDS).lower()}}

    def _plan_delete(self, kind: str, object_id: str) -> None:
        """Take the object (and its memberships first) out of play and queue their deletion events."""
        if kind != MEMBERSHIP:
            for om_id in sorted(self._members.pop(object_id, ())):
                self._plan_delete(MEMBERSHIP, om_id)
        else:
            snap = self._snapshots[object_id]
            self._pairs.discard((snap["user_id"], snap["organization_id"]))
            self._members[snap["user_id"]].discard(object_id)
            self._members[snap["organization_id"]].discard(object_id)
        self._pools[kind].remove(object_id)
        self._pending.append((kind, object_id))

    def _emit_delete(self, kind: str, object_id: str, stamp: str) -> tuple[str, dict[str, Any]]:
        data = {**self._snapshots.pop(object_id), "updated_at": stamp}
        return f"{kind}.deleted", data

    def _other(self, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        etype = self._pick(_OTHER_TYPES)
        users, orgs = self._pools[USER], self._pools[ORG]
        user = users.pick(self._random()) if users else None
        org = orgs.pick(self._random()) if orgs else None
        ip, agent = f"198.51.100.{1 + int(self._random() * 254)}", self._pick(_AGENTS)
        if etype == "session.created":
            return etype, {"object": "session", "id": self._new_id("session_", ms), "user_id": user,
                           "organization_id": org, "ip_address": ip, "user_agent": agent,
                           "created_at": stamp, "updated_at": stamp}
        if etype == "authentication.email_verification_succeeded":
            return etype, {"type": "email_verification", "status": "succeeded", "user_id": user,
                           "email": None if user is None else self._snapshots[user]["email"],
                           "ip_address": ip, "user_agent": agent}
        if etype == "connection.activated":
            return etype, {"object": "connection", "id": self._new_id("conn_", ms), "organization_id": org,
                           "connection_type": "OktaSAML", "name": "Okta", "state": "active",
                           "created_at": stamp, "updated_at": stamp}
        kind = "directory_user" if etype == "dsync.user.created" else "directory_group"
        return etype, {"object": kind, "id": self._new_id(f"{kind}_", ms),
                       "directory_id": f"directory_{ulid(ms, 0)}", "organization_id": org,
                       "idp_id": str(self.rng.getrandbits(32)), "created_at": stamp, "updated_at": stamp}


# ------------------------------------------------------------------------------------------ stream
def _organization_of(etype: str, data: Any) -> str | None:
    """The organization an event is about, for the ``organization_id`` filter."""
    if not isinstance(data, dict):
        return None
    org = data.get("organization_id")
    if org is None and etype.startswith("organization."):
        org = data.get("id")
    return org if isinstance(org, str) else None


@dataclass(frozen=True)
class _Query:
    types: frozenset[str]
    organization_id: str | None
    limit: int
    after: str | None
    before: str | None
    descending: bool
    start_ms: int | None
    end_ms: int | None


@dataclass
class _Selection:
    """Cache entry: indices of events matching one filter, over the first ``scanned`` events."""

    indices: array[int] = field(default_factory=lambda: array("q"))
    scanned: int = 0


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode = _ENCODER.encode


class _Stream:
    """Append-only, id-sorted event storage; each event kept as its pre-encoded JSON bytes.

    Ids are sorted, so ``bisect`` over them replaces an id→index map and also places unknown ids.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.types: list[str] = []
        self.times = array("q")  # event time (ms) as encoded in the id
        self.bodies: list[bytes] = []
        self.orgs: list[str | None] = []
        self._cache: dict[tuple[frozenset[str], str | None], _Selection] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, event: dict[str, Any]) -> None:
        """Append one event given as a dict; its id must sort after every existing id."""
        self.push(event["id"], event["event"], ulid_ms(event["id"]), _encode(event).encode(),
                  _organization_of(event["event"], event.get("data")))

    def push(self, event_id: str, etype: str, ms: int, body: bytes, org: str | None) -> None:
        """Append one pre-encoded event (the fast path for generated events)."""
        self.ids.append(event_id)
        self.types.append(etype)
        self.times.append(ms)
        self.bodies.append(body)
        self.orgs.append(org)

    def select(self, types: frozenset[str], org: str | None) -> array[int]:
        """Indices of events whose type is in ``types`` (and organization is ``org``), extended lazily."""
        entry = self._cache.get((types, org))
        if entry is None:
            if len(self._cache) >= _CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
            entry = self._cache[(types, org)] = _Selection()
        if entry.scanned < len(self.ids):
            kinds, orgs, start = self.types, self.orgs, entry.scanned
            entry.indices.extend(i for i in range(start, len(kinds))
                                 if kinds[i] in types and (org is None or orgs[i] == org))
            entry.scanned = len(kinds)
        return entry.indices

    def page(self, query: _Query, repeat_boundary: bool) -> tuple[list[int], bool]:
        """Event indices of one page in listing order, and whether more events remain after it."""
        chosen = self.select(query.types, query.organization_id)
        low, high = 0, len(chosen)
        if query.start_ms is not None:
            low = max(low, bisect.bisect_left(chosen, bisect.bisect_left(self.times, query.start_ms)))
        if query.end_ms is not None:
            high = min(high, bisect.bisect_left(chosen, bisect.bisect_left(self.times, query.end_ms)))
        older = query.after if query.descending else query.before
        newer = query.before if query.descending else query.after
        if newer is not None:
            low = max(low, bisect.bisect_left(chosen, bisect.bisect_right(self.ids, newer)))
        if older is not None:
            high = min(high, bisect.bisect_left(chosen, bisect.bisect_left(self.ids, older)))
        if query.descending:
            start = max(low, high - query.limit)
            return list(reversed(chosen[start:high])), start > low
        boundary = self._boundary(chosen, query.after) if repeat_boundary else None
        take = query.limit if boundary is None else max(query.limit - 1, 1)
        page = list(chosen[low:min(high, low + take)])
        return ([] if boundary is None else [boundary]) + page, low + take < high

    def _boundary(self, chosen: array[int], after: str | None) -> int | None:
        """Index of the ``after`` event if it is in the selection (for the repeat_boundary fault)."""
        if after is None:
            return None
        index = bisect.bisect_left(self.ids, after)
        if index == len(self.ids) or self.ids[index] != after:
            return None
        slot = bisect.bisect_left(chosen, index)
        return index if slot < len(chosen) and chosen[slot] == index else None

    def body(self, indices: list[int], more: bool) -> bytes:
        after = b'"' + self.ids[indices[-1]].encode() + b'"' if more and indices else b"null"
        return (b'{"object":"list","data":[' + b",".join([self.bodies[i] for i in indices])
                + b'],"list_metadata":{"before":null,"after":' + after + b"}}")


def _validation(*errors: tuple[str, str]) -> bytes:
    body = {"errors": [{"code": code, "field": name} for code, name in errors],
            "message": "Validation failed."}
    return _encode(body).encode()


def _parse_query(query: str) -> _Query | bytes:
    """Parse ``/events`` query parameters; a 422 body (bytes) when they are invalid."""
    params: dict[str, list[str]] = defaultdict(list)
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key].append(value)
    types = frozenset(part.strip() for value in params["events"] + params["events[]"]
                      for part in value.split(",") if part.strip())
    errors: list[tuple[str, str]] = [] if types else [("required", "events")]
    limit = DEFAULT_LIMIT
    if params.get("limit"):
        try:
            limit = int(params["limit"][-1])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            errors.append(("invalid", "limit"))
    order = params["order"][-1] if params.get("order") else "asc"
    if order not in ("asc", "normal", "desc"):
        errors.append(("invalid", "order"))
    cursors: dict[str, str | None] = {}
    for name in ("after", "before"):
        cursor = cursors[name] = params[name][-1] if params.get(name) and params[name][-1] else None
        if cursor is not None and not _EVENT_ID.fullmatch(cursor):
            errors.append(("invalid", name))
    bounds: dict[str, int | None] = {}
    for name in ("range_start", "range_end"):
        bounds[name] = None
        if params.get(name):
            try:  # an event at ms t is >= a bound b (in µs) iff t >= ceil(b / 1000)
                bounds[name] = -(-_micros(parse_timestamp(params[name][-1])) // 1000)
            except ValueError:
                errors.append(("invalid", name))
    if errors:
        return _validation(*errors)
    org = params["organization_id"][-1] if params.get("organization_id") else None
    return _Query(types, org or None, limit, cursors["after"], cursors["before"], order == "desc",
                  bounds["range_start"], bounds["range_end"])


# -------------------------------------------------------------------------------------------- HTTP
@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    send_only: int | None = None  # send this many body bytes, then drop the connection


_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}
_RESET = _Response(0, b"")  # sentinel: close the connection abruptly without a response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # plus one buffer per response: no Nagle / delayed-ACK stalls
    server_version = "WorkOSSimulator/1"
    timeout = 60  # bounds idle keep-alive connections

    def do_GET(self) -> None:
        simulator = cast(_Server, self.server).simulator
        response = simulator.respond(self.path, self.headers.get("Authorization", ""))
        simulator.record(self.path, response.status)
        if response is _RESET:
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # with linger 0 the final close sends RST, not FIN
            return
        self._send(response)

    def _send(self, response: _Response) -> None:
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}",
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: WorkOSSimulator) -> None:
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self.connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up (timeouts, resets); report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Shut open keep-alive connections so their threads end with the server."""
        with self._connections_lock:
            for connection in list(self.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------- simulator
@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC during bulk generation: it makes no cycles, and the collector's passes over
    a growing heap of snapshots cost about a sixth of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class WorkOSSimulator:
    """A WorkOS Events API on loopback, generated deterministically from ``seed``.

    The initial ``events`` are spread over the 20 days before ``now`` (default ``DEFAULT_NOW``, fixed so
    the bytes depend only on the arguments). Later events (``generate``, ``append``, live traffic at
    ``live_rate`` per second, created lazily when requests arrive) get ids after every existing one,
    at ``now`` plus the time elapsed since construction. Thread-safe; ``faults`` may be replaced at any time.
    """

    def __init__(self, *, events: int = 1000, seed: int = 0, api_key: str = "sk_test_simulator",
                 live_rate: float = 0.0, faults: Faults | None = None, host: str = "127.0.0.1",
                 port: int = 0, timestamp_style: str = "iso", now: datetime | None = None) -> None:
        if events < 0 or live_rate < 0:
            raise ValueError("events and live_rate must not be negative")
        if timestamp_style not in ("iso", "mixed"):
            raise ValueError("timestamp_style must be 'iso' or 'mixed'")
        moment = DEFAULT_NOW if now is None else now
        self._now_ms = _micros(moment if moment.tzinfo else moment.replace(tzinfo=UTC)) // 1000
        self._api_key = api_key
        self._address = (host, port)
        self._style = timestamp_style
        self.live_rate = live_rate
        self.faults = faults or Faults()
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._fault_rng = random.Random(seed ^ 0x5EED)
        self._append_rng = random.Random(seed ^ 0xA99E)  # ids of appended events; apart so faults stay put
        self._turns: defaultdict[str, int] = defaultdict(int)
        self._stuck: tuple[str, bytes] | None = None
        self._stream = _Stream()
        self._lifecycle = _Lifecycle(seed)
        self._born = time.monotonic()
        self._live_started = self._born
        self._live_emitted = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._seed_history(events)

    def __repr__(self) -> str:  # never shows the api key
        return f"WorkOSSimulator(events={len(self._stream)}, url={self._url_or_none()!r})"

    # ---- lifecycle
    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started."""
        url = self._url_or_none()
        if url is None:
            raise RuntimeError("simulator not started")
        return url

    def _url_or_none(self) -> str | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Bind and serve in a background thread; returns the base URL. Live traffic starts now."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(self._address, self)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="workos-simulator", daemon=True)
            self._thread.start()
            with self._lock:
                self._live_started, self._live_emitted = time.monotonic(), 0
        return self.url

    def stop(self) -> None:
        """Stop serving, end slow requests early and close open connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WorkOSSimulator:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # ---- data
    def _seed_history(self, count: int) -> None:
        span = HISTORY // timedelta(milliseconds=1)
        start, gap, previous = self._now_ms - span, span / max(count, 1), -1
        rng = self._lifecycle.rng
        with _gc_paused():
            for i in range(count):
                ms = max(previous + 1, start + int((i + rng.random()) * gap))
                self._add_generated(ms)
                previous = ms

    def _add_generated(self, ms: int) -> None:
        stamp = format_timestamp(ms, 0 if self._style == "iso" else ms % 3)
        etype, data = self._lifecycle.next(ms, stamp)
        event_id = "event_" + ulid(ms, self._lifecycle.rng.getrandbits(80))
        # The envelope's strings are plain ASCII, so only ``data`` needs the JSON encoder.
        body = (f'{{"object":"event","id":"{event_id}","event":"{etype}","data":{_encode(data)},'
                f'"created_at":"{stamp}","context":{{}}}}')
        self._stream.push(event_id, etype, ms, body.encode(), _organization_of(etype, data))

    def _next_ms(self, wanted: int | None = None) -> int:
        clock = self._now_ms + int((time.monotonic() - self._born) * 1000)
        last = self._stream.times[-1] + 1 if len(self._stream) else 0
        return max(last, clock if wanted is None else wanted)

    def generate(self, n: int) -> None:
        """Append ``n`` more lifecycle events (continuing the same deterministic lifecycle)."""
        with self._lock:
            ms = self._next_ms()
            for _ in range(n):
                self._add_generated(ms)
                ms += 1

    def append(self, raw_event: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Inject custom events as given (stale updates, poison, unknown types).

        ``event`` (the type) is required. A missing ``id`` is assigned after every existing id (at the
        event's ``created_at`` if that is later); a given ``id`` must be ``event_<ULID>`` and sort after
        every existing one (ValueError otherwise). Missing ``created_at``, ``context`` and ``object`` are
        filled in.
        """
        with self._lock:
            for raw in [raw_event] if isinstance(raw_event, dict) else raw_event:
                self._stream.add(self._complete(raw))

    def _complete(self, raw: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(raw.get("event"), str):
            raise ValueError("an appended event needs an 'event' type")
        event_id = raw.get("id")
        if event_id is None:
            wanted = None
            if isinstance(raw.get("created_at"), str):
                with contextlib.suppress(ValueError):
                    wanted = _micros(parse_timestamp(raw["created_at"])) // 1000
            event_id = "event_" + ulid(self._next_ms(wanted), self._append_rng.getrandbits(80))
        elif not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)) or (
                len(self._stream) and event_id <= self._stream.ids[-1]):
            raise ValueError("an appended event id must be event_<ULID> and sort after every existing id")
        ms = ulid_ms(event_id)
        event = {"object": "event", "id": event_id, "event": raw["event"], "data": raw.get("data", {}),
                 "created_at": raw.get("created_at", format_timestamp(ms)), "context": raw.get("context", {})}
        return {**event, **{k: v for k, v in raw.items() if k not in event}}

    def events(self) -> list[dict[str, Any]]:
        """Every event currently in the stream, decoded, oldest first."""
        with self._lock:
            bodies = list(self._stream.bodies)
        return [json.loads(body) for body in bodies]

    def final_state(self, types: set[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """What a newer-wins mirror holds after replaying the stream; see ``mirror_state``."""
        return mirror_state(self.events(), types)

    def record(self, path: str, status: int) -> None:
        """Log one request in ``requests`` (status 0: reset); the oldest half goes past _MAX_LOG entries."""
        with self._lock:
            self.requests.append((path, status))
            if len(self.requests) > _MAX_LOG:  # a long-running demo must not grow without bound
                del self.requests[:_MAX_LOG // 2]

    # ---- serving
    def respond(self, target: str, authorization: str) -> _Response:
        """The response to ``GET target`` (``_RESET`` to drop the connection)."""
        path, _, query = target.partition("?")
        if path == "/health":
            return _Response(200, b'{"status":"ok","events":%d}' % len(self._stream))
        if path != "/events":
            return _Response(404, b'{"message":"Not Found"}')
        self._advance_live()
        faults = self.faults
        with self._lock:
            fault = faults.draw(self._fault_rng.random())
        if faults.latency:
            self._stopping.wait(faults.latency)
        if fault == "timeout":
            self._stopping.wait(faults.slow_seconds)
        elif fault is not None and fault != "broken":
            return self._fault_response(fault, faults)
        response = self._serve_events(query, authorization, faults)
        if fault == "broken" and response.status == 200:
            return self._broken(response)
        return response

    def _serve_events(self, query: str, authorization: str, faults: Faults) -> _Response:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {self._api_key}".encode()):
            return _Response(401, b'{"message":"Unauthorized"}')
        parsed = _parse_query(query)
        if isinstance(parsed, bytes):
            return _Response(422, parsed)
        with self._lock:
            stuck = self._stuck
            if faults.stuck_after is not None and stuck is not None and stuck[0] == faults.stuck_after:
                return _Response(200, stuck[1])
            body = self._stream.body(*self._stream.page(parsed, faults.repeat_boundary))
            if faults.stuck_after is not None and parsed.after == faults.stuck_after:
                self._stuck = (faults.stuck_after, body)
        return _Response(200, body)

    def _advance_live(self) -> None:
        if self.live_rate <= 0 or self._server is None:
            return
        with self._lock:
            due = int((time.monotonic() - self._live_started) * self.live_rate) - self._live_emitted
            due = min(due, _LIVE_BURST)
            if due > 0:
                self.generate(due)
                self._live_emitted += due

    def _turn(self, name: str) -> int:
        with self._lock:
            self._turns[name] += 1
            return self._turns[name] - 1

    def _fault_response(self, fault: str, faults: Faults) -> _Response:
        if fault == "reset":
            return _RESET
        if fault == "rate_limit":
            wait = faults.retry_after
            text = str(int(wait)) if float(wait).is_integer() else f"{wait:g}"
            return _Response(429, b'{"message":"Too many requests"}', headers=(("Retry-After", text),))
        status = (500, 502, 503)[self._turn("error") % 3]
        if status == 502:  # proxies answer in HTML: clients must not assume a JSON error body
            return _Response(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        return _Response(status, b'{"message":"%s"}' % _REASONS[status].encode())

    def _broken(self, response: _Response) -> _Response:
        body, variant = response.body, self._turn("broken") % 3
        if variant == 0:  # a valid prefix, correctly framed: the JSON decoder must fail
            return _Response(200, body[:max(1, len(body) // 2)])
        if variant == 1:
            return _Response(200, b'{"object":"list","data":[<!-- upstream error -->')
        return _Response(200, body, send_only=len(body) // 2)  # framing says more than arrives


_BUCKETS = {USER: "users", ORG: "organizations", MEMBERSHIP: "organization_memberships"}
_Key = tuple[str, str]


def mirror_state(events: Iterable[dict[str, Any]],
                 types: set[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Objects a newer-wins mirror holds after applying ``events`` in order (only types in ``types``).

    Returns ``{"users": {id: data}, "organizations": …, "organization_memberships": …}``. Rules match
    syncd's mirror: an upsert applies unless the stored object is newer or its tombstone is not older;
    a delete removes the object unless it is newer, and leaves a tombstone. Events whose data lacks a
    string ``id`` or a parseable ``updated_at`` are skipped (a mirror would fail them).
    """
    state: dict[str, dict[str, dict[str, Any]]] = {bucket: {} for bucket in _BUCKETS.values()}
    versions: dict[_Key, datetime] = {}
    tombs: dict[_Key, datetime] = {}
    for event in events:
        target = _mirror_target(event, types)
        if target is None:
            continue
        kind, deleted, data, stamp = target
        key, objects = (kind, data["id"]), state[_BUCKETS[kind]]
        if key in tombs and tombs[key] >= stamp:
            continue
        if not deleted:
            if key not in versions or versions[key] <= stamp:
                objects[data["id"]], versions[key] = data, stamp
            continue
        if key in versions and versions[key] <= stamp:
            del objects[data["id"]], versions[key]
        tombs[key] = stamp
    return state


def _mirror_target(event: dict[str, Any],
                   types: set[str] | None) -> tuple[str, bool, dict[str, Any], datetime] | None:
    """(kind, is_delete, data, updated_at) for a mirrorable event, else None."""
    etype, data = event.get("event"), event.get("data")
    if not isinstance(etype, str) or (types is not None and etype not in types) or not isinstance(data, dict):
        return None
    kind, _, action = etype.rpartition(".")
    if kind not in _BUCKETS or action not in ("created", "updated", "deleted") or \
            not isinstance(data.get("id"), str) or not isinstance(data.get("updated_at"), str):
        return None
    try:
        stamp = parse_timestamp(data["updated_at"])
    except ValueError:
        return None
    return kind, action == "deleted", data, stamp


# --------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncd simulate workos",
                                     description="Serve a simulated WorkOS Events API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--events", type=int, default=1000, help="events generated up front")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default="sk_test_simulator")
    parser.add_argument("--live-rate", type=float, default=0.0, help="new events per second")
    parser.add_argument("--timestamp-style", choices=("iso", "mixed"), default="iso")
    parser.add_argument("--now", type=parse_timestamp, default=None,
                        help="end of the generated history (ISO-8601); default: the wall clock")
    for knob in ("error", "rate-limit", "timeout", "broken", "reset"):
        parser.add_argument(f"--{knob}-rate", type=float, default=0.0, help="fraction of /events requests")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds sent with 429s")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="delay of a timeout fault")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every /events answer waits")
    parser.add_argument("--repeat-boundary", action="store_true",
                        help="each page after=X starts with event X again")
    parser.add_argument("--stuck-after", metavar="EVENT_ID", default=None,
                        help="once a request has after=EVENT_ID, every later page repeats that page")
    return parser


def _mask(secret: str) -> str:
    return (secret[:8] if len(secret) > 12 else "") + "…"


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; prints one line with its URL. Returns the exit code."""
    args = _parser().parse_args(argv)
    faults = Faults(error_rate=args.error_rate, rate_limit_rate=args.rate_limit_rate,
                    retry_after=args.retry_after, timeout_rate=args.timeout_rate,
                    slow_seconds=args.slow_seconds, broken_rate=args.broken_rate, reset_rate=args.reset_rate,
                    repeat_boundary=args.repeat_boundary, stuck_after=args.stuck_after, latency=args.latency)
    simulator = WorkOSSimulator(events=args.events, seed=args.seed, api_key=args.api_key,
                                live_rate=args.live_rate, faults=faults, host=args.host, port=args.port,
                                timestamp_style=args.timestamp_style, now=args.now or datetime.now(UTC))
    done = threading.Event()
    previous = _install_signals(lambda signum, frame: done.set())
    try:
        url = simulator.start()
        print(f"WorkOS simulator on {url} ({args.events} events, api key {_mask(args.api_key)})", flush=True)
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
        _install_signals(previous)
    return 0


_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def _install_signals(handler: _SignalHandler | dict[int, _SignalHandler]) -> dict[int, _SignalHandler]:
    """Set handlers for SIGINT and SIGTERM (one for both, or per signal); returns the previous ones."""
    previous: dict[int, _SignalHandler] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # signals can only be handled in the main thread; KeyboardInterrupt still works
    for signum in (signal.SIGINT, signal.SIGTERM):
        chosen = handler.get(signum) if isinstance(handler, dict) else handler
        if chosen is not None:
            previous[signum] = signal.signal(signum, chosen)
    return previous


if __name__ == "__main__":
    raise SystemExit(main())
