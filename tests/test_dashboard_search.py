"""The search by object id uses an index (issue #22, item 7: "pages stay fast with a year of data").

- The rule that picks an event's object id (``syncd.store.objects``), by table.
- On SQLite and PostgreSQL, a ledger recorded through the Store contract: the object ids stored, the search's
  answers, and the database's own plan (``EXPLAIN``) of each of its statements: an index, never a scan of
  ``syncd_events``.
- Migration 0012 fills the object ids of events recorded before it.
The time it saves on a 500k-event ledger is measured by ``bench/dashboard_search.py`` (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.contracts import CursorSpec, Event, FakeClock, Skip
from syncd.store import SqlStore
from syncd.store.connect import create_engine
from syncd.store.objects import object_id
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.search import queries, streams
from syncd.store.tables import events as ledger

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: Events in the ledger of the plan test: enough that PostgreSQL's planner prefers an index to a scan only
#: when the index really answers the query.
EVENTS = 20_000
OBJECTS = 500


def _event(event_id: str, data: dict[str, Any], stream: str = "workos") -> Event:
    return Event(stream, event_id, "x.updated", T0, data)


@pytest.mark.parametrize(("event", "expected"), [
    (_event("event_1", {"object": "user", "id": "user_1", "email": "a@example.com"}), "user_1"),
    (_event("event_2", {"object": "organization_membership", "id": "om_1", "user_id": "user_1",
                        "organization_id": "org_1"}), "user_1"),
    (_event("evt_3", {"object": "invoice", "id": "in_1", "customer": "cus_1"}, "stripe"), "cus_1"),
    (_event("evt_4", {"object": "invoice", "id": "in_1", "customer": {"id": "cus_2", "object": "customer"}},
            "stripe"), "cus_2"),
    (_event("12345@2026-01-01T00:00:00Z", {"id": 12345, "number": 7, "title": "x"}, "github:o/r"), "7"),
    (_event("42", {"id": 42, "name": "row"}, "sql:users"), "42"),
    (_event("sku-9@2026-01-01", {"sku": "sku-9", "price": 3}, "sql:items"), "sku-9"),
    (_event("evt_5", {"id": True}), "evt_5"),  # a boolean is no id: the event's own id is
    (_event("evt_6", {"id": "x" * 201}), "evt_6"),  # too long for the column
    (_event("@v1", {"id": ""}), None),
], ids=["user", "membership", "stripe-customer", "stripe-expanded", "github-number", "sql-id", "sql-key",
        "bool-id", "long-id", "nothing"])
def test_the_object_an_event_is_about(event: Event, expected: str | None) -> None:
    assert object_id(event) == expected


def _record(store: SqlStore, batch: list[Event]) -> None:
    lease = store.claim(CursorSpec("workos", "workos"), owner="test", lease_seconds=30, clock=FakeClock(T0))
    assert not isinstance(lease, Skip)
    try:
        for i in range(0, len(batch), 1000):
            with lease.page("workos") as txn:
                txn.record_events(batch[i : i + 1000], T0)
                txn.advance(None, meta=None, new_events=len(batch[i : i + 1000]))
    finally:
        lease.release()


def _ledger_events() -> list[Event]:
    """Users and their memberships: event i is about user (i % OBJECTS); one in four is a membership."""
    found = []
    for i in range(EVENTS):
        user = f"user_{i % OBJECTS:05d}"
        data = ({"object": "organization_membership", "id": f"om_{i}", "user_id": user, "organization_id": "org_1"}
                if i % 4 == 3 else {"object": "user", "id": user, "email": f"u{i}@example.com"})
        found.append(Event("workos", f"event_{i:06d}", "x.updated", T0 + timedelta(seconds=i), data))
    return found


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    db = create_engine(db_url)
    migrate(db)
    made = SqlStore(db)
    yield made
    made.close()
    db.dispose()


def _plan(db: Engine, query: Any) -> str:
    with db.connect() as conn:
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        if conn.dialect.name == "sqlite":
            return "\n".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))


def test_the_search_uses_indexes_and_finds_every_event_of_a_user(store: SqlStore) -> None:
    batch = _ledger_events()
    _record(store, batch)
    db = store.db
    with db.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    user = "user_00007"
    about = [e.id for e in batch if object_id(e) == user]
    assert len(about) == EVENTS // OBJECTS
    history = SqlReads(db).event_history(user, limit=100)
    assert [h.event_id for h in history] == about  # oldest first: the events were 1 s apart
    assert [h.event_id for h in SqlReads(db).event_history("event_000123")] == ["event_000123"]
    assert SqlReads(db).event_history("user_0000") == []  # a prefix is not the id

    with db.connect() as conn:
        keys = streams(conn)
    assert keys == ["workos"]
    by_object, by_event = queries(user, keys, 100)
    object_plan, event_plan = _plan(db, by_object), _plan(db, by_event)
    if db.dialect.name == "sqlite":
        assert "USING INDEX ix_syncd_events_object_id (object_id=?)" in object_plan, object_plan
        assert "USING INDEX sqlite_autoindex_syncd_events_1 (stream=? AND event_id=?)" in event_plan, event_plan
        for plan in (object_plan, event_plan):
            assert "SCAN syncd_events" not in plan.replace("SCAN syncd_events USING", "")
    else:
        assert "Index Scan using ix_syncd_events_object_id" in object_plan or \
            "Bitmap Index Scan on ix_syncd_events_object_id" in object_plan, object_plan
        assert "Index Scan using pk_syncd_events on syncd_events" in event_plan, event_plan
        for plan in (object_plan, event_plan):
            assert "Seq Scan" not in plan, plan


def test_migration_0012_fills_the_object_ids_of_earlier_events(empty_db_url: str) -> None:
    db = create_engine(empty_db_url)
    try:
        migrate(db, "0010")
        old = sa.table("syncd_events", *(sa.column(c.name, c.type) for c in ledger.c if c.name != "object_id"))
        rows = [{"stream": e.stream, "event_id": e.id, "type": e.type, "action": None, "occurred_at": e.occurred_at,
                 "payload": dict(e.data), "recorded_at": T0} for e in _ledger_events()[:12_000]]
        with db.begin() as conn:
            conn.execute(sa.insert(old), rows)
        migrate(db)
        with db.connect() as conn:
            stored = {r.event_id: r.object_id for r in conn.execute(sa.select(ledger.c.event_id, ledger.c.object_id))}
        expected = {e.id: object_id(e) for e in _ledger_events()[:12_000]}
        assert stored == expected
        assert {r.event_id for r in SqlReads(db).event_history("user_00042", limit=1000)} == {
            k for k, v in expected.items() if v == "user_00042"}
    finally:
        db.dispose()
