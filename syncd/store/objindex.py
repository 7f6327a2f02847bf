"""The ledger's object index: which events are about an object id (``syncd_event_objects``), and how it is kept.

The trade-off: every id an event names is indexed (``syncd.store.objects``: two or three per event). Computed
and written as B-tree entries in the page transaction, they slowed a catch-up by about a tenth (bench/README.md,
"Dashboard search"). So a page transaction only queues its new events' ids, as one ``syncd_object_backlog`` row
(``ledger.queue_objects``: one JSON array, one insert per page), and the index is filled later, off the page's
path:

- ``index_backlog`` indexes backlog rows, one per transaction: the events' payloads read back from the ledger,
  their object ids taken by the rule, the entries inserted in key order, the backlog row deleted. A tick runs
  it for its stream when it has claimed the cursor, before its first page, i.e. when the source has no page in
  flight (``SqlStore.claim``), for at most ``CLAIM_SECONDS``; what is left waits for the next tick. So a
  catch-up's events are indexed by the tick after it (the next ``syncd once``, or ``syncd run``'s next
  interval), not by the catch-up itself.
- The search (``syncd.store.search``) also reads the backlog, so it is never wrong: the backlog's events whose
  payload or id holds the needle as text (``LIKE``, in the database), then the rule on those few. That scan is
  as long as the backlog: the pages recorded since the stream's last tick began.

Guarantees: a backlog row commits with its page (no event in neither) and leaves in the transaction that
indexes it. Indexing takes the stream's transaction lock (``ledger.lock_stream``), as pruning does, so an event
pruned meanwhile leaves no entry behind (``forget`` deletes an event's entries with it; an event already gone
gets none). An entry is shown only with its event: the search joins the ledger.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncd.store import ledger
from syncd.store.bulk import execute_many, insert_ignore, list_param, one_of
from syncd.store.objects import object_ids_of
from syncd.store.tables import event_objects, events, object_backlog

log = logging.getLogger(__name__)

#: Seconds a tick's claim spends indexing its stream's backlog, at most; the rest waits for the next tick,
#: the search reads it meanwhile (bench/README.md: what 100,000 events take).
CLAIM_SECONDS = 2.0
#: The ledger columns a search shows.
SHOWN = ("stream", "event_id", "type", "occurred_at", "payload")


def index_backlog(db: Engine, streams: Collection[str] | None = None, *, seconds: float | None = None) -> int:
    """Index backlog rows (of ``streams``, or all), oldest first, one transaction each, until none is left or
    ``seconds`` have passed; returns how many. Safe with concurrent callers (PostgreSQL: each row is taken with
    ``SKIP LOCKED``; an entry indexed twice is one entry)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    moved = 0
    while deadline is None or time.monotonic() < deadline:
        with db.begin() as conn:
            if not index_one(conn, streams):
                return moved
        moved += 1
    return moved


def index_before_pages(db: Engine, stream: str) -> bool:
    """``index_backlog`` of ``stream`` for ``CLAIM_SECONDS`` at most (a tick's claim, before its pages); True
    if its backlog is now empty. A failure is logged, not raised: what is left in the backlog waits (the
    search reads it)."""
    started = time.monotonic()
    try:
        index_backlog(db, [stream], seconds=CLAIM_SECONDS)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("object index: the backlog of %s waits for the next tick (%s)", stream, type(exc).__name__)
        return False
    return time.monotonic() - started < CLAIM_SECONDS  # it stopped for want of rows, not of time


