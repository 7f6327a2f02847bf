"""The ledger's object index: which events are about an object id (``syncd_event_objects``), and how it is kept.

The trade-off: every id an event names is indexed (``syncd.store.objects``: two or three per event), which as
B-tree inserts in the page transaction would slow a catch-up. So a page transaction only queues its events'
(event id, object id) pairs as one ``syncd_object_backlog`` row (``ledger.queue_objects``: a list built in
Python and one insert per page), and the index is filled later, off the page's path:

- ``index_backlog`` moves backlog rows into ``syncd_event_objects``, one row per transaction, each by one
  ``INSERT … SELECT`` over the row's JSON (no entry goes through Python) joined to the ledger for the events'
  times. A tick runs it for its stream when it has claimed the cursor, before its first page, i.e. when the
  source has no page in flight (``SqlStore.claim``), for at most ``CLAIM_SECONDS``; what is left waits for the
  next tick. So a catch-up's events are indexed by the tick after it (the next ``syncd once``, or
  ``syncd run``'s next interval), not by the catch-up itself.
- The search (``syncd.store.search``) also reads the backlog, so it is never wrong: an event recorded but not
  indexed yet is found by the pairs in its backlog row (a scan of the backlog's JSON, which a busy stream keeps
  to the pages recorded since its last tick began).

Guarantees: a backlog row commits with its page (no event without one or the other) and leaves in the
transaction that indexes it. Indexing takes the stream's transaction lock (``ledger.lock_stream``), as pruning
does, so an event pruned meanwhile leaves no entry behind (``forget`` deletes an event's entries with it; the
index join drops events already gone). An index entry of an event pruned from the ledger is never shown either
way: the search joins the ledger.
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
from syncd.store.bulk import execute_many, list_param, one_of
from syncd.store.objects import object_ids_of
from syncd.store.tables import event_objects, events, object_backlog

log = logging.getLogger(__name__)

#: Seconds a tick's claim spends indexing its stream's backlog, at most (a catch-up's 100,000 events take
#: about one; bench/README.md); the rest waits for the next tick, the search reads it meanwhile.
CLAIM_SECONDS = 2.0


def index_backlog(db: Engine, streams: Collection[str] | None = None, *, seconds: float | None = None) -> int:
    """Move backlog rows (of ``streams``, or all) into the object index, oldest first, one transaction each,
    until none is left or ``seconds`` have passed; returns how many were moved. Safe with concurrent callers
    (PostgreSQL: each row is taken with ``SKIP LOCKED``; an entry indexed twice is one entry)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    moved = 0
    while deadline is None or time.monotonic() < deadline:
        with db.begin() as conn:
            if not index_one(conn, streams):
                return moved
        moved += 1
    return moved


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
    conn.execute(_index_statement(conn.dialect.name), {"id": row.id})
    conn.execute(sa.delete(object_backlog).where(object_backlog.c.id == row.id))
    return True


@functools.cache
def _index_statement(dialect: str) -> Any:
    """INSERT the index entries of backlog row ``:id``: its events' object ids, with the event's time from the
    ledger (an event gone since gives none), in key order (fewer B-tree pages touched)."""
    return sa.text(
        f"INSERT {'' if dialect == 'postgresql' else 'OR IGNORE '}INTO {event_objects.name} "
        f"(object_id, occurred_at, stream, event_id) "
        f"SELECT o.value, e.occurred_at, e.stream, e.event_id {_entries(dialect)} "
        f"AND b.id = :id ORDER BY 1, 2 "
        + ("ON CONFLICT DO NOTHING" if dialect == "postgresql" else ""))


def _entries(dialect: str, needle: bool = False) -> str:
    """FROM the backlog (``b``), each of its events (``v``: ``[event id, object id, …]``), that event's object
    ids (``o``; only ``:needle`` if ``needle``), and the event in the ledger (``e``, by its primary key). SQLite
    gets CROSS JOINs, which keep this order: it chose to scan the stream's ledger for each entry instead."""
    if dialect == "postgresql":
        return (f"FROM {object_backlog.name} AS b "
                "CROSS JOIN LATERAL jsonb_array_elements(CAST(b.entries AS jsonb)) AS v(value) "
                "CROSS JOIN LATERAL jsonb_array_elements_text(v.value) WITH ORDINALITY AS o(value, n) "
                f"JOIN {events.name} AS e ON e.stream = b.stream AND e.event_id = v.value ->> 0 "
                "WHERE o.n > 1" + (" AND o.value = :needle" if needle else ""))
    return (f"FROM {object_backlog.name} AS b CROSS JOIN json_each(b.entries) AS v "
            "CROSS JOIN json_each(v.value) AS o "
            f"CROSS JOIN {events.name} AS e ON e.stream = b.stream AND e.event_id = json_extract(v.value, '$[0]') "
            "WHERE o.key > 0" + (" AND o.value = :needle" if needle else ""))


def unindexed(conn: Connection, needle: str, limit: int) -> list[Any]:
    """Ledger rows (stream, event_id, type, occurred_at, payload) of events about ``needle`` still in the
    backlog, at most ``limit``, oldest first. Scans the backlog (its size: what was recorded since the last
    index run)."""
    names = ("stream", "event_id", "type", "occurred_at", "payload")
    statement = sa.text(
        f"SELECT {', '.join(f'e.{c}' for c in names)} {_entries(conn.dialect.name, needle=True)} "
        "ORDER BY e.occurred_at, e.stream, e.event_id LIMIT :limit"
    ).columns(*(events.c[c] for c in names))
    return list(conn.execute(statement, {"needle": needle, "limit": limit}))


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


def index_before_pages(db: Engine, stream: str) -> None:
    """``index_backlog`` of ``stream`` for ``CLAIM_SECONDS`` at most (a tick's claim, before its pages). A
    failure is logged, not raised: what is left in the backlog waits (the search reads it)."""
    try:
        index_backlog(db, [stream], seconds=CLAIM_SECONDS)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("object index: the backlog of %s waits for the next tick (%s)", stream, type(exc).__name__)
