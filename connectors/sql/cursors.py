"""The table connector's cursors, pure: what ``insert`` and ``update`` sources store, and how they move.

See ``client.py`` for why the insert cursor keeps gaps and the update cursor the keys seen at ``since``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.sql.values import json_safe

__all__ = ["CURSOR_VERSION", "GAP_SECONDS", "MAX_GAPS", "Gap", "InsertCursor", "UpdateCursor", "advance_insert",
           "advance_update"]

CURSOR_VERSION = 1
#: How long a gap below the insert cursor is looked into again (a transaction open longer is missed).
GAP_SECONDS = 300.0
#: At most this many gap ranges are kept (the oldest go first): bounds the query's size.
MAX_GAPS = 100

Gap = tuple[int, int, float]  # [low, high] inclusive, first seen (epoch seconds)


@dataclass(frozen=True)
class InsertCursor:
    after: Any = None
    gaps: tuple[Gap, ...] = ()

    def dumps(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "after": json_safe(self.after),
                           "gaps": [list(g) for g in self.gaps]}, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> InsertCursor:
        body = _load(text)
        return cls(after=body.get("after"), gaps=tuple((int(lo), int(hi), float(t)) for lo, hi, t in
                                                       body.get("gaps", [])))


def advance_insert(cursor: InsertCursor, keys: Sequence[Any], *, now: float, gap_seconds: float = GAP_SECONDS,
                   track_gaps: bool = True, max_gaps: int = MAX_GAPS) -> InsertCursor:
    """The cursor after delivering ``keys`` (ascending): ``after`` moves to the largest; keys delivered
    from a gap are taken out of it; integer keys skipped over become new gaps; old gaps expire."""
    if not track_gaps:
        return InsertCursor(after=keys[-1] if keys else cursor.after)
    delivered = set(keys)
    gaps: list[Gap] = []
    for lo, hi, seen in cursor.gaps:
        if now - seen < gap_seconds:
            gaps.extend(_split(lo, hi, seen, (k for k in delivered if lo <= k <= hi)))
    after = cursor.after
    if after is None and keys:  # the first poll: keys below the first one may still be in flight too
        after = min(0, keys[0] - 1)
    for key in keys:
        if after is None or key > after:
            if after is not None and key > after + 1:
                gaps.append((after + 1, key - 1, now))
            after = key
    gaps.sort(key=lambda g: g[2])
    return InsertCursor(after=after, gaps=tuple(sorted(gaps[-max_gaps:])))


def _split(lo: int, hi: int, seen: float, found: Iterable[int]) -> list[Gap]:
    parts: list[Gap] = []
    start = lo
    for key in sorted(found):
        if key > start:
            parts.append((start, key - 1, seen))
        start = key + 1
    if start <= hi:
        parts.append((start, hi, seen))
    return parts


@dataclass(frozen=True)
class UpdateCursor:
    """``since``: canonical UTC text of the newest ``updated_at`` delivered; ``seen``: keys delivered then."""

    since: str | None = None
    seen: frozenset[Any] = field(default_factory=frozenset)

    def dumps(self) -> str:
        seen = sorted(json_safe(k) for k in self.seen)
        return json.dumps({"v": CURSOR_VERSION, "since": self.since, "seen": seen}, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> UpdateCursor:
        body = _load(text)
        return cls(since=body.get("since"), seen=frozenset(body.get("seen", [])))


def advance_update(cursor: UpdateCursor, versions: Sequence[tuple[Any, str]]) -> UpdateCursor:
    """After delivering ``versions`` (``(key, since-text)`` ascending): ``since`` is the newest, ``seen`` the
    keys delivered at exactly that time (added to the old ones when it did not move)."""
    if not versions:
        return cursor
    newest = max(moment for _, moment in versions)
    at_newest = frozenset(json_safe(k) for k, moment in versions if moment == newest)
    kept = cursor.seen if newest == cursor.since else frozenset()
    return UpdateCursor(since=newest, seen=at_newest | kept)


def _load(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not a table cursor") from None
    if not isinstance(body, dict) or body.get("v") != CURSOR_VERSION:
        raise ValueError("not a version 1 table cursor")
    return body
