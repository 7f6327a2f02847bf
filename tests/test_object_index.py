"""The object index's upkeep (``syncd.store.objindex``), on SQLite and PostgreSQL: a tick's claim indexes what
earlier pages queued; pruning takes an event's entries with it; migration 0014 indexes the events a database at
0013 holds and drops the old ``object_id`` column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from syncd.contracts import CursorSpec, Event, FakeClock, Skip
from syncd.store import SqlStore, ledger, objindex, retention
from syncd.store.connect import create_engine
from syncd.store.objects import object_id_of, object_ids
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.tables import event_objects, events, object_backlog
from syncd.store.types import UTCDateTime, json_type

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(count: int) -> list[Event]:
    """Organizations 0-9, then memberships of users in them, one event a minute."""
    out = []
    for i in range(count):
        data = ({"object": "organization", "id": f"org_{i}", "name": "Acme"} if i < 10 else
                {"object": "organization_membership", "id": f"om_{i}", "user_id": f"user_{i % 7}",
                 "organization_id": f"org_{i % 10}"})
        out.append(Event("workos", f"event_{i:05d}", "x.created", T0 + timedelta(minutes=i), data))
    return out


def _entries(store: SqlStore) -> set[tuple[str, str]]:
    with store.db.connect() as conn:
        return {(r.object_id, r.event_id) for r in conn.execute(sa.select(event_objects))}


def _expected(batch: list[Event]) -> set[tuple[str, str]]:
    return {(found, e.id) for e in batch for found in object_ids(e)}


def _claim(store: SqlStore, now: datetime) -> object:
    lease = store.claim(CursorSpec("workos", "workos"), owner="test", lease_seconds=30, clock=FakeClock(now))
    assert not isinstance(lease, Skip)
    return lease


def test_a_ticks_claim_indexes_what_earlier_pages_queued(store: SqlStore) -> None:
    batch = _events(300)
    lease = _claim(store, T0)
    with lease.page("workos") as txn:  # type: ignore[attr-defined]
        assert txn.record_events(batch[:200], T0).new == {e.id for e in batch[:200]}
    with lease.page("workos") as txn:  # type: ignore[attr-defined]
        txn.record_events(batch[100:], T0)  # half of it known: only the new half is queued
    lease.release()  # type: ignore[attr-defined]
    assert _entries(store) == set()
    with store.db.connect() as conn:
        assert objindex.backlog_size(conn) == 2
    _claim(store, T0 + timedelta(hours=1))  # the next tick, before its first page
    with store.db.connect() as conn:
        assert objindex.backlog_size(conn) == 0
    assert _entries(store) == _expected(batch)
    assert len([h for h in SqlReads(store.db).event_history("org_3", limit=500)]) == 30


def test_pruning_takes_the_events_entries_with_them(store: SqlStore) -> None:
    batch = _events(120)
    lease = _claim(store, T0)
    with lease.page("workos") as txn:  # type: ignore[attr-defined]
        txn.record_events(batch, T0)
    lease.release()  # type: ignore[attr-defined]
    objindex.index_backlog(store.db)
    cutoff = T0 + timedelta(minutes=60)
    with store.db.begin() as conn:
        pruned = retention.prune_events(conn, "workos", cutoff, None, cutoff + timedelta(days=1))
    assert pruned.deleted == 60
    assert _entries(store) == _expected(batch[60:])
    assert [h.event_id for h in SqlReads(store.db).event_history("org_3")] == [
        e.id for e in batch[60:] if "org_3" in object_ids(e)]


def test_pruning_before_indexing_leaves_no_entry(store: SqlStore) -> None:
    batch = _events(40)
    lease = _claim(store, T0)
    with lease.page("workos") as txn:  # type: ignore[attr-defined]
        txn.record_events(batch, T0)
    lease.release()  # type: ignore[attr-defined]
    cutoff = T0 + timedelta(minutes=20)
    with store.db.begin() as conn:
        retention.prune_events(conn, "workos", cutoff, None, cutoff + timedelta(days=1))
    assert objindex.index_backlog(store.db) == 1
    assert _entries(store) == _expected(batch[20:])


def test_migration_0014_indexes_the_events_of_a_database_at_0013(empty_db_url: str) -> None:
    db = create_engine(empty_db_url)
    try:
        migrate(db, "0013")
        batch = _events(6_000)  # more than one of the migration's batches of 5,000
        with db.begin() as conn:  # as 0013's code wrote them (through the table's own types)
            conn.execute(sa.text(
                "INSERT INTO syncd_events (stream, event_id, type, action, occurred_at, payload, recorded_at, "
                "object_id) VALUES (:stream, :event_id, :type, NULL, :occurred_at, :payload, :recorded_at, "
                ":object_id)").bindparams(
                    sa.bindparam("occurred_at", type_=UTCDateTime()), sa.bindparam("recorded_at", type_=UTCDateTime()),
                    sa.bindparam("payload", type_=json_type())),
                [{"stream": e.stream, "event_id": e.id, "type": e.type, "occurred_at": e.occurred_at,
                  "payload": dict(e.data), "recorded_at": T0, "object_id": object_id_of(e.id, e.data)}
                 for e in batch])
        migrate(db)
        with db.connect() as conn:
            found = {(r.object_id, r.event_id) for r in conn.execute(sa.select(event_objects))}
            columns = {c["name"] for c in sa.inspect(conn).get_columns("syncd_events")}
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("syncd_events")}
            backlog = conn.execute(sa.select(sa.func.count()).select_from(object_backlog)).scalar_one()
        assert found == _expected(batch)
        assert "object_id" not in columns and "ix_syncd_events_object_id" not in indexes
        assert "ix_syncd_events_stream_occurred" in indexes and backlog == 0
        history = SqlReads(db).event_history("org_4", limit=5000)
        assert [h.event_id for h in history] == [e.id for e in batch if "org_4" in object_ids(e)]
        assert {h.payload["object"] for h in history} == {"organization", "organization_membership"}
    finally:
        db.dispose()



def test_the_ledger_row_and_its_values_agree() -> None:
    """SQLite's path builds the row as a mapping, PostgreSQL's COPY as values: one ledger, column for column."""
    event = Event("workos", "event_1", "user.created", T0, {"id": "user_1"}, action="created")
    assert ledger.ledger_row(event, T0) == dict(zip(ledger.LEDGER_COLUMNS, ledger.ledger_values(event, T0),
                                                    strict=True))
    assert set(ledger.LEDGER_COLUMNS) == {c.name for c in events.c}
