"""Revision 0017 (issue 26): the run queue's indexes leave out rows no query reads, and the queue's queries
still read them (plan checks, not timings), on SQLite and PostgreSQL; its downgrade restores the full indexes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine

from syncd import jsoncodec
from syncd.store import ledger, queue
from syncd.store.db import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import alembic_config, load_metadata, migrate
from syncd.store.tables import events
from tests.test_pg_copy import HOSTILE

NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: index -> the condition 0017 gives it, per dialect (SQLite cannot prove ``status IN (...)`` implies status's)
PARTIAL = {
    "sqlite": {"ix_syncd_runs_due": "next_attempt_at IS NOT NULL", "ix_syncd_runs_key_seq": "run_key IS NOT NULL"},
    "postgresql": {"ix_syncd_runs_due": "next_attempt_at IS NOT NULL", "ix_syncd_runs_key_seq": "run_key IS NOT NULL",
                   "ix_syncd_runs_status_next": "<> 'succeeded'"},
}
RUN_INDEXES = ("ix_syncd_runs_due", "ix_syncd_runs_key_seq", "ix_syncd_runs_status_next")


def run_indexes(db: Engine) -> dict[str, str]:
    """The CREATE INDEX text of each of syncd_runs' secondary indexes, as the database reports it."""
    with db.connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'syncd_runs'"))
        else:
            rows = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                        "AND tbl_name = 'syncd_runs' AND sql IS NOT NULL"))
        return {name: " ".join(str(sql).split()) for name, sql in rows if name in RUN_INDEXES}


def downgrade(db: Engine, revision: str) -> None:
    cfg = alembic_config()
    with db.begin() as conn:
        cfg.attributes["connection"] = conn  # type: ignore[attr-defined]
        command.downgrade(cfg, revision)  # type: ignore[arg-type]


def payload_type(db: Engine) -> str:
    with db.connect() as conn:
        if conn.dialect.name != "postgresql":
            return "text"
        return str(conn.execute(sa.text("SELECT data_type FROM information_schema.columns "
                                        "WHERE table_name = 'syncd_events' AND column_name = 'payload'")).scalar_one())


def stored_payloads(db: Engine) -> dict[str, Any]:
    with db.connect() as conn:
        return {r.event_id: r.payload for r in conn.execute(sa.select(events.c.event_id, events.c.payload))}


def test_0017_makes_the_run_indexes_partial_and_its_downgrade_makes_them_full(db_url: str) -> None:
    """Up, down and up again: the indexes' conditions and (PostgreSQL) the payload's type follow, and ledger
    rows written at 0016 (jsonb) read back as they did at 0016 after each step."""
    db = create_engine(db_url)
    postgres = db.dialect.name == "postgresql"
    try:
        partial = PARTIAL[db.dialect.name]
        defs = run_indexes(db)
        assert set(defs) == set(RUN_INDEXES)
        for name, text in defs.items():
            assert (partial[name] in text) if name in partial else ("WHERE" not in text), text
        assert payload_type(db) == ("json" if postgres else "text")
        with db.connect() as conn:  # tables.py declares what the migrations build
            diffs = compare_metadata(MigrationContext.configure(conn), load_metadata())
        assert [d for d in diffs if "syncd_runs" in repr(d) or "syncd_events" in repr(d)] == []
        downgrade(db, "0016")
        assert all("WHERE" not in text for text in run_indexes(db).values())
        assert payload_type(db) == ("jsonb" if postgres else "text")
        with db.begin() as conn:  # the ledger as 0016 wrote it: a jsonb payload on PostgreSQL
            payload = "CAST(:payload AS jsonb)" if postgres else ":payload"
            conn.execute(sa.text("INSERT INTO syncd_events (stream, event_id, type, occurred_at, payload, recorded_at) "
                                 f"VALUES ('workos', :id, 'user.updated', :t, {payload}, :t)"),
                         [{"id": f"event_{i}", "t": NOW.isoformat(), "payload": jsoncodec.dumps(data)}
                          for i, data in enumerate(HOSTILE)])
        # what 0016 gives back (jsonb reads 1.7976931348623157e308 back as an integer: numeric, not a float)
        written = stored_payloads(db)
        assert set(written) == {f"event_{i}" for i in range(len(HOSTILE))}
        migrate(db)
        assert run_indexes(db) == defs
        assert payload_type(db) == ("json" if postgres else "text")
        assert stored_payloads(db) == written
        downgrade(db, "0016")
        assert stored_payloads(db) == written
        migrate(db)
    finally:
        db.dispose()


