"""``SqlReads``: the ``Reads`` contract (``syncd.contracts``) on SQLAlchemy Core.

Every read goes through a ``reading()`` connection, so on SQLite it never waits for the write lock
that a catch-up holds almost all the time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncd.contracts import DUE_STATUSES, FailedRun, QueueStats, RunStatus, SourceRow, TickRow, TickStats
from syncd.contracts.reads import (
    EventHistory,
    FailureGroup,
    QuarantineRow,
    RetentionState,
    RunRow,
    StepRow,
    StreamRetention,
)
from syncd.store import retention, search
from syncd.store.db import reading
from syncd.store.tables import events, horizons, quarantine, runs, sources, steps, ticks

#: Statuses most runs have: a page of them is read in key order without the status index.
COMMON_STATUSES = {"succeeded"}
_SOURCE_COLUMNS = [sources.c[name] for name in SourceRow.__dataclass_fields__]


class SqlReads:
    """Reads of syncd's tables in ``db``. Cheap to build; holds no connection outside :meth:`snapshot`."""

    def __init__(self, db: Engine, *, _conn: Connection | None = None) -> None:
        self.db = db
        self._conn = _conn

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[SqlReads]:
        if self._conn is not None:
            yield self
            return
        with reading(self.db) as conn:
            yield SqlReads(self.db, _conn=conn)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._conn is not None:
            yield self._conn
        else:
            with reading(self.db) as conn:
                yield conn

    def _all(self, query: Any) -> list[Any]:
        with self._connection() as conn:
            return list(conn.execute(query))

    def source(self, key: str) -> SourceRow | None:
        found = self.sources([key])
        return found[0] if found else None

    def sources(self, keys: Iterable[str] | None = None) -> list[SourceRow]:
        query = (sa.select(*_SOURCE_COLUMNS).where(sources.c.kind != retention.CHORE_KIND)  # the prune's lease
                 .order_by(sources.c.kind.desc(), sources.c.key))
        if keys is not None:
            wanted = list(keys)
            if not wanted:
                return []
            query = query.where(sources.c.key.in_(wanted))
        with self._connection() as conn:
            return [SourceRow(**row) for row in conn.execute(query).mappings()]

    def run_counts(self, statuses: Iterable[str] | None = None, *,
                   workflow: str | None = None) -> dict[tuple[str, str], int]:
        query = (sa.select(runs.c.stream, runs.c.status, sa.func.count().label("n"))
                 .group_by(runs.c.stream, runs.c.status))
        if statuses is not None:
            query = query.where(runs.c.status.in_(list(statuses)))
        if workflow is not None:
            query = query.where(runs.c.workflow == workflow)
        return {(r.stream, r.status): int(r.n) for r in self._all(query)}

    def queue(self, now: datetime) -> QueueStats:
        due = [s.value for s in DUE_STATUSES]
        with self._connection() as conn:
            depth, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(runs.c.next_attempt_at)).where(
                runs.c.status.in_(due), runs.c.next_attempt_at <= now)).one()
            later = conn.execute(sa.select(sa.func.count()).where(
                runs.c.status.in_(due), runs.c.next_attempt_at > now)).scalar_one()
            flying = conn.execute(sa.select(runs.c.workflow, sa.func.count()).where(
                runs.c.status == RunStatus.RUNNING.value).group_by(runs.c.workflow)).all()
        return QueueStats(int(depth), oldest, {w: int(n) for w, n in flying}, int(later))

    def recent_failures(self, limit: int = 20) -> list[FailedRun]:
        query = _failed_runs().order_by(runs.c.status.desc(), runs.c.finished_at.desc()).limit(limit)
        return [_failed_run(r) for r in self._all(query)]

    def failure_groups(self, limit: int = 20, *, workflow: str | None = None,
                       streams: Iterable[str] | None = None, status: str | None = None) -> list[FailureGroup]:
        where: list[sa.ColumnElement[bool]] = [runs.c.status.in_([status] if status else ["failed", "dead"])]
        if workflow is not None:
            where.append(runs.c.workflow == workflow)
        if streams is not None:
            where.append(runs.c.stream.in_(list(streams)))
        n = sa.func.count().label("n")
        query = (sa.select(runs.c.workflow, runs.c.status, runs.c.last_error, n).where(*where)
                 .group_by(runs.c.workflow, runs.c.status, runs.c.last_error)
                 .order_by(n.desc(), runs.c.workflow, runs.c.status).limit(limit))
        groups: list[FailureGroup] = []
        with self._connection() as conn:
            for g in list(conn.execute(query)):
                same_error = (runs.c.last_error.is_(None) if g.last_error is None
                              else runs.c.last_error == g.last_error)
                example = conn.execute(_failed_runs().where(*where, runs.c.workflow == g.workflow,
                                                            runs.c.status == g.status, same_error)
                                       .order_by(runs.c.finished_at.desc()).limit(1)).one()
                groups.append(FailureGroup(workflow=g.workflow, status=g.status, error=g.last_error,
                                           runs=int(g.n), example=_failed_run(example)))
        return groups

    def event_count(self) -> int:
        with self._connection() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())

    def quarantined(self, limit: int = 20, *, streams: Iterable[str] | None = None) -> tuple[int, list[QuarantineRow]]:
        q = quarantine.c
        where = [] if streams is None else [q.stream.in_(list(streams))]
        with self._connection() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(quarantine).where(*where)).scalar_one())
            rows = conn.execute(sa.select(q.stream, q.event_id, q.reason, q.raw, q.occurred_at, q.first_seen_at,
                                          q.last_seen_at, q.times_seen).where(*where)
                                .order_by(q.last_seen_at.desc(), q.stream, q.occurred_at, q.key).limit(limit)).all()
        return total, [QuarantineRow(r.stream, r.event_id, r.reason, r.raw, r.occurred_at, r.first_seen_at,
                                     r.last_seen_at, int(r.times_seen)) for r in rows]

    def event_counts_by_type(self) -> list[tuple[str, int]]:
        query = (sa.select(events.c.type, sa.func.count()).group_by(events.c.type)
                 .order_by(sa.func.count().desc()))
        return [(str(event_type), int(n)) for event_type, n in self._all(query)]

    def tick_stats(self) -> dict[str, TickStats]:
        ok_case = sa.case((ticks.c.ok, 1), else_=0)
        query = (sa.select(ticks.c.source, sa.func.count().label("n"), sa.func.sum(ok_case).label("ok"),
                           sa.func.sum(ticks.c.pages).label("pages"),
                           sa.func.sum(ticks.c.runs_ok).label("runs_ok"),
                           sa.func.sum(ticks.c.runs_failed).label("runs_failed"))
                 .group_by(ticks.c.source))
        return {r.source: TickStats(ticks=int(r.n), ok=int(r.ok or 0), pages=int(r.pages or 0),
                                    runs_ok=int(r.runs_ok or 0), runs_failed=int(r.runs_failed or 0))
                for r in self._all(query)}

    def horizons(self) -> dict[str, datetime]:
        with self._connection() as conn:
            return retention.all_horizons(conn) if _has_horizons(conn) else {}

    def retention(self) -> RetentionState:
        with self._connection() as conn:  # `syncd status` never migrates: a database from before 0008 has none
            limits = retention.all_horizons(conn) if _has_horizons(conn) else {}
            counts = {stream: (n, oldest) for stream, n, oldest in retention.ledger_by_stream(conn)}
            space = retention.space(conn)
            chore = retention.chore_state(conn, retention.PRUNE_KEY)
        streams = tuple(StreamRetention(s, limits.get(s), *counts.get(s, (0, None)))
                        for s in sorted({*limits, *counts}))
        return RetentionState(streams, space.used, space.free, space.returns_space,
                              chore.last_success_at if chore else None, chore.next_at if chore else None,
                              chore.meta if chore else None)

    def last_tick(self, key: str, *, succeeded: bool = False) -> TickRow | None:
        query = (sa.select(ticks.c.started_at, ticks.c.finished_at, ticks.c.ok, ticks.c.error,
                           ticks.c.lag_seconds)
                 .where(ticks.c.source == key).order_by(ticks.c.started_at.desc(), ticks.c.id.desc()).limit(1))
        if succeeded:
            query = query.where(ticks.c.ok)
        found = self._all(query)
        if not found:
            return None
        r = found[0]
        return TickRow(started_at=r.started_at, finished_at=r.finished_at, ok=bool(r.ok), error=r.error,
                       lag_seconds=r.lag_seconds)

    def runs(self, *, statuses: Iterable[str] | None = None, workflow: str | None = None,
             streams: Iterable[str] | None = None, limit: int = 50, offset: int = 0) -> list[RunRow]:
        where: list[sa.ColumnElement[bool]] = []
        # By key (the primary key's order): a page of a common status (succeeded) walks the key index and
        # stops, a rare one (dead, failed) is found by the status index and sorted, few rows.
        order: list[Any] = [runs.c.workflow, runs.c.stream, runs.c.event_id]
        if statuses is not None:
            wanted = list(statuses)
            # Succeeded runs are most runs: filtered while walking the key index, not found by the status
            # index and sorted whole (SQLite, without statistics, picks the status index: 1.2 s at 500k runs).
            status = sa.func.lower(runs.c.status) if set(wanted) <= COMMON_STATUSES else runs.c.status
            where.append(status.in_(wanted))
        if workflow is not None:
            where.append(runs.c.workflow == workflow)
        if streams is not None:
            where.append(runs.c.stream.in_(list(streams)))
        query = _run_rows().where(*where).order_by(*order).limit(limit).offset(offset)
        return [_run_row(r) for r in self._all(query)]

    def workflow_run_counts(self, statuses: Iterable[str]) -> dict[tuple[str, str, str], int]:
        query = (sa.select(runs.c.workflow, runs.c.stream, runs.c.status, sa.func.count().label("n"))
                 .where(runs.c.status.in_(list(statuses))).group_by(runs.c.workflow, runs.c.stream, runs.c.status))
        return {(r.workflow, r.stream, r.status): int(r.n) for r in self._all(query)}

    def event_history(self, needle: str, limit: int = 100) -> list[EventHistory]:
        with self._connection() as conn:
            found = search.find(conn, needle, limit)
            keys = [(r.stream, r.event_id) for r in found]
            run_rows = _by_event(conn, _run_rows(), runs, keys, [runs.c.workflow])
            step_rows = _by_event(conn, sa.select(steps), steps, keys, [steps.c.workflow, steps.c.step])
        return [EventHistory(stream=r.stream, event_id=r.event_id, type=r.type, occurred_at=r.occurred_at,
                             payload=r.payload,
                             runs=tuple(_run_row(x) for x in run_rows.get((r.stream, r.event_id), ())),
                             steps=tuple(StepRow(x.workflow, x.step, x.result, x.created_at)
                                         for x in step_rows.get((r.stream, r.event_id), ())))
                for r in found]


