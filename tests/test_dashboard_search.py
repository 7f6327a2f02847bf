"""The search finds every object an event names, by an index (issue #22, items 5 and 7).

- The rule that lists an event's object ids (``syncd.store.objects``), by table.
- On SQLite and PostgreSQL, a ledger recorded through the Store contract: the search's answers before the
  object index is filled (from the backlog) and after (``objindex.index_backlog``) are the same, and the
  database's own plan (``EXPLAIN``) of each indexed statement uses an index, never a scan of ``syncd_events``.
- An organization id finds the organization's events and its memberships'; a Stripe invoice is found by its id
  and by its customer; ids the index cannot hold give no entry and never break a page.
The time it saves on a 500k-event ledger is measured by ``bench/dashboard_search.py`` (bench/README.md).
Migration 0014 and pruning: ``tests/test_object_index.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.contracts import CursorSpec, Event, FakeClock, Skip
from syncd.store import SqlStore, objindex
from syncd.store.objects import object_ids
from syncd.store.reads import SqlReads
from syncd.store.search import queries, streams
from syncd.store.tables import event_objects, object_backlog

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: Events in the ledger of the plan test: enough that PostgreSQL's planner prefers an index to a scan only
#: when the index really answers the query.
EVENTS = 10_000
OBJECTS = 250


def _event(event_id: str, data: Any, stream: str = "workos") -> Event:
    return Event(stream, event_id, "x.updated", T0, data)


@pytest.mark.parametrize(("event", "expected"), [
    (_event("event_1", {"object": "user", "id": "user_1", "email": "a@example.com"}), ["user_1"]),
    (_event("event_2", {"object": "organization_membership", "id": "om_1", "user_id": "user_1",
                        "organization_id": "org_1"}), ["om_1", "user_1", "org_1"]),
    (_event("evt_3", {"object": "invoice", "id": "in_1", "customer": "cus_1"}, "stripe"), ["in_1", "cus_1"]),
    (_event("evt_4", {"object": "invoice", "id": "in_1", "customer": {"id": "cus_2", "object": "customer"}},
            "stripe"), ["in_1", "cus_2"]),
    (_event("12345@2026-01-01T00:00:00Z", {"id": 12345, "number": 7, "title": "x"}, "github:o/r"),
     ["12345", "7"]),
    (_event("42", {"id": 42, "name": "row"}, "sql:users"), ["42"]),
    (_event("sku-9@2026-01-01", {"sku": "sku-9", "price": 3}, "sql:items"), ["sku-9"]),
    (_event("event_5", {"directory_id": "directory_1", "user": {"id": "directory_user_1"},
                        "group": {"id": "directory_group_1"}}), ["directory_1", "directory_user_1",
                                                                  "directory_group_1"]),
    (_event("evt_6", {"id": True, "user_id": 1.5, "organization_id": ["org_1"], "customer": {"id": None}}), []),
    (_event("evt_7", {"id": "x" * 201, "user_id": "nul\x00inside", "organization_id": ""}), []),
    (_event("@v1", {"id": ""}), []),
    (_event("evt_8", ["not", "an", "object"]), []),
], ids=["user", "membership", "stripe-invoice", "stripe-expanded", "github-issue", "sql-id", "sql-key",
        "dsync-membership", "no-ids", "unstorable", "nothing", "not-a-mapping"])
def test_the_objects_an_event_is_about(event: Event, expected: list[str]) -> None:
    assert object_ids(event) == expected


def _record(store: SqlStore, batch: list[Event], stream: str = "workos") -> None:
    lease = store.claim(CursorSpec(stream, stream), owner="test", lease_seconds=30, clock=FakeClock(T0))
    assert not isinstance(lease, Skip)
    try:
        for i in range(0, len(batch), 1000):
            with lease.page(stream) as txn:
                txn.record_events(batch[i : i + 1000], T0)
                txn.advance(None, meta=None, new_events=len(batch[i : i + 1000]))
    finally:
        lease.release()


def _ledger_events() -> list[Event]:
    """Users and their memberships: event i is about user (i % OBJECTS); one in four is a membership of one of
    ten organizations, one in a hundred an organization's update."""
    found = []
    for i in range(EVENTS):
        user, org = f"user_{i % OBJECTS:05d}", f"org_{i % 10}"
        if i % 100 == 50:
            data: dict[str, Any] = {"object": "organization", "id": f"org_{i // 100 % 10}", "name": "Acme"}
        elif i % 4 == 3:
            data = {"object": "organization_membership", "id": f"om_{i}", "user_id": user, "organization_id": org}
        else:
            data = {"object": "user", "id": user, "email": f"u{i}@example.com"}
        found.append(Event("workos", f"event_{i:06d}", "x.updated", T0 + timedelta(seconds=i), data))
    return found


def _plan(db: Engine, query: Any) -> str:
    with db.connect() as conn:
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        if conn.dialect.name == "sqlite":
            return "\n".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))


