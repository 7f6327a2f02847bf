"""The simulated event list and the ``GET /v1/events`` query over it, as Stripe answers it.

Events are kept in list order, oldest at index 0 (Stripe lists the reverse: newest first). Ids are random
(``evt_`` + 24 alphanumerics), so nothing but this list says which event is newer. An event's position
never changes: events are only appended (at the simulator's ``now``, never earlier than the newest) or
expire from the old end.
"""

from __future__ import annotations

import bisect
import json
import random
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["MAX_TYPES", "Entry", "EventList", "Query", "QueryError", "new_id", "parse_query"]

MAX_TYPES = 20
_ALPHABET = string.ascii_letters + string.digits
_CREATED_OPS = ("gt", "gte", "lt", "lte")


def new_id(rng: random.Random) -> str:
    """A Stripe-like event id: random, so ids say nothing about order."""
    return "evt_" + "".join(rng.choice(_ALPHABET) for _ in range(24))


class QueryError(Exception):
    """A request Stripe refuses: ``status`` and the ``param`` it names."""

    def __init__(self, status: int, param: str | None, message: str, code: str = "parameter_invalid") -> None:
        super().__init__(message)
        self.status, self.param, self.message, self.code = status, param, message, code

    def body(self) -> bytes:
        error: dict[str, Any] = {"type": "invalid_request_error", "code": self.code, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        return json.dumps({"error": error}).encode()


@dataclass(frozen=True)
class Query:
    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None
    types: frozenset[str] | None = None
    created: tuple[tuple[str, int], ...] = ()

    def matches(self, entry: Entry) -> bool:
        if self.types is not None and entry.raw.get("type") not in self.types:
            return False
        created = entry.created
        for op, value in self.created:
            if not {"gt": created > value, "gte": created >= value, "lt": created < value,
                    "lte": created <= value}[op]:
                return False
        return True


def parse_query(text: str) -> Query:
    """The query string of ``GET /v1/events``; ``QueryError`` for what Stripe refuses (unknown parameters too)."""
    limit, after, before, types, created = 10, None, None, [], []
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name == "limit":
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise QueryError(400, "limit", "limit must be an integer between 1 and 100")
            limit = int(value)
        elif name in ("starting_after", "ending_before"):
            if not value:
                raise QueryError(400, name, f"{name} must not be empty")
            after, before = (value, before) if name == "starting_after" else (after, value)
        elif name in ("types[]", "types"):
            types.append(value)
        elif name.startswith("created[") and name.endswith("]") and name[8:-1] in _CREATED_OPS:
            created.append((name[8:-1], _integer(name, value)))
        elif name == "created":
            created.append(("gte", _integer(name, value)))
            created.append(("lte", _integer(name, value)))
        else:
            raise QueryError(400, name, f"Received unknown parameter: {name}")
    if after is not None and before is not None:
        raise QueryError(400, "ending_before", "You may only specify one of these parameters: "
                                              "ending_before, starting_after.")
    if len(types) > MAX_TYPES:
        raise QueryError(400, "types", f"types may contain at most {MAX_TYPES} event types")
    return Query(limit=limit, starting_after=after, ending_before=before,
                 types=frozenset(types) if types else None, created=tuple(created))


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise QueryError(400, name, f"Invalid integer: {value[:40]}") from None


@dataclass(frozen=True)
class Entry:
    """One listed event: ``raw`` as served (maybe malformed), ``created`` its second for order and filters."""

    raw: dict[str, Any]
    created: int
    id: str | None


class EventList:
    """Events oldest first, with an index from id to position (positions shift only when events expire)."""

    def __init__(self) -> None:
        self.events: list[Entry] = []
        self._offset = 0  # how many events expired from the front; position = index + offset
        self._position: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.events)

    def append(self, entry: Entry) -> None:
        if self.events and entry.created < self.events[-1].created:
            raise ValueError("events are appended in time order: created before the newest event")
        if entry.id is not None:
            if entry.id in self._position:
                raise ValueError(f"duplicate event id {entry.id}")
            self._position[entry.id] = self._offset + len(self.events)
        self.events.append(entry)

    def expire(self, before: int) -> int:
        """Drop the events created before ``before`` (retention); returns how many."""
        gone = 0
        while gone < len(self.events) and self.events[gone].created < before:
            self._position.pop(self.events[gone].id or "", None)
            gone += 1
        del self.events[:gone]
        self._offset += gone
        return gone

    def index(self, event_id: str) -> int | None:
        position = self._position.get(event_id)
        return None if position is None else position - self._offset

    def page(self, query: Query) -> tuple[list[Entry], bool]:
        """The events of one list request, newest first, and ``has_more``.

        ``starting_after=X``: the ``limit`` matching events just older than X. ``ending_before=X``: the
        ``limit`` matching events just newer than X (the ones nearest X), still listed newest first;
        ``has_more`` then says that newer ones remain. Neither: the newest ``limit``."""
        cursor = query.starting_after or query.ending_before
        anchor = self.index(cursor) if cursor is not None else None
        if cursor is not None and anchor is None:
            param = "starting_after" if query.starting_after else "ending_before"
            raise QueryError(404, param, f"No such event: '{cursor[:60]}'", code="resource_missing")
        low, high = self._bounds(query)  # the created filters, as an index range (the list is in time order)
        if query.ending_before is not None:
            assert anchor is not None
            positions: range = range(max(anchor + 1, low), high)
        else:
            positions = range(min(high, anchor if anchor is not None else high) - 1, low - 1, -1)
        chosen: list[Entry] = []
        for i in positions:
            entry = self.events[i]
            if query.matches(entry):
                if len(chosen) == query.limit:
                    return (chosen[::-1] if query.ending_before is not None else chosen), True
                chosen.append(entry)
        return (chosen[::-1] if query.ending_before is not None else chosen), False

    def _bounds(self, query: Query) -> tuple[int, int]:
        low, high = 0, len(self.events)
        for op, value in query.created:
            if op in ("gt", "gte"):
                edge = value + 1 if op == "gt" else value
                low = max(low, bisect.bisect_left(self.events, edge, key=_created))
            else:
                edge = value + 1 if op == "lte" else value
                high = min(high, bisect.bisect_left(self.events, edge, key=_created))
        return low, high


def _created(entry: Entry) -> int:
    return entry.created