def _by_event(conn: Connection, query: Any, table: sa.Table, keys: list[tuple[str, str]],
              order: list[Any]) -> dict[tuple[str, str], list[Any]]:
    """Rows of ``query`` (on ``table``) for the events ``keys``, grouped by event."""
    grouped: dict[tuple[str, str], list[Any]] = {}
    if not keys:
        return grouped
    match = sa.tuple_(table.c.stream, table.c.event_id).in_(keys)
    for row in conn.execute(query.where(match).order_by(*order)):
        grouped.setdefault((row.stream, row.event_id), []).append(row)
    return grouped


def _run_rows() -> Any:
    """Runs with their event's type (None once the event has left the ledger)."""
    return (sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id, runs.c.status, runs.c.attempts,
                      runs.c.next_attempt_at, runs.c.last_error, runs.c.trace_id, runs.c.started_at,
                      runs.c.finished_at, runs.c.claim_owner, runs.c.claimed_until, events.c.type)
            .join(events, sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id),
                  isouter=True))


def _run_row(r: Any) -> RunRow:
    return RunRow(workflow=r.workflow, stream=r.stream, event_id=r.event_id, status=r.status, attempts=r.attempts,
                  next_attempt_at=r.next_attempt_at, error=r.last_error, trace_id=r.trace_id,
                  started_at=r.started_at, finished_at=r.finished_at, event_type=r.type,
                  claim_owner=r.claim_owner, claimed_until=r.claimed_until)


def _has_horizons(conn: Connection) -> bool:
    return sa.inspect(conn).has_table(horizons.name)


def _failed_runs() -> Any:
    """Failed and dead runs with their event's type (None once the event has left the ledger)."""
    return (sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id, runs.c.status, runs.c.attempts,
                      runs.c.next_attempt_at, runs.c.last_error, runs.c.trace_id, events.c.type)
            .join(events, sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id),
                  isouter=True)
            .where(runs.c.status.in_(("failed", "dead"))))


def _failed_run(r: Any) -> FailedRun:
    return FailedRun(workflow=r.workflow, stream=r.stream, event_id=r.event_id, status=r.status,
                     attempts=r.attempts, next_attempt_at=r.next_attempt_at, error=r.last_error,
                     trace_id=r.trace_id, event_type=r.type)