@contextmanager
def captured(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """Every statement ``conn`` sends to the driver while the block runs, with its driver parameters."""
    sent: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    sa.event.listen(conn, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        sa.event.remove(conn, "before_cursor_execute", note)


def plan(conn: Connection, statement: str, parameters: Any) -> str:
    """The plan the database chooses for ``statement`` (PostgreSQL's EXPLAIN, SQLite's EXPLAIN QUERY PLAN)."""
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return "\n".join(str(r[0]) for r in rows)
    return "\n".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))


def queue_plans(conn: Connection) -> dict[str, str]:
    """The plans of reads of syncd_runs, by name: a claim (expired claims, then due runs with the key-order
    check), a claim of a limited workflow (its in-flight count), next_due's two, due_count, waiting_runs, and
    the dashboard's rare-status runs and counts."""
    steps: list[tuple[str, Any]] = [
        ("claim_expired claim_due", lambda: queue.claim(conn, owner="me", now=NOW, lease_seconds=30, limit=5,
                                                        workflows=["a", "b"], limited={}, dead_owners=[])),
        ("claim_lock in_flight claim_expired_limited claim_due_limited",
         lambda: queue.claim(conn, owner="me", now=NOW, lease_seconds=30, limit=5, workflows=["a"],
                             limited={"a": 2}, dead_owners=["gone"])),
        ("next_due next_expiry", lambda: queue.next_due(conn, ["a", "b"])),
        ("due_count", lambda: queue.due_count(conn, ["a"], NOW, "workos")),
        ("waiting_runs", lambda: ledger.waiting_runs(conn, "workos")),
        ("rare_runs", lambda: SqlReads(conn.engine, _conn=conn).runs(statuses=["failed", "dead"])),
        ("rare_counts", lambda: SqlReads(conn.engine, _conn=conn).workflow_run_counts(["dead"])),
    ]
    found: dict[str, tuple[str, Any]] = {}
    for names, call in steps:
        with captured(conn) as sent:
            call()
        if conn.dialect.name != "postgresql":
            names = names.replace("claim_lock ", "")  # the workflow lock is PostgreSQL's only
        assert len(sent) == len(names.split()), (names, sent)
        found.update(zip(names.split(), sent, strict=True))
    return {name: plan(conn, *sent) for name, sent in found.items() if name != "claim_lock"}


def test_the_queues_reads_use_the_partial_indexes(db_url: str) -> None:
    db = create_engine(db_url)
    try:
        with db.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:  # an empty table: without this, a sequential scan is cheapest and no index shows
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plans = queue_plans(conn)
        for name, text in plans.items():  # every read of syncd_runs goes through an index
            assert ("Seq Scan on syncd_runs" not in text) if postgres else ("SCAN syncd_runs" not in text), (name, text)
        for name in ("claim_due", "claim_due_limited"):
            assert "ix_syncd_runs_due" in plans[name], plans[name]
            assert "ix_syncd_runs_key_seq" in plans[name], plans[name]
        if postgres:  # the partial status index still serves the queries naming other statuses
            for name in ("claim_expired", "in_flight", "next_expiry", "rare_runs", "rare_counts"):
                assert "ix_syncd_runs_status_next" in plans[name], (name, plans[name])
        else:  # next_due states ``next_attempt_at IS NOT NULL`` for SQLite
            assert "USING INDEX" in plans["next_due"], plans["next_due"]
    finally:
        db.dispose()
