"""The ledger's search by event id or object id (the dashboard's search box; ``Reads.event_history``).

Two look-ups, each by an index, merged: events whose ``object_id`` (``syncd.store.objects``) is the needle (the
``ix_syncd_events_object_id`` index), and the event whose id is the needle on each stream (the primary key,
``(stream, event_id)``, one probe per stream: the streams are the sources' keys). Neither reads a payload, so a
search costs the same on a ledger of a year as on one of a day (bench/README.md, "Dashboard").
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.store.tables import events, sources

_COLUMNS = (events.c.stream, events.c.event_id, events.c.type, events.c.occurred_at, events.c.payload)
_ORDER = (events.c.occurred_at, events.c.stream, events.c.event_id)


def streams(conn: Connection) -> list[str]:
    """The streams the ledger can hold: the sources' keys (a backfill window shares its source's stream)."""
    return sorted({r[0] for r in conn.execute(sa.select(sources.c.source).distinct())})


def queries(needle: str, stream_keys: list[str], limit: int) -> list[Any]:
    """The statements of one search (``find``), each answered by an index: by object id, and by event id
    on each of ``stream_keys`` (none when there is no stream)."""
    found = [sa.select(*_COLUMNS).where(events.c.object_id == needle).order_by(*_ORDER).limit(limit)]
    if stream_keys:
        found.append(sa.select(*_COLUMNS).where(events.c.stream.in_(stream_keys), events.c.event_id == needle)
                     .order_by(*_ORDER).limit(limit))
    return found


def find(conn: Connection, needle: str, limit: int) -> list[Any]:
    """Ledger rows (stream, event_id, type, occurred_at, payload) whose object id or event id is ``needle``:
    at most ``limit``, oldest first (then by stream and event id), each once."""
    rows: dict[tuple[str, str], Any] = {}
    for query in queries(needle, streams(conn), limit):
        for row in conn.execute(query):
            rows[(row.stream, row.event_id)] = row
    return sorted(rows.values(), key=lambda r: (r.occurred_at, r.stream, r.event_id))[:limit]
