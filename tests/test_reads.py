"""The Reads contract (``syncd.contracts.Reads``) on SQLite and PostgreSQL: ``SqlReads`` answers what the
rows say, in the order the contract states."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.contracts import FailedRun, TickRow, TickStats
from syncd.store.db import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.tables import events, runs, sources, ticks

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def db(db_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(sources), [
            {"key": key, "source": source, "kind": kind, "state": state, "cursor": cursor, "events_seen": seen,
             "last_success_at": at(1) if kind == "live" else None, "created_at": T0, "updated_at": T0}
            for key, source, kind, state, cursor, seen in [
                ("workos|2026-01-01..2026-02-01", "workos", "backfill", "done", "c9", 4),
                ("workos", "workos", "live", "active", "c3", 3),
                ("github:o/r", "github:o/r", "live", "active", None, 0),
            ]])
        conn.execute(sa.insert(events), [
            {"stream": "workos", "event_id": eid, "type": kind, "occurred_at": T0, "payload": {},
             "recorded_at": T0} for eid, kind in [("e1", "user.created"), ("e2", "user.created"),
                                                 ("e3", "user.deleted")]])
        conn.execute(sa.insert(runs), [
            {"workflow": wf, "stream": "workos", "event_id": eid, "status": status, "attempts": attempts,
             "started_at": T0, "finished_at": finished, "last_error": error, "trace_id": trace,
             "next_attempt_at": at(30) if status == "failed" else None}
            for wf, eid, status, attempts, finished, error, trace in [
                ("w1", "e1", "succeeded", 1, at(1), None, None),
                ("w1", "e2", "failed", 2, at(2), "boom 2", "ab" * 16),
                ("w2", "e3", "dead", 5, at(3), "boom 3", None),
                ("w2", "gone", "failed", 1, at(4), "boom 4", None),  # its event left the ledger
                ("w2", "e1", "sleeping", 1, None, None, None),
            ]])
        conn.execute(sa.insert(ticks), [
            {"source": "workos", "started_at": started, "finished_at": started + timedelta(seconds=2), "ok": ok,
             "pages": pages, "runs_ok": runs_ok, "runs_failed": runs_failed, "error": error,
             "lag_seconds": lag}
            for started, ok, pages, runs_ok, runs_failed, error, lag in [
                (at(5), False, 0, 0, 0, "HTTP 500", None),  # recorded first, started last
                (at(1), True, 3, 4, 2, None, 12.5),
            ]])
    yield engine
    engine.dispose()


def test_sources_live_first_then_by_key(db: sa.Engine) -> None:
    reads = SqlReads(db)
    assert [r.key for r in reads.sources()] == ["github:o/r", "workos", "workos|2026-01-01..2026-02-01"]
    assert [r.key for r in reads.sources(["workos", "nope"])] == ["workos"]
    assert reads.sources([]) == []
    row = reads.source("workos")
    assert row is not None and (row.cursor, row.events_seen, row.last_success_at) == ("c3", 3, at(1))
    assert reads.source("nope") is None


def test_run_counts_and_failures(db: sa.Engine) -> None:
    reads = SqlReads(db)
    assert reads.run_counts() == {("workos", "succeeded"): 1, ("workos", "failed"): 2, ("workos", "dead"): 1,
                                  ("workos", "sleeping"): 1}
    assert reads.run_counts(("dead", "sleeping")) == {("workos", "dead"): 1, ("workos", "sleeping"): 1}
    failures = reads.recent_failures()
    assert [(f.status, f.event_id) for f in failures] == [("failed", "gone"), ("failed", "e2"), ("dead", "e3")]
    assert failures[1] == FailedRun(workflow="w1", stream="workos", event_id="e2", status="failed", attempts=2,
                                    next_attempt_at=at(30), error="boom 2", trace_id="ab" * 16,
                                    event_type="user.created")
    assert failures[0].event_type is None
    assert len(reads.recent_failures(limit=1)) == 1


def test_ledger_and_ticks(db: sa.Engine) -> None:
    reads = SqlReads(db)
    assert reads.event_count() == 3
    assert reads.event_counts_by_type() == [("user.created", 2), ("user.deleted", 1)]
    assert reads.tick_stats() == {"workos": TickStats(ticks=2, ok=1, pages=3, runs_ok=4, runs_failed=2)}
    assert reads.tick_stats()["workos"].failed == 1
    assert reads.last_tick("workos") == TickRow(started_at=at(5), finished_at=at(5) + timedelta(seconds=2),
                                                ok=False, error="HTTP 500", lag_seconds=None)
    assert reads.last_tick("github:o/r") is None


def test_a_snapshot_answers_like_single_reads(db: sa.Engine) -> None:
    reads = SqlReads(db)
    with reads.snapshot() as snap:
        assert snap.event_count() == reads.event_count()
        assert snap.sources() == reads.sources()
        with snap.snapshot() as inner:  # nested: the same read
            assert inner.run_counts() == reads.run_counts()


def test_an_unreadable_database_raises_sqlalchemy_error(tmp_path: Path) -> None:
    db = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'nope.db'}")
    with pytest.raises(sa.exc.SQLAlchemyError):
        SqlReads(db).sources()
    db.dispose()
