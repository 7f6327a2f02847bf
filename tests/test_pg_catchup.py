"""The catch-up's bulk paths for the ledger and run rows (issue 26, session 10) on both databases.

On PostgreSQL a catch-up group's ledger rows go by ``COPY`` straight into the ledger in a SAVEPOINT
(``pgcopy.copy_new``), and a batch's run rows by a plain ``INSERT … SELECT`` in a SAVEPOINT
(``ledger.insert_batch_runs``); either is made again with ``ON CONFLICT DO NOTHING`` only if the primary key
refuses it. These tests hold the contract the fallbacks keep: what exists is left as it is, the rest is
inserted, repeats give one row (the first), and the page transaction goes on after a refused attempt (the
SAVEPOINT rolled back, not the page).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from syncd.contracts import CursorSpec, Event, FakeClock, Lease, RunRecord, RunStatus, Skip
from syncd.store.sqlstore import SqlStore

STREAM = "workos"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int) -> Event:
    return Event(stream=STREAM, id=f"evt_{n:04d}", type="user.created", occurred_at=T0 + timedelta(seconds=n),
                 data={"id": f"user_{n}", "n": n}, action=None)


def template(workflow: str, status: RunStatus = RunStatus.SUCCEEDED) -> RunRecord:
    return RunRecord(workflow=workflow, stream=STREAM, event_id="", workflow_version="1", status=status,
                     attempts=1, next_attempt_at=None, last_error=None, trace_id=None, started_at=T0,
                     finished_at=T0, duration_ms=1.0)


def claim(store: SqlStore) -> Lease:
    lease = store.claim(CursorSpec(STREAM, STREAM), owner="a", lease_seconds=30.0, clock=FakeClock(T0))
    assert not isinstance(lease, Skip), lease
    return lease


def runs_of(store: SqlStore, workflow: str) -> dict[str, str]:
    with store.db.connect() as conn:
        return {r.event_id: r.status for r in conn.execute(
            sa.text("SELECT event_id, status FROM syncd_runs WHERE workflow = :wf"), {"wf": workflow})}


def test_a_group_whose_events_partly_have_runs_keeps_those_and_adds_the_rest(store: SqlStore) -> None:
    lease = claim(store)
    first = [event(n) for n in range(150)]
    with lease.page(STREAM) as txn:
        assert txn.record_events(first, T0).new == {e.id for e in first}
        txn.write_batch_runs(template("mirror", RunStatus.FAILED), [e.id for e in first])
        txn.advance("c1", meta=None, new_events=len(first))
    # Re-delivered: half of the group is known, the other half new; the run rows of all of them are written
    # again (as a caller that skipped the look-up would), with another status.
    group = [event(n) for n in range(75, 300)]
    with lease.page(STREAM) as txn:
        new = txn.record_events(group, T0).new
        assert new == {event(n).id for n in range(150, 300)}
        txn.write_batch_runs(template("mirror"), [e.id for e in group])
        txn.write_batch_runs(template("other"), [e.id for e in group])  # no conflict: the plain insert
        txn.advance("c2", meta=None, new_events=len(new))  # the page goes on after the refused attempt
    stored = runs_of(store, "mirror")
    assert len(stored) == 300
    assert {stored[event(n).id] for n in range(150)} == {"failed"}  # left as they were
    assert {stored[event(n).id] for n in range(150, 300)} == {"succeeded"}
    assert set(runs_of(store, "other")) == {event(n).id for n in range(75, 300)}
    with store.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM syncd_events")).scalar_one() == 300
        cursor = conn.execute(sa.text("SELECT cursor FROM syncd_sources WHERE key = :k"), {"k": STREAM}).scalar()
    assert cursor == "c2"


def test_repeated_ids_in_a_batch_give_one_run_each(store: SqlStore) -> None:
    lease = claim(store)
    events = [event(n) for n in range(120)]
    with lease.page(STREAM) as txn:
        txn.record_events(events, T0)
        txn.write_batch_runs(template("mirror"), [e.id for e in events] + [events[3].id, events[0].id])
        txn.advance("c1", meta=None, new_events=len(events))
    assert set(runs_of(store, "mirror")) == {e.id for e in events}


def test_a_refused_attempt_rolls_back_only_its_savepoint(store: SqlStore) -> None:
    """Whatever the transaction wrote before the refused insert stays, and nothing of that insert lands twice."""
    lease = claim(store)
    with lease.page(STREAM) as txn:
        txn.record_events([event(1), event(2)], T0)
        txn.write_batch_runs(template("mirror"), [event(1).id])
        txn.write_batch_runs(template("mirror", RunStatus.DEAD), [event(1).id, event(2).id])
        txn.advance("c1", meta=None, new_events=2)
    assert runs_of(store, "mirror") == {event(1).id: "succeeded", event(2).id: "dead"}


@pytest.mark.parametrize("stale", [False, True])
def test_a_fenced_out_page_commits_no_run_rows(store: SqlStore, stale: bool) -> None:
    """The run rows stay in the page's transaction: a page whose lease was taken over commits none of them."""
    from syncd.errors import LeaseLostError

    lease = claim(store)
    if stale:  # another owner takes the cursor over once the lease has expired
        later = FakeClock(T0 + timedelta(seconds=60))
        taken = store.claim(CursorSpec(STREAM, STREAM), owner="b", lease_seconds=30.0, clock=later)
        assert not isinstance(taken, Skip), taken
    events = [event(n) for n in range(110)]
    try:
        with lease.page(STREAM) as txn:
            txn.record_events(events, T0)
            txn.write_batch_runs(template("mirror"), [e.id for e in events])
            txn.advance("c1", meta=None, new_events=len(events))
    except LeaseLostError:
        assert stale
    assert len(runs_of(store, "mirror")) == (0 if stale else len(events))


