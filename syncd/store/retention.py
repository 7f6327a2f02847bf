"""Retention's SQL: the per-stream horizon, and pruning in short transactions (``syncd.ops.retention`` drives it).

What may go, older than the cutoff (``now - SYNCD_RETENTION_DAYS``), and nothing else:

- an event of the ledger that occurred before the cutoff and was recorded before it (syncd has held it for
  the whole retention: history a backfill just brought in stays its full retention too), and whose runs all
  have status ``succeeded`` — with those runs and their steps. An event with any other run (queued,
  running, pending, sleeping, failed, dead: still to do, or to replay) keeps its ledger row and all its runs;
- ticks that started before the cutoff; backfill windows ``done`` (and not leased) since before it;
- tombstones of objects deleted before the cutoff and at or before every stream's horizon (below).

The horizon of a stream: the time of the newest event pruned from it (it never moves back), written in the
transaction that deletes it. ``record_events`` skips any event of the stream at or before its horizon, new or
not, so an event whose history was pruned is never run again as new. Each batch takes the stream's
run-creation lock (``ledger.lock_stream``), so a page committing runs for an old event and a prune deleting it
never interleave. A tombstone goes only once every stream's horizon has passed its time, so a stale event it
was stopping is skipped by the horizon instead.

Disk space: on SQLite (created with ``auto_vacuum=INCREMENTAL``; see ``syncd.store.sqlite``) ``vacuum_step``
gives free pages back to the file system a few megabytes at a time; on PostgreSQL the deletes leave dead rows
to autovacuum, which reuses their space.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncd.contracts import Event
from syncd.store import ledger, objindex
from syncd.store.bulk import insert_ignore, list_param, one_of
from syncd.store.tables import events, horizons, runs, sources, steps, ticks, tombstones

log = logging.getLogger("syncd.retention")

#: Events looked at per prune transaction: short enough that a page commit waits milliseconds for one.
BATCH_EVENTS = 1000
#: Ticks deleted per transaction.
BATCH_TICKS = 5000
#: SQLite pages (4 KiB) given back to the file system per step of ``vacuum_step``.
VACUUM_PAGES = 2000
#: The prune's own row in ``syncd_sources``: its lease (one replica at a time) and its schedule (its pause).
PRUNE_KEY = "_prune"
#: ``syncd_sources.kind`` of a maintenance chore's row (the prune's lease): not a cursor, never listed as one.
CHORE_KIND = "maintenance"


# ---- the horizon, read in every page transaction ------------------------------------------------------


def horizon(conn: Connection, stream: str) -> datetime | None:
    """The time before which ``stream``'s history was pruned (None: nothing pruned)."""
    value = conn.execute(sa.select(horizons.c.horizon).where(horizons.c.stream == stream)).scalar()
    return value if isinstance(value, datetime) else None


def drop_expired(conn: Connection, batch: Sequence[Event]) -> tuple[Sequence[Event], frozenset[str]]:
    """``batch`` (one stream) without its events at or before the stream's horizon, and their ids; warns."""
    limit = horizon(conn, batch[0].stream)
    if limit is None or all(e.occurred_at > limit for e in batch):
        return batch, frozenset()
    expired = [e.id for e in batch if e.occurred_at <= limit]
    log.warning("%s: %d event(s) older than the retention horizon %s skipped, not run again (their history "
                "was pruned; SYNCD_RETENTION_DAYS): %s", batch[0].stream, len(expired), limit.isoformat(),
                ", ".join(i[:60] for i in expired[:5]) + (" …" if len(expired) > 5 else ""),
                extra={"source": batch[0].stream})
    return [e for e in batch if e.occurred_at > limit], frozenset(expired)


def all_horizons(conn: Connection) -> dict[str, datetime]:
    return {r.stream: r.horizon for r in conn.execute(sa.select(horizons.c.stream, horizons.c.horizon))}


def advance_horizon(conn: Connection, stream: str, newest: datetime, now: datetime) -> None:
    """Move ``stream``'s horizon to ``newest`` (the newest event about to be deleted), never back."""
    insert_ignore(conn, horizons, [{"stream": stream, "horizon": newest, "pruned_at": now}], ["stream"])
    conn.execute(sa.update(horizons).where(horizons.c.stream == stream, horizons.c.horizon < newest)
                 .values(horizon=newest, pruned_at=now))


def streams(conn: Connection) -> list[str]:
    """The streams with events in the ledger."""
    return distinct_values(conn, events.name, "stream")


