"""syncd's state in the database: cursors and leases, the ledger, runs and ticks.

Every function takes a SQLAlchemy ``Connection`` inside a transaction the caller owns, so the engine can
make the ledger, the workflows' writes and the cursor one atomic commit.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from syncd import jsoncodec
from syncd.store.db import insert_ignore, list_param, one_of
from syncd.store.tables import events, runs, sources, ticks

__all__ = ["SourceRow", "events", "runs", "sources", "ticks"]


@dataclass(frozen=True)
class SourceRow:
    key: str
    source: str
    kind: str
    state: str
    cursor: str | None
    meta: dict[str, Any] | None
    window_start: datetime | None
    window_end: datetime | None
    window_workflow: str | None
    progress: float | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_token: int
    paused_until: datetime | None
    pause_reason: str | None
    events_seen: int
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


def ensure_source(conn: Connection, key: str, *, source: str, now: datetime, kind: str = "live",
                  window_start: datetime | None = None, window_end: datetime | None = None,
                  window_workflow: str | None = None) -> None:
    insert_ignore(conn, sources, [{
        "key": key, "source": source, "kind": kind, "state": "active", "cursor": None, "cursor_version": 1,
        "window_start": window_start, "window_end": window_end, "window_workflow": window_workflow,
        "lease_token": 0, "events_seen": 0, "created_at": now, "updated_at": now,
    }], ["key"])


def get_source(conn: Connection, key: str) -> SourceRow | None:
    row = conn.execute(sa.select(*[sources.c[f] for f in SourceRow.__dataclass_fields__])
                       .where(sources.c.key == key)).mappings().first()
    return SourceRow(**row) if row else None


def all_sources(conn: Connection) -> list[SourceRow]:
    rows = conn.execute(sa.select(*[sources.c[f] for f in SourceRow.__dataclass_fields__])
                        .order_by(sources.c.kind.desc(), sources.c.key)).mappings()
    return [SourceRow(**row) for row in rows]


def acquire_lease(conn: Connection, key: str, *, owner: str, now: datetime, seconds: float) -> int | None:
    """Take the source's lease if it is free or expired. Returns the new fencing token, or None.

    The token increases on every acquisition, so a commit fenced on an older token always fails. A live
    lease is never re-taken, not even by its own owner: replicas given the same ``SYNCD_REPLICA_ID`` would
    otherwise steal it from each other on every tick. (One process never ticks a source twice at once, and
    releases after each tick; a lease it could not release, e.g. during a database outage, just expires.)
    On PostgreSQL the UPDATE waits for a page commit holding the row, then re-checks expiry against the
    renewed lease, so a takeover can never slip between another replica's fence check and its COMMIT.
    """
    result = conn.execute(
        sa.update(sources)
        .where(sources.c.key == key,
               sa.or_(sources.c.lease_owner.is_(None),
                      sources.c.lease_expires_at.is_(None), sources.c.lease_expires_at < now))
        .values(lease_owner=owner, lease_token=sources.c.lease_token + 1,
                lease_expires_at=now + timedelta(seconds=seconds), updated_at=now)
        .returning(sources.c.lease_token)
    ).first()
    return int(result[0]) if result else None


def renew_lease(conn: Connection, key: str, *, token: int, owner: str, now: datetime, seconds: float) -> bool:
    """Push the lease's expiry to ``now + seconds`` if it is still ours (same token). False: taken over."""
    result = conn.execute(
        sa.update(sources)
        .where(sources.c.key == key, sources.c.lease_token == token, sources.c.lease_owner == owner)
        .values(lease_expires_at=now + timedelta(seconds=seconds))
    )
    return result.rowcount == 1


def release_lease(conn: Connection, key: str, *, token: int, now: datetime) -> None:
    conn.execute(sa.update(sources).where(sources.c.key == key, sources.c.lease_token == token)
                 .values(lease_owner=None, lease_expires_at=None, updated_at=now))


def commit_cursor(conn: Connection, key: str, *, token: int, owner: str, cursor: str | None,
                  meta: dict[str, Any] | None, new_events: int, now: datetime, lease_seconds: float,
                  progress: float | None = None) -> bool:
    """Move the cursor (and renew the lease) only if we still hold the lease. False: fenced out.

    Call it as the last statement of the page's transaction and roll back on False: the check is on the
    token (not on expiry, so an expired lease nobody took over still commits), and the row lock this
    UPDATE takes holds off any takeover until COMMIT, so the page's ledger, runs and workflow writes
    commit only together with a cursor move under a lease that was still ours.
    """
    values: dict[str, Any] = {
        "events_seen": sources.c.events_seen + new_events, "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "updated_at": now,
    }
    if cursor is not None:
        values["cursor"] = cursor
    if meta:
        values["meta"] = meta
    if progress is not None:
        values["progress"] = progress
    result = conn.execute(
        sa.update(sources)
        .where(sources.c.key == key, sources.c.lease_token == token, sources.c.lease_owner == owner)
        .values(**values)
    )
    return result.rowcount == 1


def set_source_fields(conn: Connection, key: str, *, now: datetime, **values: Any) -> None:
    conn.execute(sa.update(sources).where(sources.c.key == key).values(updated_at=now, **values))


def record_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    insert_ignore(conn, events, rows, ["stream", "event_id"])


