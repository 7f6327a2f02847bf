"""The Store contract (syncd.contracts.Store), one suite run on SQLite and PostgreSQL (``db_url``).

Each test states one clause of the contract's docstrings: fencing tokens, leases, the page transaction's
atomicity under a takeover, the ledger's "new ids", existing runs, due runs, release, ticks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.contracts import (
    ClaimedRun,
    CursorSpec,
    Event,
    FakeClock,
    Lease,
    Quarantined,
    RunRecord,
    RunStatus,
    Skip,
    SkipReason,
    Store,
    TickRecord,
    Window,
)
from syncd.errors import ClaimLostError, LeaseLostError
from syncd.store.owners import OWNER_NAMESPACE
from syncd.store.reads import SqlReads

LEASE = 30.0
ROOT = Path(__file__).resolve().parents[2]
STREAM = "workos"
LIVE = CursorSpec(STREAM, STREAM)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


#: A holder in a process of its own: claims the live cursor at the given time, prints the token, then
#: holds the lease until it is killed, or until its stdin closes: then it tries to commit a page (printing
#: "committed" or "fenced"), releases and exits.
HOLDER = """
import sys
from datetime import datetime
from syncd.contracts import CursorSpec, FakeClock
from syncd.errors import ClaimLostError, LeaseLostError
from syncd.store import SqlStore
from syncd.store.connect import create_engine
url, at, seconds = sys.argv[1:4]
store = SqlStore(create_engine(url))
lease = store.claim(CursorSpec("workos", "workos"), owner="holder", lease_seconds=float(seconds),
                    clock=FakeClock(datetime.fromisoformat(at)))
print(getattr(lease, "token", lease), flush=True)
sys.stdin.read()
try:
    with lease.page("workos") as txn:
        txn.advance("late", meta=None, new_events=0)
    print("committed")
except LeaseLostError:
    print("fenced")