def distinct_values(conn: Connection, table: str, column: str) -> list[str]:
    """The distinct values of an indexed leading ``column``, one index seek each (a loose index scan): a plain
    ``SELECT DISTINCT`` reads the whole ledger on PostgreSQL."""
    query = sa.text(
        f"WITH RECURSIVE v(x) AS (SELECT MIN({column}) FROM {table} UNION ALL "
        f"SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > v.x) FROM v WHERE v.x IS NOT NULL) "
        "SELECT x FROM v WHERE x IS NOT NULL")
    return [r[0] for r in conn.execute(query)]


# ---- pruning, one short transaction per call --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One prune transaction of a stream's ledger: events deleted, events kept (runs still open or dead), and
    where the next batch starts (None: the stream has nothing more before the cutoff)."""

    deleted: int
    kept: int
    after: tuple[datetime, str] | None


def prune_events(conn: Connection, stream: str, cutoff: datetime, after: tuple[datetime, str] | None, now: datetime,
                 limit: int = BATCH_EVENTS) -> EventBatch:
    """Delete, of the next ``limit`` events of ``stream`` that occurred before ``cutoff`` (in event order, after
    ``after``), those recorded before it whose runs all succeeded, with those runs and their steps; move the
    stream's horizon past them in the same transaction. Call it in its own transaction."""
    ledger.lock_stream(conn, stream)
    query = sa.select(events.c.event_id, events.c.occurred_at, events.c.recorded_at).where(
        events.c.stream == stream, events.c.occurred_at < cutoff)
    if after is not None:
        query = query.where(events.c.occurred_at >= after[0],
                            sa.or_(events.c.occurred_at > after[0], events.c.event_id > after[1]))
    found = conn.execute(query.order_by(events.c.occurred_at, events.c.event_id).limit(limit)).all()
    if not found:
        return EventBatch(0, 0, None)
    ids = [r.event_id for r in found if r.recorded_at < cutoff]
    last = found[-1]
    following = (last.occurred_at, last.event_id) if len(found) == limit else None
    if not ids:
        return EventBatch(0, 0, following)
    dialect = conn.dialect.name
    names = distinct_values(conn, runs.name, "workflow")  # read now: a run of a new workflow counts too
    keep: set[str] = set()
    if names:
        keyed = {"names": list_param(names, dialect), "stream": stream}
        keep = {r[0] for r in conn.execute(_open_runs(dialect), {**keyed, "ids": list_param(ids, dialect)})}
        gone = [i for i in ids if i not in keep]
        if gone:
            params = {**keyed, "ids": list_param(gone, dialect)}
            conn.execute(_delete_of(steps, dialect), params)
            conn.execute(_delete_of(runs, dialect).where(runs.c.status == "succeeded"), params)
    gone = [i for i in ids if i not in keep]
    if gone:
        leaving = set(gone)
        advance_horizon(conn, stream, max(r.occurred_at for r in found if r.event_id in leaving), now)
        objindex.forget(conn, stream, gone)  # the events' object-index entries go with them
        conn.execute(sa.delete(events).where(events.c.stream == stream,
                                             one_of(events.c.event_id, "ids", dialect)),
                     {"ids": list_param(gone, dialect)})
    return EventBatch(len(gone), len(keep), following)


def _open_runs(dialect: str) -> Any:
    """Event ids among ``ids`` with a run in any status but ``succeeded`` (a status added later counts too)."""
    return sa.select(runs.c.event_id).distinct().where(
        one_of(runs.c.workflow, "names", dialect), runs.c.stream == sa.bindparam("stream"),
        one_of(runs.c.event_id, "ids", dialect), runs.c.status != "succeeded")


def _delete_of(table: sa.Table, dialect: str) -> Any:
    """DELETE from ``runs`` or ``steps`` by the leading columns of their primary key (workflow, stream, event)."""
    return sa.delete(table).where(one_of(table.c.workflow, "names", dialect),
                                  table.c.stream == sa.bindparam("stream"), one_of(table.c.event_id, "ids", dialect))


def prune_ticks(conn: Connection, cutoff: datetime, limit: int = BATCH_TICKS) -> int:
    """Delete up to ``limit`` of the oldest ticks started before ``cutoff``; how many."""
    oldest = sa.select(ticks.c.id).where(ticks.c.started_at < cutoff).order_by(ticks.c.id).limit(limit)
    return conn.execute(sa.delete(ticks).where(ticks.c.id.in_(oldest.scalar_subquery()))).rowcount or 0


def prune_windows(conn: Connection, cutoff: datetime, now: datetime) -> int:
    """Delete the backfill windows finished before ``cutoff`` (not ones leased right now); how many."""
    return conn.execute(sa.delete(sources).where(
        sources.c.kind == "backfill", sources.c.state == "done", sources.c.updated_at < cutoff,
        sa.or_(sources.c.lease_owner.is_(None), sources.c.lease_expires_at < now))).rowcount or 0