def record_new_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the ledger rows not recorded yet; return their event ids (PostgreSQL: INSERT … ON CONFLICT DO
    NOTHING RETURNING, sent as multi-row statements by SQLAlchemy's insertmanyvalues).

    One statement instead of a look-up and an insert, and no ``event_id IN (…)`` query: on a young table
    without statistics PostgreSQL planned that one as a scan of the stream's whole ledger, every page.
    """
    if not rows:
        return set()
    stmt = postgresql.insert(events).on_conflict_do_nothing(index_elements=["stream", "event_id"])
    return {r[0] for r in conn.execute(stmt.returning(events.c.event_id), list(rows))}


def existing_runs(conn: Connection, stream: str, workflows: Iterable[str],
                  event_ids: Iterable[str]) -> set[tuple[str, str]]:
    """The (workflow, event id) pairs among these that already have a run.

    The workflow names lead the run table's primary key (workflow, stream, event_id): without them this
    lookup scanned the whole table on every page, and a catch-up slowed down as the table grew.
    """
    names = sorted(set(workflows))
    ids = list(event_ids)
    if not names or not ids:
        return set()
    dialect = conn.dialect.name
    return {(r[0], r[1]) for r in conn.execute(_existing_runs_statement(dialect), {
        "names": list_param(names, dialect), "stream": stream, "ids": list_param(ids, dialect)})}


@functools.lru_cache(maxsize=4)
def _existing_runs_statement(dialect: str) -> Any:
    return sa.select(runs.c.workflow, runs.c.event_id).where(
        one_of(runs.c.workflow, "names", dialect), runs.c.stream == sa.bindparam("stream"),
        one_of(runs.c.event_id, "ids", dialect))


def insert_runs(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    insert_ignore(conn, runs, rows, ["workflow", "stream", "event_id"])


def insert_batch_runs(conn: Connection, common: dict[str, Any], event_ids: Sequence[str]) -> None:
    """The run rows of a batch: ``common`` (every column but ``event_id``) for each of ``event_ids``.

    The same rows ``insert_runs`` writes. On SQLite one ``INSERT … SELECT`` over the ids as a JSON array,
    so no row is built in Python (a thousand rows of twelve values each per catch-up transaction).
    """
    if not event_ids:
        return
    if conn.dialect.name != "sqlite":
        insert_runs(conn, [{**common, "event_id": event_id} for event_id in event_ids])
        return
    conn.execute(_batch_runs_statement(), {**common, "event_ids": jsoncodec.dumps(list(event_ids))})


@functools.cache
def _batch_runs_statement() -> Any:
    columns = [c.name for c in runs.c]
    selected = ", ".join("ids.value" if c == "event_id" else f":{c}" for c in columns)
    return sa.text(
        f"INSERT INTO {runs.name} ({', '.join(columns)}) SELECT {selected} FROM json_each(:event_ids) AS ids "
        "WHERE true ON CONFLICT (workflow, stream, event_id) DO NOTHING"  # WHERE: SQLite's parser needs it
    ).bindparams(*[sa.bindparam(c.name, type_=c.type) for c in runs.c if c.name != "event_id"],
                 sa.bindparam("event_ids", type_=sa.String()))


def update_run(conn: Connection, workflow: str, stream: str, event_id: str, **values: Any) -> None:
    conn.execute(sa.update(runs).where(runs.c.workflow == workflow, runs.c.stream == stream,
                                       runs.c.event_id == event_id).values(**values))


def due_runs(conn: Connection, stream: str, now: datetime, limit: int = 200) -> list[dict[str, Any]]:
    """Runs of ``stream`` due now — failed (retry), pending (durable, mid-steps) or sleeping (woken) —
    with their ledger payload."""
    query = (
        sa.select(runs.c.workflow, runs.c.event_id, runs.c.attempts, runs.c.status, events.c.type, events.c.action,
                  events.c.occurred_at, events.c.payload)
        .join(events, sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id))
        .where(runs.c.stream == stream, runs.c.status.in_(("failed", "pending", "sleeping")),
               runs.c.next_attempt_at <= now)
        .order_by(runs.c.next_attempt_at, runs.c.event_id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def still_due(conn: Connection, workflow: str, stream: str, event_id: str, status: str, attempts: int) -> bool:
    """True if the run is still in the state it was read in (nobody ran it since)."""
    row = conn.execute(sa.select(runs.c.status, runs.c.attempts).where(
        runs.c.workflow == workflow, runs.c.stream == stream, runs.c.event_id == event_id)).first()
    return row is not None and row.status == status and row.attempts == attempts


def record_tick(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(sa.insert(ticks).values(**row))


def existing_event_ids(conn: Connection, stream: str, event_ids: Sequence[str]) -> set[str]:
    if not event_ids:
        return set()
    dialect = conn.dialect.name
    return {r[0] for r in conn.execute(_existing_events_statement(dialect),
                                       {"stream": stream, "ids": list_param(event_ids, dialect)})}


@functools.lru_cache(maxsize=4)
def _existing_events_statement(dialect: str) -> Any:
    return sa.select(events.c.event_id).where(events.c.stream == sa.bindparam("stream"),
                                              one_of(events.c.event_id, "ids", dialect))


#: First key of syncd's PostgreSQL advisory locks ('sync'), so they cannot collide with other applications'.
ADVISORY_NAMESPACE = 0x73796E63


def lock_stream(conn: Connection, stream: str) -> None:
    """Serialize, until this transaction ends, the transactions that create runs for ``stream``'s events.

    Several cursors feed one stream (the live one and backfill windows), and each decides which runs are
    missing by reading the run table: without this, two of them meeting on an event already in the ledger
    could both run a workflow on it. PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do,
    ``BEGIN IMMEDIATE`` already serializes writers.
    """
    if conn.dialect.name == "postgresql":
        digest = hashlib.blake2b(stream.encode(), digest_size=4).digest()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :key)"),
                     {"space": ADVISORY_NAMESPACE, "key": int.from_bytes(digest, "big", signed=True)})
