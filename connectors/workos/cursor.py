"""The WorkOS connector's cursor: the id of the last event listed, or ``@TIME`` (list from that time on).

WorkOS lists events ``after`` an event id. Ids are ``event_`` + a ULID, whose first ten characters are the
event's millisecond time in Crockford base32, so ids sort as text in time order, and every id says when it
was made. That gives the two rules here, pure and tested by tables:

- **Never backwards**: a page that lists events older than the cursor (a provider fault) leaves the cursor
  where it was (``later``), so the walk cannot loop back.
- **Healing a rejected cursor**: when WorkOS refuses an ``after`` (400/422: an expired or unknown cursor),
  the walk restarts from ``range_start`` = the cursor's own time minus ``HEAL_MARGIN`` (``heal_start``).
  Events already in the ledger are dropped there (runs are created only for new events), so nothing is
  lost or applied twice; the margin covers ids minted a little out of order by WorkOS's servers.

- **Oldest first, or refused**: syncd asks ``order=asc``, but WorkOS documents ``desc`` as the default and
  users report ``order`` being ignored. A page listed newest first (``newest_first``) would move the cursor
  to its newest id and skip everything older, so the connector refuses it instead (the tick fails, the
  cursor stays). A page is newest first when it has two or more events whose ids all go back in time, one
  after the other; a page that merely ends with some older events (a provider listing old events again)
  is not, and is handled by the first rule.

``@TIME`` is what ``syncd cursor reset workos --to TIME`` stores; its first page is asked by ``range_start``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from syncd.timefmt import parse_time

HEAL_MARGIN = timedelta(minutes=1)
ID_PREFIX = "event_"
TIME_PREFIX = "@"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def id_time(event_id: str) -> datetime | None:
    """The time encoded in an ``event_<ULID>`` id, or None if it is not one."""
    if not event_id.startswith(ID_PREFIX) or len(event_id) != len(ID_PREFIX) + 26:
        return None
    ms = 0
    for char in event_id[len(ID_PREFIX):len(ID_PREFIX) + 10].upper():
        digit = _CROCKFORD.find(char)
        if digit < 0:
            return None
        ms = ms * 32 + digit
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def cursor_time(cursor: str) -> datetime | None:
    """The time of an ``@TIME`` cursor, or None if ``cursor`` is not one (``ValueError`` if unreadable)."""
    if not cursor.startswith(TIME_PREFIX):
        return None
    return parse_time(cursor[len(TIME_PREFIX):])


def at(moment: datetime) -> str:
    """The ``@TIME`` cursor for ``moment``."""
    return TIME_PREFIX + moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def heal_start(cursor: str) -> datetime | None:
    """Where to restart a walk whose ``after`` cursor the provider rejected; None if the cursor has no time."""
    moment = id_time(cursor)
    return moment - HEAL_MARGIN if moment is not None else None


def later(cursor: str | None, candidate: str | None) -> str | None:
    """The cursor after a page whose last event id is ``candidate``: never an id older than ``cursor``."""
    if candidate is None:
        return cursor
    if cursor is None or not cursor.startswith(ID_PREFIX) or not candidate.startswith(ID_PREFIX):
        return candidate
    return candidate if candidate > cursor else cursor


def newest_first(raw_events: Sequence[object]) -> tuple[str, str] | None:
    """``(first, second)``: two consecutive ids of a page listed newest first, or None if it is not one.

    Only ``event_<ULID>`` ids are compared (they sort as text in time order; an event's ``created_at`` may
    be anything a provider wrote, so it is no evidence of the listing order). The page is newest first when
    at least one consecutive pair of such ids goes back and none goes forward.
    """
    # Lazily: an ascending page (every page, normally) is settled by its first two ids, not decoded whole.
    ids = (raw.get("id") for raw in raw_events if isinstance(raw, dict))
    ulids = (i for i in ids if isinstance(i, str) and id_time(i) is not None)
    backwards: tuple[str, str] | None = None
    for first, second in itertools.pairwise(ulids):
        if second > first:
            return None
        if backwards is None and second < first:
            backwards = (first, second)
    return backwards


__all__ = ["HEAL_MARGIN", "at", "cursor_time", "heal_start", "id_time", "later", "newest_first"]