def prune_tombstones(conn: Connection, cutoff: datetime) -> int:
    """Delete the tombstones of objects deleted before ``cutoff`` and at or before every stream's horizon (a
    tombstone does not say its stream); none while a stream with events has no horizon. How many."""
    limits = all_horizons(conn)
    if not limits or any(s not in limits for s in streams(conn)):
        return 0
    bound = min(limits.values())
    return conn.execute(sa.delete(tombstones).where(tombstones.c.version <= bound,
                                                    tombstones.c.version < cutoff)).rowcount or 0


# ---- disk space ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Space:
    """Bytes the database holds for syncd (SQLite: the whole file), of which ``free`` are unused pages
    (SQLite's free list; 0 on PostgreSQL). ``returns_space``: SQLite's free pages can go back to the file
    system (``auto_vacuum=INCREMENTAL``); always True on PostgreSQL (autovacuum)."""

    used: int
    free: int
    returns_space: bool


def space(conn: Connection) -> Space:
    if conn.dialect.name == "sqlite":
        def pragma(name: str) -> int:
            return int(conn.exec_driver_sql(f"PRAGMA {name}").scalar() or 0)

        size = pragma("page_size")
        return Space(pragma("page_count") * size, pragma("freelist_count") * size, pragma("auto_vacuum") == 2)
    used = conn.execute(sa.text(
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND c.relname LIKE 'syncd\\_%' AND n.nspname = current_schema()")).scalar()
    return Space(int(used or 0), 0, True)


def vacuum_step(db: Engine, pages: int = VACUUM_PAGES) -> int:
    """SQLite: give up to ``pages`` free pages back to the file system, in one short write; the free pages
    left (0 when the file is not in incremental mode, or on PostgreSQL: nothing to do here)."""
    if db.dialect.name != "sqlite":
        return 0
    with db.connect() as conn:
        raw: Any = conn.connection.driver_connection
        if raw.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            return 0
        # executescript steps the pragma to its end; execute() would stop after its first page.
        raw.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
        left = int(raw.execute("PRAGMA freelist_count").fetchone()[0])
        if left == 0:  # copy the log back now, so the file is truncated without waiting for the next commit
            raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return left


def full_vacuum(db: Engine) -> None:
    """SQLite: rewrite the whole file once in incremental mode (an existing database created before it). Blocks
    every writer while it runs and needs free disk space as large as the file; PostgreSQL: nothing."""
    if db.dialect.name != "sqlite":
        return
    with db.connect() as conn:
        raw: Any = conn.connection.driver_connection
        raw.executescript("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


# ---- the prune's own row (its lease and schedule) -------------------------------------------------------


def ensure_chore(conn: Connection, key: str, now: datetime) -> None:
    """The row whose lease makes one replica at a time run chore ``key``, marked as no cursor."""
    insert_ignore(conn, sources, [{
        "key": key, "source": key, "kind": CHORE_KIND, "state": "active", "cursor": None, "cursor_version": 1,
        "lease_token": 0, "events_seen": 0, "created_at": now, "updated_at": now}], ["key"])
    # a claim made before (it creates the row as a live cursor) must not leave it one
    conn.execute(sa.update(sources).where(sources.c.key == key, sources.c.kind != CHORE_KIND).values(kind=CHORE_KIND))


def schedule_chore(conn: Connection, key: str, now: datetime, *, next_at: datetime | None,
                   succeeded: bool = False, error: str | None = None, meta: dict[str, Any] | None = None) -> None:
    """When chore ``key`` may run next (its pause), and the outcome of the run that just ended."""
    values: dict[str, Any] = {"paused_until": next_at, "pause_reason": "ran within its period" if next_at else None,
                              "updated_at": now}
    if succeeded:
        values.update(last_success_at=now, last_error=None, last_error_at=None)
    if error is not None:
        values.update(last_error=error, last_error_at=now)
    if meta is not None:
        values["meta"] = meta
    conn.execute(sa.update(sources).where(sources.c.key == key).values(**values))


@dataclass(frozen=True, slots=True)
class ChoreState:
    last_success_at: datetime | None
    next_at: datetime | None
    meta: dict[str, Any] | None


def chore_state(conn: Connection, key: str) -> ChoreState | None:
    row = conn.execute(sa.select(sources.c.last_success_at, sources.c.paused_until, sources.c.meta)
                       .where(sources.c.key == key)).first()
    return None if row is None else ChoreState(row.last_success_at, row.paused_until, row.meta)


def ledger_by_stream(conn: Connection) -> list[tuple[str, int, datetime | None]]:
    """(stream, events in the ledger, the oldest's time), by stream."""
    query = (sa.select(events.c.stream, sa.func.count(), sa.func.min(events.c.occurred_at))
             .group_by(events.c.stream).order_by(events.c.stream))
    return [(r[0], int(r[1]), r[2]) for r in conn.execute(query)]