def test_a_replayed_group_records_nothing_new_and_a_repeated_id_keeps_its_first_event(store: SqlStore) -> None:
    lease = claim(store)
    group = [event(n) for n in range(200)]
    second = Event(stream=STREAM, id=event(7).id, type="user.updated", occurred_at=T0, data={"id": "other"})
    with lease.page(STREAM) as txn:
        assert txn.record_events([*group, second], T0).new == {e.id for e in group}
        txn.advance("c1", meta=None, new_events=len(group))
    with lease.page(STREAM) as txn:
        assert txn.record_events(group, T0).new == set()  # every id known: the fallback finds none new
        txn.advance("c2", meta=None, new_events=0)
    with store.db.connect() as conn:
        rows = conn.execute(sa.text("SELECT type, count(*) OVER () FROM syncd_events WHERE event_id = :id"),
                            {"id": event(7).id}).all()
        total = conn.execute(sa.text("SELECT count(*) FROM syncd_events")).scalar_one()
    assert [tuple(r) for r in rows] == [("user.created", 1)] and total == 200


PAYLOADS: list[dict[str, object]] = [
    {"name": "Zoë \u00e9\u4e2d\U0001f600", "quote": "a \"b\" \\ c\n\td", "nested": {"list": [1, 2.5, None, True]}},
    {"big": 2**63 + 5, "negative": -(2**63) - 9, "float": 1e-7, "empty": {}, "tab\tkey": [0.1]},
    {"when": T0, "n": 3},  # a datetime: jsoncodec leaves it to the standard library, the check gives no text
]


@pytest.mark.parametrize("size", [3, 150])  # a live tick's page, and a catch-up group (COPY straight in)
def test_the_ledger_stores_each_payload_as_jsoncodec_writes_it(store: SqlStore, size: int) -> None:
    """The ledger's COPY takes the payload text the quarantine check wrote (``quarantine.check``), not a second
    serialization: the stored payloads read back as ``jsoncodec`` would have written them."""
    from syncd import jsoncodec
    from syncd.store import quarantine
    from syncd.store.tables import events as ledger

    batch = [Event(stream=STREAM, id=f"evt_{n:04d}", type="user.created", occurred_at=T0,
                   data=PAYLOADS[n % len(PAYLOADS)], action=None) for n in range(size)]
    checked = [quarantine.check(e) for e in batch[:3]]
    assert [reason for reason, _ in checked] == [None, None, None]
    # orjson wrote the first; the others (beyond 64 bits, a datetime) go to the standard library, not reused
    assert [text for _, text in checked] == [jsoncodec.dumps(PAYLOADS[0]), None, None]
    lease = claim(store)
    with lease.page(STREAM) as txn:
        assert len(txn.record_events(batch, T0).new) == size
        txn.advance("c1", meta=None, new_events=size)
    with store.db.connect() as conn:
        stored = {r.event_id: r.payload for r in conn.execute(sa.select(ledger.c.event_id, ledger.c.payload))}
    assert stored == {e.id: jsoncodec.loads(jsoncodec.dumps(e.data)) for e in batch}