def _count(db: Engine, table: sa.Table) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_the_search_finds_every_object_before_and_after_indexing_by_indexes(store: SqlStore) -> None:
    batch = _ledger_events()
    _record(store, batch)
    db, reads = store.db, SqlReads(store.db)
    user, org = "user_00007", "org_3"
    about_user = [e.id for e in batch if user in object_ids(e)]
    about_org = [e.id for e in batch if org in object_ids(e)]
    assert len(about_user) == EVENTS // OBJECTS
    kinds = {e.data["object"] for e in batch if e.id in about_org}
    assert kinds == {"organization", "organization_membership"}  # the organization and its memberships

    def answers() -> list[list[str]]:
        return [[h.event_id for h in reads.event_history(needle, limit=2000)]
                for needle in (user, org, "om_3", "event_000123", "user_0000")]

    expected = [about_user, about_org, ["event_000003"], ["event_000123"], []]  # oldest first; a prefix is no id
    assert _count(db, object_backlog) == EVENTS // 1000 and _count(db, event_objects) == 0
    assert answers() == expected  # nothing indexed yet: found through the backlog
    assert objindex.index_backlog(db) == EVENTS // 1000
    assert _count(db, object_backlog) == 0
    assert _count(db, event_objects) == sum(len(object_ids(e)) for e in batch)
    assert answers() == expected
    assert [h.event_id for h in reads.event_history(user, limit=3)] == about_user[:3]

    with db.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
        keys = streams(conn)
    assert keys == ["workos"]
    by_object, by_event = queries(user, keys, 100)
    object_plan, event_plan = _plan(db, by_object), _plan(db, by_event)
    if db.dialect.name == "sqlite":
        assert "SEARCH syncd_event_objects USING PRIMARY KEY (object_id=?)" in object_plan, object_plan
        assert "USING INDEX sqlite_autoindex_syncd_events_1 (stream=? AND event_id=?)" in object_plan, object_plan
        assert "USING INDEX sqlite_autoindex_syncd_events_1 (stream=? AND event_id=?)" in event_plan, event_plan
        for plan in (object_plan, event_plan):
            assert "SCAN syncd_events" not in plan.replace("SCAN syncd_events USING", "")
    else:
        assert "pk_syncd_event_objects" in object_plan and "pk_syncd_events" in object_plan, object_plan
        assert "Index Scan using pk_syncd_events on syncd_events" in event_plan, event_plan
        for plan in (object_plan, event_plan):
            assert "Seq Scan" not in plan, plan


def test_a_stripe_invoice_is_found_by_its_id_and_by_its_customer(store: SqlStore) -> None:
    invoice = {"object": "invoice", "id": "in_1", "customer": "cus_1", "status": "open"}
    batch = [Event("stripe", "evt_1", "customer.created", T0, {"object": "customer", "id": "cus_1"}),
             Event("stripe", "evt_2", "invoice.created", T0 + timedelta(seconds=1), invoice),
             Event("stripe", "evt_3", "invoice.paid", T0 + timedelta(seconds=2), {**invoice, "status": "paid"}),
             Event("stripe", "evt_4", "invoice.created", T0 + timedelta(seconds=3),
                   {"object": "invoice", "id": "in_2", "customer": {"id": "cus_2", "object": "customer"}})]
    _record(store, batch, "stripe")
    reads = SqlReads(store.db)
    for indexed in (False, True):
        if indexed:
            assert objindex.index_backlog(store.db, ["stripe"]) == 1
        assert [h.event_id for h in reads.event_history("in_1")] == ["evt_2", "evt_3"]
        assert [h.event_id for h in reads.event_history("cus_1")] == ["evt_1", "evt_2", "evt_3"]
        assert [h.event_id for h in reads.event_history("cus_2")] == ["evt_4"]


def test_ids_the_index_cannot_hold_give_no_entry_and_the_page_commits(store: SqlStore) -> None:
    odd = [Event("workos", "evt_long", "user.updated", T0, {"id": "u" * 201, "user_id": "user_ok"}),
           Event("workos", "evt_types", "user.updated", T0, {"id": ["x"], "user_id": {"a": 1}, "number": 2.5}),
           Event("workos", "evt_big", "user.updated", T0, {"id": 10**30}),
           Event("workos", "evt_quote", "user.updated", T0, {"id": 'user_"q\\'})]
    _record(store, odd)
    reads = SqlReads(store.db)
    assert [h.event_id for h in reads.event_history("user_ok")] == ["evt_long"]
    assert [h.event_id for h in reads.event_history('user_"q\\')] == ["evt_quote"]  # found by the rule alone
    objindex.index_backlog(store.db)
    with store.db.connect() as conn:
        entries = sorted(tuple(r) for r in conn.execute(sa.select(event_objects.c.object_id, event_objects.c.event_id)))
    assert entries == [(str(10**30), "evt_big"), ('user_"q\\', "evt_quote"), ("user_ok", "evt_long")]
    assert [h.event_id for h in reads.event_history('user_"q\\')] == ["evt_quote"]
