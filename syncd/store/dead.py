"""Dead runs (``status = 'dead'``) for ``syncd replay``: which ones a selection picks, and locking a batch."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.contracts import Event, RunKey, RunStatus
from syncd.store.ledger import event_from_ledger
from syncd.store.tables import events, runs

_LEDGER = sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id)


def dead_run_keys(conn: Connection, *, workflow: str | None, source: str | None,
                  event_id: str | None) -> list[RunKey]:
    """Keys of the dead runs picked (each given field narrows the choice), in event order. ``source`` is a
    stream key (``workos``, ``github:o/r``) or a provider name (``github``: all its streams)."""
    clauses: list[sa.ColumnElement[bool]] = [runs.c.status == RunStatus.DEAD.value]
    if workflow is not None:
        clauses.append(runs.c.workflow == workflow)
    if source is not None:
        clauses.append(sa.or_(runs.c.stream == source, runs.c.stream.startswith(f"{source}:", autoescape=True)))
    if event_id is not None:
        clauses.append(runs.c.event_id == event_id)
    query = (
        sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id)
        .join(events, _LEDGER, isouter=True)
        .where(*clauses)
        .order_by(events.c.occurred_at, runs.c.stream, runs.c.event_id, runs.c.workflow)
    )
    return [RunKey(r[0], r[1], r[2]) for r in conn.execute(query)]


def lock_dead(conn: Connection, batch: Sequence[RunKey]) -> dict[RunKey, tuple[int, Event | None, str | None]]:
    """The batch's runs that are still dead: attempts, event (None if gone from the ledger) and trace id,
    locked for this transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two replays never share a run)."""
    wanted = sa.tuple_(runs.c.workflow, runs.c.stream, runs.c.event_id).in_(
        [(k.workflow, k.stream, k.event_id) for k in batch])
    query = (
        sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id, runs.c.attempts, runs.c.trace_id, events.c.type,
                  events.c.action, events.c.occurred_at, events.c.payload)
        .join(events, _LEDGER, isouter=True)
        .where(wanted, runs.c.status == RunStatus.DEAD.value)
        .with_for_update(of=runs, skip_locked=True)
    )
    found: dict[RunKey, tuple[int, Event | None, str | None]] = {}
    for r in conn.execute(query).mappings():
        event = event_from_ledger(r["stream"], r) if r["payload"] is not None else None
        found[RunKey(r["workflow"], r["stream"], r["event_id"])] = (int(r["attempts"]), event, r["trace_id"])
    return found