def test_the_postgresql_datetime_processor_sends_utc_and_refuses_naive_times() -> None:
    """``UTCDateTime``'s PostgreSQL bind processor (used by every ``COPY`` and statement): a UTC datetime as it
    is, any other zone converted to the same instant in UTC, a naive datetime refused."""
    from zoneinfo import ZoneInfo

    from syncd.store.db import create_engine
    from syncd.store.types import UTCDateTime

    pg = create_engine("postgresql+psycopg://syncd@127.0.0.1/none").dialect  # no connection is made
    process = UTCDateTime().dialect_impl(pg).bind_processor(pg)
    assert process is not None
    new_york = ZoneInfo("America/New_York")
    moments = [T0, datetime(2026, 11, 1, 1, 30, tzinfo=new_york), datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=new_york)]
    sent = [process(at) for at in moments]
    assert sent[0] is T0 and process(None) is None
    assert [s.tzinfo for s in sent] == [UTC, UTC, UTC]
    assert [s.isoformat() for s in sent[1:]] == ["2026-11-01T05:30:00+00:00", "2026-11-01T06:30:00+00:00"]
    with pytest.raises(ValueError, match="naive datetime"):
        process(T0.replace(tzinfo=None))


def test_unstorable_events_in_a_catch_up_group_are_quarantined_and_the_rest_lands(store: SqlStore) -> None:
    """A group large enough for ``COPY`` straight into the ledger (PostgreSQL) that holds values the database
    cannot store: a NUL in a payload (one the fast serializer writes, one beyond 64 bits it leaves to the
    standard library), an unpaired surrogate in a key, a NUL in an id. Those four are quarantined, the other
    146 land in one page with the cursor, and a second delivery of the group finds nothing new."""
    from syncd.store.ledger import COPY_NEW_FROM

    group = [event(n) for n in range(150)]
    poisoned = {
        10: {"name": "Ada\x00"}, 20: {"big": 2**64, "name": "x\x00y"}, 30: {"tags\udc00": [1]},
    }
    for n, data in poisoned.items():
        group[n] = Event(stream=STREAM, id=group[n].id, type="user.created", occurred_at=T0, data=data)
    group[40] = Event(stream=STREAM, id="evt_\x00040", type="user.created", occurred_at=T0, data={"n": 40})
    assert len(group) - 4 >= COPY_NEW_FROM  # the kept events still take the COPY path
    refused = {group[n].id for n in (10, 20, 30, 40)}
    lease = claim(store)
    with lease.page(STREAM) as txn:
        recorded = txn.record_events(group, T0)
        txn.advance("c1", meta=None, new_events=len(recorded.new))
    assert recorded.quarantined == refused
    assert recorded.new == {e.id for e in group} - refused
    with lease.page(STREAM) as txn:
        again = txn.record_events(group, T0)
        txn.advance("c2", meta=None, new_events=0)
    assert again.new == set() and again.quarantined == refused
    with store.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM syncd_events")).scalar_one() == 146
        rows = conn.execute(sa.text("SELECT reason, times_seen FROM syncd_quarantine ORDER BY reason")).all()
    assert sorted(r.reason for r in rows) == sorted([
        "payload holds a NUL character", "payload holds a NUL character",
        "payload holds an unpaired UTF-16 surrogate", "id holds a NUL character"])
    assert {r.times_seen for r in rows} == {2}
