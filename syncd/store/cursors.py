"""``syncd_sources`` and ``syncd_ticks``: cursors, their leases (fencing tokens), pauses, and tick history.

Every function takes a ``Connection`` inside a transaction the caller (``SqlStore``) owns.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.contracts import CursorSpec, SourceRow, TickRecord
from syncd.store.bulk import insert_ignore
from syncd.store.tables import sources, ticks

_SOURCE_COLUMNS = [sources.c[f] for f in SourceRow.__dataclass_fields__]


def ensure_source(conn: Connection, spec: CursorSpec, now: datetime) -> None:
    window = spec.window
    insert_ignore(conn, sources, [{
        "key": spec.key, "source": spec.source, "kind": "backfill" if window else "live", "state": "active",
        "cursor": None, "cursor_version": 1, "window_start": window.start if window else None,
        "window_end": window.end if window else None, "window_workflow": spec.workflow,
        "lease_token": 0, "events_seen": 0, "created_at": now, "updated_at": now,
    }], ["key"])


def get_source(conn: Connection, key: str) -> SourceRow | None:
    row = conn.execute(sa.select(*_SOURCE_COLUMNS).where(sources.c.key == key)).mappings().first()
    return SourceRow(**row) if row else None


def all_sources(conn: Connection) -> list[SourceRow]:
    rows = conn.execute(sa.select(*_SOURCE_COLUMNS).order_by(sources.c.kind.desc(), sources.c.key)).mappings()
    return [SourceRow(**row) for row in rows]


def acquire_lease(conn: Connection, key: str, *, owner: str, now: datetime, seconds: float, token: int,
                  holder_gone: bool = False) -> int | None:
    """Take the source's lease if its token is still ``token`` (as read) and the lease is free, expired, or
    held by a holder known to be gone (``holder_gone``: its owner lock is free). Returns the new fencing
    token (``token + 1``), or None.

    The token increases on every acquisition, so a commit fenced on an older token always fails. A live
    lease is never re-taken, not even by its own owner: replicas given the same ``SYNCD_REPLICA_ID`` would
    otherwise steal it from each other on every tick. (One process never ticks a source twice at once, and
    releases after each tick; a lease it could not release, e.g. during a database outage, just expires.)
    On PostgreSQL the UPDATE waits for a page commit holding the row, then re-checks expiry against the
    renewed lease, so a takeover can never slip between another replica's fence check and its COMMIT.
    """
    taking = sources.c.lease_token == token
    if not holder_gone:
        taking = sa.and_(taking, sa.or_(sources.c.lease_owner.is_(None), sources.c.lease_expires_at.is_(None),
                                        sources.c.lease_expires_at < now))
    result = conn.execute(
        sa.update(sources)
        .where(sources.c.key == key, taking)
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


def reopen_window(conn: Connection, key: str, now: datetime) -> None:
    """Start a finished backfill window again from its beginning (its runs that exist are not repeated)."""
    set_source_fields(conn, key, now=now, state="active", cursor=None, progress=0.0)


def set_source_fields(conn: Connection, key: str, *, now: datetime, **values: Any) -> None:
    conn.execute(sa.update(sources).where(sources.c.key == key).values(updated_at=now, **values))


def record_tick(conn: Connection, tick: TickRecord) -> None:
    conn.execute(sa.insert(ticks).values(
        source=tick.source, replica=tick.replica, started_at=tick.started_at, finished_at=tick.finished_at,
        ok=tick.ok, pages=tick.pages, events=tick.events, new_events=tick.new_events, runs_ok=tick.runs_ok,
        runs_failed=tick.runs_failed, skipped=tick.skipped, lag_seconds=tick.lag_seconds, error=tick.error))
