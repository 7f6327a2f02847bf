"""The simulated stream's storage and the ``/events`` query: parsing, filtering, one page of bytes."""

from __future__ import annotations

import bisect
import json
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from simulators.workos.faults import poison
from simulators.workos.ids import EVENT_ID, micros, parse_timestamp, ulid_ms

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Query", "Stream", "encode", "organization_of", "parse_query"]

MAX_LIMIT = 100
DEFAULT_LIMIT = 10
_CACHE_SIZE = 64  # distinct filters kept; a daemon uses one or two

def organization_of(etype: str, data: Any) -> str | None:
    """The organization an event is about, for the ``organization_id`` filter."""
    if not isinstance(data, dict):
        return None
    org = data.get("organization_id")
    if org is None and etype.startswith("organization."):
        org = data.get("id")
    return org if isinstance(org, str) else None


@dataclass(frozen=True)
class Query:
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
encode = _ENCODER.encode


class Stream:
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
        self.push(event["id"], event["event"], ulid_ms(event["id"]), encode(event).encode(),
                  organization_of(event["event"], event.get("data")))

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

    def page(self, query: Query, repeat_boundary: bool) -> tuple[list[int], bool]:
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

    def before(self, query: Query, count: int) -> list[int]:
        """Indices of up to ``count`` selected events just before ``query.after``, oldest first."""
        chosen = self.select(query.types, query.organization_id)
        if query.after is None:
            return []
        end = bisect.bisect_left(chosen, bisect.bisect_left(self.ids, query.after))
        return list(chosen[max(0, end - count):end])

    def _boundary(self, chosen: array[int], after: str | None) -> int | None:
        """Index of the ``after`` event if it is in the selection (for the repeat_boundary fault)."""
        if after is None:
            return None
        index = bisect.bisect_left(self.ids, after)
        if index == len(self.ids) or self.ids[index] != after:
            return None
        slot = bisect.bisect_left(chosen, index)
        return index if slot < len(chosen) and chosen[slot] == index else None

    def body(self, indices: list[int], more: bool, poison_every: int = 0) -> bytes:
        after = b'"' + self.ids[indices[-1]].encode() + b'"' if more and indices else b"null"
        bodies = [self.bodies[i] if not poison_every or (i + 1) % poison_every
                  else poison(self.bodies[i], (i + 1) // poison_every - 1) for i in indices]
        return (b'{"object":"list","data":[' + b",".join(bodies)
                + b'],"list_metadata":{"before":null,"after":' + after + b"}}")


def _validation(*errors: tuple[str, str]) -> bytes:
    body = {"errors": [{"code": code, "field": name} for code, name in errors],
            "message": "Validation failed."}
    return encode(body).encode()


def parse_query(query: str) -> Query | bytes:
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
        if cursor is not None and not EVENT_ID.fullmatch(cursor):
            errors.append(("invalid", name))
    bounds: dict[str, int | None] = {}
    for name in ("range_start", "range_end"):
        bounds[name] = None
        if params.get(name):
            try:  # an event at ms t is >= a bound b (in µs) iff t >= ceil(b / 1000)
                bounds[name] = -(-micros(parse_timestamp(params[name][-1])) // 1000)
            except ValueError:
                errors.append(("invalid", name))
    if errors:
        return _validation(*errors)
    org = params["organization_id"][-1] if params.get("organization_id") else None
    return Query(types, org or None, limit, cursors["after"], cursors["before"], order == "desc",
                  bounds["range_start"], bounds["range_end"])

