"""``syncd_sources`` and ``syncd_ticks``: cursors, their leases (fencing tokens), pauses, and tick history.

Every function takes a ``Connection`` inside a transaction the caller (``SqlStore``) owns.

The statements of a tick (claim, cursor move, release, tick record) run a few times per source per
interval, hundreds of sources at a time: each is built once per shape with bind parameters
(``functools.cache``), since building and cache-keying a statement cost SQLAlchemy more than running it
(bench/README.md, "G: many sources").
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from syncd.contracts import CursorSpec, SourceRow, TickRecord
from syncd.store.tables import sources, ticks

_SOURCE_COLUMNS = [sources.c[f] for f in SourceRow.__dataclass_fields__]
_TICK_FIELDS = ("source", "replica", "started_at", "finished_at", "ok", "pages", "events", "new_events",
                "runs_ok", "runs_failed", "skipped", "lag_seconds", "error")
_KEY: Any = sa.bindparam("k")


def ensure_source(conn: Connection, spec: CursorSpec, now: datetime) -> None:
    window = spec.window
    conn.execute(_ensure_statement(conn.dialect.name == "postgresql"), {
        "key": spec.key, "source": spec.source, "kind": "backfill" if window else "live", "state": "active",
        "cursor": None, "cursor_version": 1, "window_start": window.start if window else None,
        "window_end": window.end if window else None, "window_workflow": spec.workflow,
        "lease_token": 0, "events_seen": 0, "created_at": now, "updated_at": now,
    })


@functools.cache
def _ensure_statement(postgres: bool) -> Any:
    insert = postgresql.insert if postgres else sqlite.insert
    return insert(sources).on_conflict_do_nothing(index_elements=[sources.c.key])


def get_source(conn: Connection, key: str) -> SourceRow | None:
    row = conn.execute(_get_statement(), {"k": key}).first()
    return SourceRow(*row) if row else None


@functools.cache
def _get_statement() -> Any:
    return sa.select(*_SOURCE_COLUMNS).where(sources.c.key == _KEY)


def all_sources(conn: Connection) -> list[SourceRow]:
    rows = conn.execute(sa.select(*_SOURCE_COLUMNS).order_by(sources.c.kind.desc(), sources.c.key)).mappings()
    return [SourceRow(**row) for row in rows]


def acquire_lease(conn: Connection, key: str, *, owner: str, now: datetime, seconds: float, token: int,
                  holder_gone: bool = False) -> tuple[int, str | None] | None:
    """Take the source's lease if its token is still ``token`` (as read) and the lease is free, expired, or
    held by a holder known to be gone (``holder_gone``: its owner lock is free). Returns the new fencing
    token (``token + 1``) and the cursor as of the take (a page may have committed since it was read), or
    None.

    The token increases on every acquisition, so a commit fenced on an older token always fails. A live
    lease is never re-taken, not even by its own owner: replicas given the same ``SYNCD_REPLICA_ID`` would
    otherwise steal it from each other on every tick. (One process never ticks a source twice at once, and
    releases after each tick; a lease it could not release, e.g. during a database outage, just expires.)
    On PostgreSQL the UPDATE waits for a page commit holding the row, then re-checks expiry against the
    renewed lease, so a takeover can never slip between another replica's fence check and its COMMIT.
    """
    result = conn.execute(_acquire_statement(holder_gone), {
        "k": key, "token": token, "now": now, "owner": owner, "until": now + timedelta(seconds=seconds)}).first()
    return (int(result[0]), result[1]) if result else None


@functools.cache
def _acquire_statement(holder_gone: bool) -> Any:
    now = sa.bindparam("now", type_=sources.c.lease_expires_at.type)
    taking = sources.c.lease_token == sa.bindparam("token")
    if not holder_gone:
        taking = sa.and_(taking, sa.or_(sources.c.lease_owner.is_(None), sources.c.lease_expires_at.is_(None),
                                        sources.c.lease_expires_at < now))
    return (sa.update(sources).where(sources.c.key == _KEY, taking)
            .values(lease_owner=sa.bindparam("owner"), lease_token=sources.c.lease_token + 1,
                    lease_expires_at=sa.bindparam("until"), updated_at=now)
            .returning(sources.c.lease_token, sources.c.cursor))


def take_free_lease(conn: Connection, key: str, *, owner: str, now: datetime,
                    seconds: float) -> tuple[int, str | None] | None:
    """Take a live cursor's lease in one UPDATE, without reading its row first, where a claim would take it
    with no Skip: the row exists, is live and active, not paused at ``now``, and its lease is free or
    expired. Returns the new token (one above the row's) and the cursor as of the take; None when the row
    is anything else (new, a window, done or failed, paused, held even by a dead holder): then the read
    path (``get_source`` + ``acquire_lease``) decides, with its exact Skip.

    The caller takes the owner lock of the returned token before its transaction commits (``owners``). On
    PostgreSQL the UPDATE waits for a page commit holding the row, then re-checks the lease as renewed,
    as ``acquire_lease`` does."""
    result = conn.execute(_take_free_statement(), {
        "k": key, "now": now, "owner": owner, "until": now + timedelta(seconds=seconds)}).first()
    return (int(result[0]), result[1]) if result else None


@functools.cache
def _take_free_statement() -> Any:
    now = sa.bindparam("now", type_=sources.c.lease_expires_at.type)
    free = sa.or_(sources.c.lease_owner.is_(None), sources.c.lease_expires_at.is_(None),
                  sources.c.lease_expires_at < now)  # as SqlStore._claim's "not held"
    unpaused = sa.or_(sources.c.paused_until.is_(None), sources.c.paused_until <= now)  # as SourceRow.skip
    return (sa.update(sources)
            .where(sources.c.key == _KEY, sources.c.kind == "live", sources.c.state == "active", unpaused, free)
            .values(lease_owner=sa.bindparam("owner"), lease_token=sources.c.lease_token + 1,
                    lease_expires_at=sa.bindparam("until"), updated_at=now)
            .returning(sources.c.lease_token, sources.c.cursor))


def acquire_leases(conn: Connection, keys: Sequence[str], *, owner: str, now: datetime,
                   seconds: float) -> list[tuple[str, int, str | None]]:
    """``take_free_lease`` for many keys in one statement: (key, new token, cursor) of each taken, in no
    particular order; the rest (new, windows, done, paused, held, and on PostgreSQL rows another
    transaction has locked, e.g. a page commit in flight) is left for a claim of its own to decide.

    On PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED`` in key order: the statement never waits
    for another replica's row (no deadlock with one claiming the same keys), and a row it skipped is
    claimed alone, which waits for that commit as ``acquire_lease`` does. The caller takes the owner lock
    of every returned token before its transaction commits."""
    params = {"keys": list(keys), "now": now, "owner": owner, "until": now + timedelta(seconds=seconds)}
    rows = conn.execute(_take_many_statement(conn.dialect.name == "postgresql"), params).all()
    return [(row[0], int(row[1]), row[2]) for row in rows]


@functools.cache
def _take_many_statement(postgres: bool) -> Any:
    now = sa.bindparam("now", type_=sources.c.lease_expires_at.type)
    free = sa.or_(sources.c.lease_owner.is_(None), sources.c.lease_expires_at.is_(None),
                  sources.c.lease_expires_at < now)  # as SqlStore._claim's "not held"
    unpaused = sa.or_(sources.c.paused_until.is_(None), sources.c.paused_until <= now)  # as SourceRow.skip
    taking = [sources.c.key.in_(sa.bindparam("keys", expanding=True)), sources.c.kind == "live",
              sources.c.state == "active", unpaused, free]
    if postgres:
        picked = (sa.select(sources.c.key).where(*taking).order_by(sources.c.key)
                  .with_for_update(skip_locked=True))
        taking = [sources.c.key.in_(picked.scalar_subquery())]
    return (sa.update(sources).where(*taking)
            .values(lease_owner=sa.bindparam("owner"), lease_token=sources.c.lease_token + 1,
                    lease_expires_at=sa.bindparam("until"), updated_at=now)
            .returning(sources.c.key, sources.c.lease_token, sources.c.cursor))


def renew_lease(conn: Connection, key: str, *, token: int, owner: str, now: datetime, seconds: float) -> bool:
    """Push the lease's expiry to ``now + seconds`` if it is still ours (same token). False: taken over."""
    result = conn.execute(_renew_statement(), {"k": key, "token": token, "owner": owner,
                                               "until": now + timedelta(seconds=seconds)})
    return result.rowcount == 1


@functools.cache
def _renew_statement() -> Any:
    return (sa.update(sources).where(sources.c.key == _KEY, sources.c.lease_token == sa.bindparam("token"),
                                     sources.c.lease_owner == sa.bindparam("owner"))
            .values(lease_expires_at=sa.bindparam("until")))


def release_lease(conn: Connection, key: str, *, token: int, now: datetime,
                  advance: tuple[str, str | None, dict[str, Any] | None] | None = None,
                  succeeded_at: datetime | None = None) -> bool:
    """Free the lease if its token is still ``token``; False if not (then nothing is written).

    In the same UPDATE, fenced the same way: ``advance`` = (owner, cursor, meta), an empty page's cursor move
    as ``commit_cursor`` writes it (also fenced on ``owner``); ``succeeded_at``, a tick that went well (last
    success, error and pause cleared: the caller writes them unfenced if this returns False)."""
    params, shape = _release_params(key, token, now, advance, succeeded_at)
    return conn.execute(_release_statement(*shape), params).rowcount == 1


def _release_params(key: str, token: int, now: datetime,
                    advance: tuple[str, str | None, dict[str, Any] | None] | None,
                    succeeded_at: datetime | None) -> tuple[dict[str, Any], tuple[bool, bool, bool, bool]]:
    """A release's bind parameters, and its statement's shape (``_release_statement``'s arguments)."""
    params: dict[str, Any] = {"k": key, "token": token, "now": now}
    owner = cursor = meta = None
    if advance is not None:
        owner, cursor, meta = advance
        params["owner"] = owner
    if cursor is not None:
        params["cursor"] = cursor
    if meta:
        params["meta"] = meta
    if succeeded_at is not None:
        params["success"] = succeeded_at
    return params, (owner is not None, cursor is not None, bool(meta), succeeded_at is not None)


@functools.cache
def _release_statement(owner: bool, cursor: bool, meta: bool, success: bool) -> Any:
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": sa.bindparam("now")}
    for name, present in (("cursor", cursor), ("meta", meta)):
        if present:
            values[name] = sa.bindparam(name, type_=sources.c[name].type)
    if success:
        values.update(last_success_at=sa.bindparam("success", type_=sources.c.last_success_at.type),
                      last_error=None, paused_until=None, pause_reason=None)
    fence = [sources.c.key == _KEY, sources.c.lease_token == sa.bindparam("token")]
    if owner:
        fence.append(sources.c.lease_owner == sa.bindparam("owner"))
    return sa.update(sources).where(*fence).values(**values)


def release_leases(conn: Connection, rows: Sequence[Release]) -> int:
    """``release_lease`` for many leases: one executemany per statement shape (idle ticks all share one),
    rows in key order (one lock order on PostgreSQL). Returns how many rows were released: ``len(rows)``
    exactly when every lease was still ours (keys are unique); the caller rolls back otherwise."""
    shapes: dict[tuple[bool, bool, bool, bool], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r.key):
        params, shape = _release_params(row.key, row.token, row.now, row.advance, row.succeeded_at)
        shapes.setdefault(shape, []).append(params)
    return sum(conn.execute(_release_statement(*shape), params).rowcount for shape, params in shapes.items())


@dataclass(frozen=True)
class Release:
    """One lease's release for ``release_leases`` (the arguments of ``release_lease``)."""

    key: str
    token: int
    now: datetime
    advance: tuple[str, str | None, dict[str, Any] | None] | None = None
    succeeded_at: datetime | None = None


def commit_cursor(conn: Connection, key: str, *, token: int, owner: str, cursor: str | None,
                  meta: dict[str, Any] | None, new_events: int, now: datetime, lease_seconds: float,
                  progress: float | None = None) -> bool:
    """Move the cursor (and renew the lease) only if we still hold the lease. False: fenced out.

    Call it as the last statement of the page's transaction and roll back on False: the check is on the
    token (not on expiry, so an expired lease nobody took over still commits), and the row lock this
    UPDATE takes holds off any takeover until COMMIT, so the page's ledger, runs and workflow writes
    commit only together with a cursor move under a lease that was still ours.
    """
    params: dict[str, Any] = {"k": key, "token": token, "owner": owner, "new": new_events,
                              "until": now + timedelta(seconds=lease_seconds), "now": now}
    if cursor is not None:
        params["cursor"] = cursor
    if meta:
        params["meta"] = meta
    if progress is not None:
        params["progress"] = progress
    result = conn.execute(_commit_statement(cursor is not None, bool(meta), progress is not None), params)
    return result.rowcount == 1


@functools.cache
def _commit_statement(cursor: bool, meta: bool, progress: bool) -> Any:
    values: dict[str, Any] = {"events_seen": sources.c.events_seen + sa.bindparam("new", type_=sa.BigInteger),
                              "lease_expires_at": sa.bindparam("until"), "updated_at": sa.bindparam("now")}
    for name, present in (("cursor", cursor), ("meta", meta), ("progress", progress)):
        if present:
            values[name] = sa.bindparam(name, type_=sources.c[name].type)
    return (sa.update(sources).where(sources.c.key == _KEY, sources.c.lease_token == sa.bindparam("token"),
                                     sources.c.lease_owner == sa.bindparam("owner"))
            .values(**values))


def reopen_window(conn: Connection, key: str, now: datetime) -> None:
    """Start a finished backfill window again from its beginning (its runs that exist are not repeated)."""
    set_source_fields(conn, key, now=now, state="active", cursor=None, progress=0.0)


def set_source_fields(conn: Connection, key: str, *, now: datetime, **values: Any) -> None:
    conn.execute(_fields_statement(tuple(sorted(values))), {"k": key, "now": now, **values})


@functools.cache
def _fields_statement(names: Iterable[str]) -> Any:
    """``names`` is a sorted tuple (one statement per set of columns written)."""
    values = {name: sa.bindparam(name, type_=sources.c[name].type) for name in names}
    return sa.update(sources).where(sources.c.key == _KEY).values(updated_at=sa.bindparam("now"), **values)


def record_tick(conn: Connection, tick: TickRecord) -> None:
    conn.execute(_tick_statement(), {name: getattr(tick, name) for name in _TICK_FIELDS})


def record_ticks(conn: Connection, records: Sequence[TickRecord]) -> None:
    """``record_tick`` for many ticks, in one executemany."""
    if records:
        conn.execute(_tick_statement(), [{name: getattr(tick, name) for name in _TICK_FIELDS} for tick in records])


@functools.cache
def _tick_statement() -> Any:
    return sa.insert(ticks).values({name: sa.bindparam(name, type_=ticks.c[name].type) for name in _TICK_FIELDS})
