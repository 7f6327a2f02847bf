"""The ledger's search by event id or object id (the dashboard's search box; ``Reads.event_history``).

Three look-ups, merged: the events recorded but not indexed yet whose pairs name the needle (the backlog,
``objindex.unindexed``), the events the object index (``syncd_event_objects``, ``syncd.store.objects``: every id
an event names) lists under the needle, by its primary key in the order shown, and the event whose id is the
needle on each stream (the ledger's primary key, one probe per stream: the streams are the sources' keys). The
backlog is read first: an event indexed in between is then found by the index (it moves in one transaction), so
the answer misses nothing. None reads a payload to decide, so a search costs the same on a ledger of a year as on
one of a day (bench/README.md, "Dashboard search").
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.store import objindex
from syncd.store.tables import event_objects, events, sources

_COLUMNS = (events.c.stream, events.c.event_id, events.c.type, events.c.occurred_at, events.c.payload)
_ORDER = (events.c.occurred_at, events.c.stream, events.c.event_id)


def streams(conn: Connection) -> list[str]:
    """The streams the ledger can hold: the sources' keys (a backfill window shares its source's stream)."""
    return sorted({r[0] for r in conn.execute(sa.select(sources.c.source).distinct())})


def queries(needle: str, stream_keys: list[str], limit: int) -> list[Any]:
    """The indexed statements of one search (``find``): by object id, and by event id on each of
    ``stream_keys`` (none when there is no stream)."""
    indexed = (sa.select(*_COLUMNS)
               .select_from(event_objects.join(events, sa.and_(events.c.stream == event_objects.c.stream,
                                                               events.c.event_id == event_objects.c.event_id)))
               .where(event_objects.c.object_id == needle)
               .order_by(event_objects.c.occurred_at, event_objects.c.stream, event_objects.c.event_id)
               .limit(limit))
    found = [indexed]
    if stream_keys:
        found.append(sa.select(*_COLUMNS).where(events.c.stream.in_(stream_keys), events.c.event_id == needle)
                     .order_by(*_ORDER).limit(limit))
    return found


def find(conn: Connection, needle: str, limit: int) -> list[Any]:
    """Ledger rows (stream, event_id, type, occurred_at, payload) whose object ids or event id is ``needle``:
    at most ``limit``, oldest first (then by stream and event id), each once."""
    rows: dict[tuple[str, str], Any] = {}
    for row in objindex.unindexed(conn, needle, limit):  # first: see the module docstring
        rows[(row.stream, row.event_id)] = row
    for query in queries(needle, streams(conn), limit):
        for row in conn.execute(query):
            rows[(row.stream, row.event_id)] = row
    return sorted(rows.values(), key=lambda r: (r.occurred_at, r.stream, r.event_id))[:limit]