def index_one(conn: Connection, streams: Collection[str] | None = None) -> bool:
    """Index the oldest backlog row (of ``streams``) in ``conn``'s transaction; False if there is none."""
    query = sa.select(object_backlog.c.id, object_backlog.c.stream).order_by(object_backlog.c.id).limit(1)
    if streams is not None:
        if not streams:
            return False
        query = query.where(object_backlog.c.stream.in_(sorted(streams)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None:
        return False
    ledger.lock_stream(conn, row.stream)  # as pruning does: no entry for an event it deletes meanwhile
    found = conn.execute(_backlog_events(conn.dialect.name, ("event_id", "occurred_at", "payload")),
                         {"id": row.id})
    entries = sorted((object_id, r.occurred_at, r.event_id)
                     for r in found for object_id in object_ids_of(r.event_id, r.payload))
    insert_ignore(conn, event_objects, [{"object_id": o, "occurred_at": t, "stream": row.stream, "event_id": e}
                                        for o, t, e in entries], ["object_id", "occurred_at", "stream", "event_id"])
    conn.execute(sa.delete(object_backlog).where(object_backlog.c.id == row.id))
    return True


@functools.cache
def _backlog_events(dialect: str, columns: tuple[str, ...], where: str = "b.id = :id") -> Any:
    """SELECT ``columns`` of the ledger's events listed in the backlog rows ``where``, by the ledger's primary
    key. SQLite gets CROSS JOINs, which keep this order: it chose to scan the stream's ledger per id instead."""
    if dialect == "postgresql":
        ids = ("CROSS JOIN LATERAL jsonb_array_elements_text(CAST(b.entries AS jsonb)) AS v(value) "
               f"JOIN {events.name} AS e")
    else:
        ids = f"CROSS JOIN json_each(b.entries) AS v CROSS JOIN {events.name} AS e"
    return sa.text(
        f"SELECT {', '.join(f'e.{c}' for c in columns)} FROM {object_backlog.name} AS b {ids} "
        f"ON e.stream = b.stream AND e.event_id = v.value WHERE {where}"
    ).columns(*(events.c[c] for c in columns))


def unindexed(conn: Connection, needle: str, limit: int) -> list[Any]:
    """Ledger rows (``SHOWN``) of the backlog's events about ``needle``, at most ``limit``, oldest first.

    The database keeps the events whose payload or id holds ``needle`` as text (``LIKE``); the rule decides on
    those. A needle JSON would write otherwise (a quote, a backslash, a control or non-ASCII character) is
    matched by the rule alone, on every backlog event."""
    dialect = conn.dialect.name
    plain = needle.isascii() and needle.isprintable() and '"' not in needle and "\\" not in needle
    if plain:
        pattern = "%" + needle.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
        payload = "CAST(e.payload AS TEXT)" if dialect == "postgresql" else "e.payload"
        where = f"({payload} LIKE :pattern ESCAPE '!' OR e.event_id LIKE :pattern ESCAPE '!')"
        rows = conn.execute(_backlog_events(dialect, SHOWN, where), {"pattern": pattern})
    else:
        rows = conn.execute(_backlog_events(dialect, SHOWN, "true"))
    found = [r for r in rows if needle in object_ids_of(r.event_id, r.payload)]
    return sorted(found, key=lambda r: (r.occurred_at, r.stream, r.event_id))[:limit]


def forget(conn: Connection, stream: str, event_ids: Sequence[str]) -> None:
    """Delete the index entries of these events of ``stream`` (before they leave the ledger: their ids are
    read from their payloads, by the rule that indexed them)."""
    if not event_ids:
        return
    dialect = conn.dialect.name
    found = conn.execute(sa.select(events.c.event_id, events.c.occurred_at, events.c.payload).where(
        events.c.stream == stream, one_of(events.c.event_id, "ids", dialect)),
        {"ids": list_param(event_ids, dialect)})
    keys = [{"o": object_id, "t": row.occurred_at, "s": stream, "e": row.event_id}
            for row in found for object_id in object_ids_of(row.event_id, row.payload)]
    if keys:
        execute_many(conn, _FORGET, keys)


_FORGET = sa.delete(event_objects).where(
    event_objects.c.object_id == sa.bindparam("o"), event_objects.c.occurred_at == sa.bindparam("t"),
    event_objects.c.stream == sa.bindparam("s"), event_objects.c.event_id == sa.bindparam("e"))


def backlog_size(conn: Connection) -> int:
    """Backlog rows waiting (pages recorded but not indexed yet)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(object_backlog)).scalar_one())