lease.release()
"""


@contextmanager
def holder_process(store: Store, at: datetime) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A ``HOLDER`` process holding the live cursor's lease (claimed at ``at``), and its token."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store.db.url.render_as_string(hide_password=False),
                             at.isoformat(), str(LEASE)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        token = int(proc.stdout.readline())
        yield proc, token
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def claim(store: Store, owner: str, clock: FakeClock, spec: CursorSpec = LIVE) -> Lease:
    lease = store.claim(spec, owner=owner, lease_seconds=LEASE, clock=clock)
    assert not isinstance(lease, Skip), f"{owner} was refused: {lease}"
    return lease


def event(n: int, stream: str = STREAM) -> Event:
    return Event(stream=stream, id=f"evt_{n:03d}", type="user.created", occurred_at=T0 + timedelta(seconds=n),
                 data={"id": f"user_{n}", "n": n}, action=None)


def run(wf: str, n: int, status: RunStatus = RunStatus.SUCCEEDED, due: datetime | None = None,
        attempts: int = 1) -> RunRecord:
    return RunRecord(workflow=wf, stream=STREAM, event_id=event(n).id, workflow_version="1", status=status,
                     attempts=attempts, next_attempt_at=due, last_error=None if status is RunStatus.SUCCEEDED
                     else "boom", trace_id=None, started_at=T0, finished_at=T0, duration_ms=1.0)


def count(store: Store, table: str) -> int:
    with store.db.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def commit_page(lease: Lease, events: list[Event], cursor: str, runs: Sequence[RunRecord] = ()) -> set[str]:
    with lease.page(STREAM) as txn:
        new = txn.record_events(events, T0).new
        txn.write_runs(list(runs))
        txn.advance(cursor, meta={"remaining": 7}, new_events=len(new))
    return new


# ---- claims and fencing ----------------------------------------------------------------------------------


def test_claims_give_increasing_fencing_tokens(store: Store) -> None:
    clock = FakeClock(T0)
    first = claim(store, "a", clock)
    first.release()
    second = claim(store, "a", clock)
    clock.advance(LEASE + 1)  # not released: taken over once expired
    third = claim(store, "b", clock)
    assert first.token < second.token < third.token
    assert first.cursor is None and third.owner == "b" and third.key == STREAM


def test_a_live_lease_is_not_claimed_by_another_owner_nor_by_its_own(store: Store) -> None:
    clock = FakeClock(T0)
    held = claim(store, "a", clock)  # kept: a live holder (a lease dropped unreleased looks like a dead one)
    clock.advance(LEASE - 1)
    for owner in ("b", "a"):
        assert store.claim(LIVE, owner=owner, lease_seconds=LEASE, clock=clock) == Skip(SkipReason.LEASE_HELD)
    row = store.source(STREAM)
    assert row is not None and (row.lease_owner, row.lease_token) == ("a", held.token)


def test_a_frozen_holders_lease_is_taken_only_once_expired_and_its_late_commit_is_fenced(store: Store) -> None:
    clock = FakeClock(T0)
    with holder_process(store, T0) as (proc, token):
        proc.send_signal(signal.SIGSTOP)  # frozen, alive: its process (and so its owner lock) is still there
        try:
            clock.advance(LEASE - 1)
            assert store.claim(LIVE, owner="b", lease_seconds=LEASE, clock=clock) == Skip(SkipReason.LEASE_HELD)
            clock.advance(2)  # a holder alive but silent (frozen, cut off) loses its lease when it expires
            taken = claim(store, "b", clock)
            assert taken.token == token + 1
            third = store.claim(LIVE, owner="c", lease_seconds=LEASE, clock=clock)
            assert third == Skip(SkipReason.LEASE_HELD)  # b holds the new token's lock, not the frozen one's
        finally:
            proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate("", timeout=10)  # woken: it tries to commit a page, then lets go
        assert out.split() == ["fenced"] and proc.returncode == 0
        assert store.claim(LIVE, owner="c", lease_seconds=LEASE, clock=clock) == Skip(SkipReason.LEASE_HELD)
    row = store.source(STREAM)
    assert row is not None and (row.lease_owner, row.lease_token, row.cursor) == ("b", taken.token, None)


def test_a_lease_whose_holder_died_is_taken_over_at_once(store: Store) -> None:
    clock = FakeClock(T0)
    with holder_process(store, T0) as (proc, token):
        proc.send_signal(signal.SIGKILL)  # no release: the row still names the holder, but its lock died
        proc.wait(10)
        row = store.source(STREAM)
        assert row is not None and (row.lease_owner, row.lease_token) == ("holder", token)
        taken = store.claim(LIVE, owner="b", lease_seconds=LEASE, clock=clock)  # long before the expiry
        if isinstance(taken, Skip) and store.db.dialect.name == "postgresql":
            # the server ends the dead session as soon as it reads the closed socket: give it that moment
            taken = wait_for_claim(store, clock)
        assert not isinstance(taken, Skip) and taken.token == token + 1
        taken.release()


def wait_for_claim(store: Store, clock: FakeClock) -> Lease | Skip:
    for _ in range(100):
        taken = store.claim(LIVE, owner="b", lease_seconds=LEASE, clock=clock)
        if not isinstance(taken, Skip):
            return taken
        time.sleep(0.05)
    return taken


def test_a_released_lease_leaves_no_owner_lock_behind(store: Store) -> None:
    clock = FakeClock(T0)
    for _ in range(3):
        claim(store, "a", clock).release()
    if store.db.dialect.name == "sqlite":
        assert list(Path(f"{store.db.url.database}.locks").iterdir()) == []
    else:
        held = sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space")
        with store.db.connect() as conn:
            assert conn.execute(held, {"space": OWNER_NAMESPACE}).scalar_one() == 0
        lease = claim(store, "a", clock)  # while held, the server shows it
        with store.db.connect() as conn:
            assert conn.execute(held, {"space": OWNER_NAMESPACE}).scalar_one() == 1
        lease.release()


def test_release_frees_the_cursor_at_once(store: Store) -> None:
    clock = FakeClock(T0)
    lease = claim(store, "a", clock)
    lease.release()
    row = store.source(STREAM)
    assert row is not None and row.lease_owner is None
    assert claim(store, "b", clock).owner == "b"  # no wait for the expiry


def test_an_expired_lease_is_taken_over_and_the_old_holder_commits_nothing(store: Store) -> None:
    clock = FakeClock(T0)
    old = claim(store, "a", clock)
    commit_page(old, [event(1)], "c1")
    clock.advance(LEASE + 1)
    new = claim(store, "b", clock)
    assert new.cursor == "c1"  # the cursor as committed, read under the new lease
    with pytest.raises(LeaseLostError), old.page(STREAM) as txn:
        assert txn.record_events([event(2)], T0).new == {event(2).id}
        txn.write_runs([run("wf", 2)])
        txn.advance("c2", meta=None, new_events=1)
    assert count(store, "syncd_events") == 1 and count(store, "syncd_runs") == 0  # event 2, its run: absent
    row = store.source(STREAM)
    assert row is not None and (row.cursor, row.lease_owner, row.lease_token) == ("c1", "b", new.token)
    assert not old.renew() and new.renew()
    old.release()  # the old holder's release leaves the new lease alone
    assert commit_page(new, [event(2)], "c2") == {event(2).id}
    row = store.source(STREAM)
    assert row is not None and (row.cursor, row.lease_owner, row.events_seen) == ("c2", "b", 2)


def test_a_page_commits_its_cursor_meta_and_count_together(store: Store) -> None:
    lease = claim(store, "a", FakeClock(T0))
    commit_page(lease, [event(1), event(2)], "c2")
    row = store.source(STREAM)
    assert row is not None and (row.cursor, row.meta, row.events_seen) == ("c2", {"remaining": 7}, 2)
    with pytest.raises(RuntimeError), lease.page(STREAM) as txn:  # a page that fails leaves nothing
        txn.record_events([event(3)], T0)
        txn.advance("c3", meta=None, new_events=1)
        raise RuntimeError("the page failed before COMMIT")
    row = store.source(STREAM)
    assert row is not None and row.cursor == "c2" and count(store, "syncd_events") == 2


# ---- the page transaction --------------------------------------------------------------------------------


def test_the_ledger_reports_only_new_ids(store: Store) -> None:
    lease = claim(store, "a", FakeClock(T0))
    assert commit_page(lease, [event(1), event(2)], "c2") == {event(1).id, event(2).id}
    assert commit_page(lease, [event(2), event(3)], "c3") == {event(3).id}
    assert commit_page(lease, [event(2), event(3)], "c3") == set()  # a repeated page: nothing new
    assert count(store, "syncd_events") == 3


def test_existing_runs_are_those_of_the_stream_and_workflows_asked(store: Store) -> None:
    lease = claim(store, "a", FakeClock(T0))
    commit_page(lease, [event(n) for n in (1, 2, 3)], "c3", [run("a", 1)])
    with lease.page(STREAM) as txn:
        txn.write_batch_runs(run("b", 0), [event(1).id, event(2).id])
        txn.write_runs([run("a", 1, RunStatus.FAILED)])  # exists: left as it is
        found = txn.existing_runs({"a", "b", "c"}, [event(n).id for n in (1, 2, 3)])
        assert txn.existing_runs({"a"}, [event(2).id, event(3).id]) == set()
        assert txn.existing_runs(set(), [event(1).id]) == set()
        txn.advance(None, meta=None, new_events=0)
    assert found == {("a", event(1).id), ("b", event(1).id), ("b", event(2).id)}
    with store.db.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM syncd_runs WHERE workflow = 'a'")).scalar_one()
    assert status == "succeeded"


# ---- the run queue: claims, fencing, order, limits --------------------------------------------------------


#: Each worker holds its owner lock while it claims (a claim of an owner without one is a dead owner's).
_OWNER_LOCKS: dict[tuple[Store, str], Any] = {}


def claim_runs(store: Store, owner: str, clock: FakeClock, *, limit: int = 10, limited: dict[str, int] | None = None,
               stream: str | None = None) -> list[ClaimedRun]:
    if (store, owner) not in _OWNER_LOCKS:
        _OWNER_LOCKS[store, owner] = store.hold_owner(owner)
    return store.claim_runs(owner, clock.now(), lease_seconds=LEASE, limit=limit, workflows={"wf", "other"},
                            limited=limited or {}, stream=stream)


def queued(wf: str, n: int, *, key: str | None = None, due: datetime = T0) -> RunRecord:
    return run(wf, n, RunStatus.QUEUED, due, attempts=0)._replace(last_error=None, run_key=key, seq=n)


def finish(store: Store, claimed: ClaimedRun, clock: FakeClock, status: RunStatus = RunStatus.SUCCEEDED) -> None:
    due = clock.now() if status is RunStatus.FAILED else None  # a retry due at once
    with store.claimed(claimed, lease_seconds=LEASE, clock=clock) as txn:
        txn.finish(run(claimed.due.workflow, int(claimed.due.event.id[-3:]), status, due,
                       attempts=claimed.due.next_attempt))


def test_due_runs_are_claimed_once_in_due_order_with_their_events(store: Store) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    now = clock.now()
    lease = claim(store, "a", clock)
    commit_page(lease, [event(n) for n in range(1, 8)], "c7", [
        run("wf", 1, RunStatus.FAILED, now - timedelta(seconds=5)),
        run("wf", 2, RunStatus.SLEEPING, now - timedelta(seconds=50)),
        run("wf", 3, RunStatus.PENDING, now - timedelta(seconds=20)),
        run("wf", 4, RunStatus.FAILED, now + timedelta(seconds=5)),  # not due yet
        run("wf", 5, RunStatus.DEAD),
        run("wf", 6),
        queued("wf", 7, due=now - timedelta(seconds=10)),
    ])
    first = claim_runs(store, "w1", clock, limit=2)
    rest = claim_runs(store, "w2", clock)
    order = [c.due.event.id for c in first + rest]
    assert order == [event(2).id, event(3).id, event(7).id, event(1).id]  # by due time
    assert [c.due.event for c in first] == [event(2), event(3)]  # as recorded in the ledger
    by_id = {c.due.event.id: c for c in first + rest}
    assert by_id[event(1).id].due.next_attempt == 2 and by_id[event(7).id].due.next_attempt == 1
    assert by_id[event(3).id].due.next_attempt == 1  # a failed or queued run starts an attempt; others go on
    assert claim_runs(store, "w3", clock) == []  # each run goes to one claimer
    clock.advance(10)
    assert claim_runs(store, "w3", clock, stream="github:o/r") == []  # run 4 is due now, but of another stream
    assert [c.due.event.id for c in claim_runs(store, "w3", clock, stream=STREAM)] == [event(4).id]


def test_a_claim_is_fenced_and_taken_over_once_expired(store: Store) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    commit_page(claim(store, "a", clock), [event(1)], "c1", [queued("wf", 1)])
    (mine,) = claim_runs(store, "w1", clock)
    with store.claimed(mine, lease_seconds=LEASE, clock=clock) as txn:
        txn.hold()  # still ours: renewed
    clock.advance(LEASE + 1)
    (theirs,) = claim_runs(store, "w2", clock)  # expired: due again, to another worker, a new token
    assert theirs.token == mine.token + 1 and theirs.due.status is RunStatus.RUNNING
    assert theirs.due.next_attempt == 2  # the lost attempt counts
    with pytest.raises(ClaimLostError), store.claimed(mine, lease_seconds=LEASE, clock=clock) as txn:
        txn.conn.execute(sa.text("DELETE FROM syncd_events"))  # an effect, rolled back with the claim
        txn.finish(run("wf", 1, attempts=1))
    assert count(store, "syncd_events") == 1
    finish(store, theirs, clock)
    with store.db.connect() as conn:
        row = conn.execute(sa.text("SELECT status, attempts, claim_owner FROM syncd_runs")).one()
    assert tuple(row) == ("succeeded", 2, "w2")  # the owner that ran it last stays


def test_a_dead_owners_claims_are_due_at_once(store: Store) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    commit_page(claim(store, "a", clock), [event(1)], "c1", [queued("wf", 1)])
    lock = store.hold_owner("w9")
    assert lock is not None and store.hold_owner("w9") is None  # one holder per owner
    (mine,) = store.claim_runs("w9", clock.now(), lease_seconds=LEASE, limit=5, workflows={"wf"}, limited={})
    assert claim_runs(store, "w2", clock) == []  # its owner is alive and its claim fresh
    lock.release()  # as the process's death would
    (theirs,) = claim_runs(store, "w2", clock)
    assert theirs.key == mine.key and theirs.token == mine.token + 1


def test_runs_with_one_key_are_claimed_one_at_a_time_in_order(store: Store) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    commit_page(claim(store, "a", clock), [event(n) for n in range(1, 6)], "c5", [
        queued("wf", 3, key="user_1"), queued("wf", 1, key="user_1"), queued("wf", 2, key="user_2"),
        queued("wf", 4, key="user_1"), queued("other", 5, key="user_1")])  # another workflow: its own order
    got = claim_runs(store, "w1", clock)
    assert sorted(c.due.event.id for c in got) == [event(1).id, event(2).id, event(5).id]
    assert claim_runs(store, "w1", clock) == []  # user_1's next waits for its first
    first = next(c for c in got if c.due.event.id == event(1).id)
    finish(store, first, clock, RunStatus.FAILED)  # failed: still open, so still first
    (again,) = claim_runs(store, "w1", clock)
    assert again.due.event.id == event(1).id
    finish(store, again, clock, RunStatus.DEAD)  # given up: the next one goes
    assert [c.due.event.id for c in claim_runs(store, "w1", clock)] == [event(3).id]


def test_a_concurrency_limit_holds_across_claimers(store: Store) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    commit_page(claim(store, "a", clock), [event(n) for n in range(1, 6)], "c5",
                [queued("wf", n) for n in range(1, 5)] + [queued("other", 5)])
    limits = {"wf": 2}
    a = claim_runs(store, "w1", clock, limit=2, limited=limits)
    b = claim_runs(store, "w2", clock, limited=limits)
    got = [c.due.workflow for c in a + b]
    assert got.count("wf") == 2 and got.count("other") == 1  # others are not held back
    assert claim_runs(store, "w3", clock, limited=limits) == []
    finish(store, next(c for c in a + b if c.due.workflow == "wf"), clock)
    assert len(claim_runs(store, "w3", clock, limited=limits)) == 1



def test_step_results_are_stored_once_per_step(store: Store) -> None:
    lease = claim(store, "a", FakeClock(T0))
    commit_page(lease, [event(1)], "c1")
    key = run("wf", 1).key
    with lease.page(STREAM) as txn:
        assert txn.step_results(key) == {}
        txn.store_steps(key, {"send": {"value": 1}}, T0)
        txn.store_steps(key, {"send": {"value": 2}, "wait": {"value": None}}, T0)  # send keeps its first
        txn.advance(None, meta=None, new_events=0)
    with lease.page(STREAM) as txn:
        assert txn.step_results(key) == {"send": {"value": 1}, "wait": {"value": None}}
        txn.advance(None, meta=None, new_events=0)


# ---- skips, failures and ticks ----------------------------------------------------------------------------


def test_a_paused_or_done_cursor_is_not_claimed(store: Store) -> None:
    clock = FakeClock(T0)
    claim(store, "a", clock).release()
    store.record_failure(STREAM, clock.now(), "429", pause_until=T0 + timedelta(seconds=60), pause_reason="slow down")
    skip = store.claim(LIVE, owner="a", lease_seconds=LEASE, clock=clock)
    assert isinstance(skip, Skip) and skip.reason is SkipReason.PAUSED
    assert skip.detail is not None and "slow down" in skip.detail and str(skip).startswith("paused until")
    clock.advance(61)
    window = CursorSpec("workos@0-1", STREAM, Window(T0, T0 + timedelta(days=1)))
    backfill = claim(store, "a", clock, window)
    backfill.mark_done()
    backfill.release()
    assert store.claim(window, owner="a", lease_seconds=LEASE, clock=clock) == Skip(SkipReason.DONE)
    row = store.source(window.key)
    assert row is not None and (row.kind, row.state, row.progress, row.window_start) == ("backfill", "done", 1.0, T0)
    assert not isinstance(store.claim(LIVE, owner="a", lease_seconds=LEASE, clock=clock), Skip)  # pause over


def test_ticks_are_recorded_and_a_success_ends_the_pause(store: Store) -> None:
    clock = FakeClock(T0)
    claim(store, "a", clock).release()
    store.record_failure(STREAM, T0, "boom", pause_until=T0 + timedelta(hours=1), pause_reason="wait")
    tick = TickRecord(source=STREAM, replica="a", started_at=T0, finished_at=T0 + timedelta(seconds=1), ok=False,
                      pages=0, events=0, new_events=0, runs_ok=0, runs_failed=0, skipped=0, lag_seconds=None,
                      error="boom")
    store.record_tick(tick, succeeded=False)
    row = store.source(STREAM)
    assert row is not None and (row.last_error, row.pause_reason, row.last_success_at) == ("boom", "wait", None)
    store.record_tick(replace(tick, ok=True, pages=2, error=None), succeeded=True)
    row = store.source(STREAM)
    assert row is not None and (row.last_error, row.paused_until, row.last_success_at) == (
        None, None, T0 + timedelta(seconds=1))
    with store.db.connect() as conn:
        rows = conn.execute(sa.text("SELECT ok, pages, error FROM syncd_ticks ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(False, 0, "boom"), (True, 2, None)]


def test_a_finished_window_is_reopened_for_a_workflow_it_did_not_run_for(store: Store) -> None:
    clock = FakeClock(T0)
    window = CursorSpec("workos@0-1", STREAM, Window(T0, T0 + timedelta(days=1)), workflows=frozenset({"a"}))
    lease = claim(store, "a", clock, window)
    commit_page(lease, [event(1)], "c1")
    lease.mark_done({"a"})
    lease.release()
    assert store.claim(window, owner="a", lease_seconds=LEASE, clock=clock) == Skip(SkipReason.DONE)
    row = store.source(window.key)
    assert row is not None and row.window_workflows == ["a"]
    reopened = claim(store, "a", clock, replace(window, workflows=frozenset({"a", "b"})))
    assert reopened.cursor is None  # from the window's start again
    row = store.source(window.key)
    assert row is not None and (row.state, row.progress, row.window_workflows) == ("active", 0.0, ["a"])
    reopened.mark_done({"a", "b"})
    reopened.release()
    assert store.claim(window, owner="a", lease_seconds=LEASE, clock=clock) == Skip(SkipReason.DONE)


# ---- quarantine ------------------------------------------------------------------------------------------


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def test_events_the_database_cannot_hold_are_quarantined_and_the_page_commits(store: Store) -> None:
    lease = claim(store, "a", FakeClock(T0))
    bad = [replace(event(2), data={"name": "Ada\x00Lovelace"}), replace(event(3), id="x" * 201),
           replace(event(4), data={"tags": ["ok", "half \ud800 pair"]}), replace(event(5), data={"deep": nested(300)}),
           replace(event(6), type="user\x00created")]
    no_id = Quarantined(STREAM, None, "event has no id", '{"event":"user.created"}')
    with lease.page(STREAM) as txn:
        recorded = txn.record_events([event(1), *bad, event(7)], T0)
        txn.quarantine([no_id], T0)
        txn.advance("c7", meta=None, new_events=len(recorded.new))
    assert recorded.new == {event(1).id, event(7).id}
    assert recorded.quarantined == {e.id for e in bad}
    assert count(store, "syncd_events") == 2 and count(store, "syncd_quarantine") == 6
    row = store.source(STREAM)
    assert row is not None and row.cursor == "c7"
    total, rows = SqlReads(store.db).quarantined(limit=10)
    shown = {r.event_id: r for r in rows}
    assert total == 6 and {event(2).id, event(4).id, event(5).id, None} <= set(shown)
    assert shown[event(2).id].reason == "payload holds a NUL character"
    assert shown[event(4).id].reason == "payload holds an unpaired UTF-16 surrogate"
    assert shown[event(5).id].reason.startswith("payload nested deeper than")
    assert shown[None].reason == "event has no id" and shown[None].raw == no_id.raw
    assert any(r.reason == "id longer than 200 characters (201)" for r in rows)
    for r in rows:  # what is kept is printable ASCII: no NUL, no surrogate, nothing PostgreSQL refuses
        assert r.raw.isascii() and r.raw.isprintable() and (r.event_id is None or r.event_id.isprintable())
    assert "Ada\\u0000Lovelace" in shown[event(2).id].raw

    fixed = event(2)  # fetched again after a fix: it lands and leaves the quarantine; seen again: counted once
    with lease.page(STREAM) as txn:
        again = txn.record_events([fixed, bad[1]], T0 + timedelta(seconds=5))
        txn.quarantine([no_id], T0 + timedelta(seconds=5))
        txn.advance("c8", meta=None, new_events=len(again.new))
    assert again.new == {fixed.id} and again.quarantined == {bad[1].id}
    total, rows = SqlReads(store.db).quarantined(limit=10)
    assert total == 5 and event(2).id not in {r.event_id for r in rows}
    assert {r.event_id: r.times_seen for r in rows}[None] == 2
