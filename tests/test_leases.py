"""Leases with fencing: one owner per cursor, takeover after expiry, and a fenced-out replica commits nothing.

Each test runs on SQLite and on PostgreSQL (``db_url``) unless it needs two concurrent writers, which only
PostgreSQL has (SQLite's single writer lock makes a takeover in the middle of a page impossible).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connectors import workos
from simulators.workos import WorkOSSimulator
from syncd.contracts import Clock, CursorSpec, Event, FakeClock, Page, SourceRow
from syncd.engine import SyncEngine, Target, TickResult
from syncd.errors import LeaseLostError
from syncd.ops.app import App
from syncd.store import SqlLease, SqlStore, get_source
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for, workos_env
from tests.pgserver import PostgresServer

LEASE = 30.0
MIRROR_TYPES = tuple(f"{kind}.{verb}" for kind in ("user", "organization", "organization_membership")
                     for verb in ("created", "updated", "deleted"))

# Every execution of the probe workflow appends a row here, with no unique key: an event whose effects
# were committed twice shows up as two rows, which the run table (one row per key) could never show.
probe_metadata = sa.MetaData()
probe_effects = sa.Table(
    "probe_effects", probe_metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("replica", sa.String(200), nullable=True),
)
PROBE = "probe.effects"

Hook = Callable[[Event, Context], None]


def probe_registry(hook: Hook | None = None) -> Registry:
    """A registry with the probe workflow (on every mirrored WorkOS type); ``hook`` runs inside it first."""
    registry = Registry()

    # inline: its effects commit in the page's transaction, which is what these tests fence; runs executed
    # by the workers are fenced by their claim token instead (tests/test_run_queue.py, test_queue_crash.py).
    @registry.workflow(PROBE, on=workos.events(*MIRROR_TYPES), inline=True)
    def probe(event: Event, ctx: Context) -> None:
        if hook is not None:
            hook(event, ctx)
        ctx.db.execute(sa.insert(probe_effects).values(event_id=event.id))

    return registry


@pytest.fixture
def build() -> Iterator[Callable[..., App]]:
    """``build(db_url, sim, clock=, registry=)``: an App on the simulator with the probe table created."""
    apps: list[App] = []

    def make(db_url: str, sim: WorkOSSimulator, *, clock: Clock, registry: Registry | None = None) -> App:
        app = App.build(settings_for(db_url, **workos_env(sim), SYNCD_LEASE_SECONDS=str(int(LEASE))),
                        registry=registry if registry is not None else probe_registry(), clock=clock)
        apps.append(app)
        probe_metadata.create_all(app.db)
        return app

    yield make
    for app in apps:
        app.close()


def replica(app: App, name: str, clock: Clock, **options: object) -> SyncEngine:
    """Another replica on the same database: same workflows, its own id (and clock)."""
    return SyncEngine(SqlStore(app.db), app.registry, clock=clock, replica_id=name, lease_seconds=LEASE,
                      **options)  # type: ignore[arg-type]


def scalar(db: Engine, query: str) -> object:
    with db.connect() as conn:
        return conn.execute(sa.text(query)).scalar()


def claim(db: Engine, owner: str, clock: Clock, key: str = "workos") -> SqlLease | None:
    """Claim the cursor ``key`` of the WorkOS source as replica ``owner`` would (its row made if new); None
    if refused."""
    lease = SqlStore(db).claim(CursorSpec(key, "workos"), owner=owner, lease_seconds=LEASE, clock=clock)
    return lease if isinstance(lease, SqlLease) else None


def at(moment: datetime) -> FakeClock:
    return FakeClock(moment)


def source(db: Engine, key: str = "workos") -> SourceRow:
    with db.connect() as conn:
        row = get_source(conn, key)
    assert row is not None
    return row


def assert_exactly_once(db: Engine, event_ids: set[str]) -> None:
    """Every event: one run of each workflow, succeeded; the probe's effect committed exactly once."""
    with db.connect() as conn:
        query = sa.text("SELECT event_id, count(*) FROM probe_effects GROUP BY event_id")
        effects = conn.execute(query).all()
        runs = conn.execute(sa.text("SELECT workflow, event_id, status FROM syncd_runs")).all()
        ledger = {r[0] for r in conn.execute(sa.text("SELECT event_id FROM syncd_events"))}
    assert ledger == event_ids
    assert {e for e, n in effects} == event_ids and {n for e, n in effects} == {1}
    probe_runs = {(e, s) for w, e, s in runs if w == PROBE}
    assert probe_runs == {(e, "succeeded") for e in event_ids}


def mirrored_ids(sim: WorkOSSimulator) -> set[str]:
    return {e["id"] for e in sim.events() if e["event"] in MIRROR_TYPES}


# ---- the lease itself ----------------------------------------------------------------------------


def test_a_live_lease_is_taken_only_after_it_expires(db_url: str, build: Callable[..., App],
                                                     workos_sim: WorkOSSimulator) -> None:
    clock = FakeClock()
    app = build(db_url, workos_sim, clock=clock)
    now = clock.now()
    first = claim(app.db, "a", at(now))
    assert claim(app.db, "b", at(now + timedelta(seconds=LEASE - 1))) is None
    # not even by its own owner: replicas sharing a SYNCD_REPLICA_ID would steal it from each other
    assert claim(app.db, "a", at(now)) is None
    second = claim(app.db, "b", at(now + timedelta(seconds=LEASE + 1)))
    assert first is not None and second is not None and second.token > first.token  # the fencing token moved on
    later = now + timedelta(seconds=LEASE + 2)
    first.clock, second.clock = at(later), at(later)
    # the old owner is fenced out and cannot release the new owner's lease
    with pytest.raises(LeaseLostError), first.page("workos") as txn:
        txn.advance("x", meta=None, new_events=0)
    first.release()
    row = source(app.db)
    assert (row.lease_owner, row.lease_token, row.cursor) == ("b", second.token, None)
    with second.page("workos") as txn:
        txn.advance("y", meta=None, new_events=0)
    assert source(app.db).cursor == "y"


def test_a_second_replica_skips_a_silent_replicas_lease_and_takes_over_after_expiry(
        db_url: str, build: Callable[..., App], workos_sim: WorkOSSimulator) -> None:
    clock = FakeClock()
    app = build(db_url, workos_sim, clock=clock)
    # replica "silent" took the lease, then went quiet while staying alive (frozen, cut off): its owner lock
    # is held, so only the lease's expiry frees the cursor (a dead one's is taken at once: test_store.py)
    silent = claim(app.db, "silent", clock)
    assert silent is not None
    engine = replica(app, "b", clock)

    clock.advance(LEASE - 1)
    skipped = engine.sync(app.connectors[0])
    assert skipped.ok and skipped.skipped_reason == "lease held by another replica" and skipped.pages == 0
    assert source(app.db).cursor is None and scalar(app.db, "SELECT count(*) FROM syncd_events") == 0
    assert scalar(app.db, "SELECT count(*) FROM syncd_ticks") == 0  # a skip is not a tick

    clock.advance(2)
    taken = engine.sync(app.connectors[0])
    assert taken.ok and taken.caught_up and taken.skipped_reason is None
    assert source(app.db).lease_owner is None  # released after the tick
    assert scalar(app.db, "SELECT replica FROM syncd_ticks") == "b"
    assert_exactly_once(app.db, mirrored_ids(workos_sim))


def test_a_replica_paused_past_its_lease_commits_nothing_after_a_takeover(
        db_url: str, build: Callable[..., App], workos_sim: WorkOSSimulator) -> None:
    clock = FakeClock()
    app = build(db_url, workos_sim, clock=clock)
    connector = app.connectors[0]
    tokens: list[int] = []

    def pause_and_lose_the_lease(target: Target, page: Page) -> None:
        """After a's first page: a long pause; replica b takes the expired lease (and does nothing yet)."""
        if tokens:
            return
        clock.advance(LEASE + 1)
        lease = claim(app.db, "b", clock, key=target.key)
        assert lease is not None
        tokens.append(lease.token)

    # one page per transaction: the takeover lands between two commits
    a = replica(app, "a", clock, on_page=pause_and_lose_the_lease, group_events=1)
    result = a.sync(connector)

    assert not result.ok and result.pages == 1
    assert result.error is not None and "lease" in result.error.lower()
    first_page = connector.fetch_page(None)
    kept = {e.id for e in first_page.events}
    row = source(app.db)
    assert row.cursor == first_page.next_cursor  # the stale cursor of page 2 was not committed
    assert (row.lease_owner, row.lease_token) == ("b", tokens[0])  # a's release did not touch b's lease
    with app.db.connect() as conn:  # nor were page 2's ledger rows, runs or workflow writes
        assert {r[0] for r in conn.execute(sa.text("SELECT event_id FROM syncd_events"))} == kept
        assert {r[0] for r in conn.execute(sa.text("SELECT DISTINCT event_id FROM syncd_runs"))} == kept
        assert {r[0] for r in conn.execute(sa.text("SELECT event_id FROM probe_effects"))} == kept

    clock.advance(LEASE + 1)  # b never ran and its lease expired too; c finishes the work, exactly once
    assert replica(app, "c", clock).sync(connector).caught_up
    assert_exactly_once(app.db, mirrored_ids(workos_sim))


# ---- PostgreSQL: two writers at once -------------------------------------------------------------


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database()


@pytest.mark.postgres
def test_a_takeover_in_the_middle_of_a_page_rolls_the_whole_page_back(
        pg_url: str, build: Callable[..., App], workos_sim: WorkOSSimulator) -> None:
    clock = FakeClock()
    seen: list[str] = []
    app_box: list[App] = []

    def takeover_on_the_tenth_event(event: Event, ctx: Context) -> None:
        """While a is inside page 1's transaction, b (another connection) takes the lease and commits."""
        seen.append(event.id)
        if len(seen) == 10:
            later = clock.now() + timedelta(seconds=LEASE + 1)
            assert claim(app_box[0].db, "b", at(later)) is not None

    app = build(pg_url, workos_sim, clock=clock, registry=probe_registry(takeover_on_the_tenth_event))
    app_box.append(app)
    result = replica(app, "a", clock).sync(app.connectors[0])

    assert not result.ok and result.pages == 0 and "lease" in (result.error or "").lower()
    assert len(seen) > 10  # the page ran on to its end, then the fenced cursor UPDATE matched no row
    for table in ("syncd_events", "syncd_runs", "probe_effects", "workos_users"):
        assert scalar(app.db, f"SELECT count(*) FROM {table}") == 0, table  # nothing of the page survived
    assert source(app.db).lease_owner == "b"


@pytest.mark.postgres
def test_a_takeover_waits_for_a_fenced_commit_in_flight_and_then_fails(pg_url: str, build: Callable[..., App],
                                                                       workos_sim: WorkOSSimulator) -> None:
    """The fence check and the COMMIT are atomic against takeovers: the row lock of the fenced UPDATE."""
    clock = FakeClock()
    app = build(pg_url, workos_sim, clock=clock)
    now = clock.now()
    lease = claim(app.db, "a", clock)
    assert lease is not None
    expired = now + timedelta(seconds=LEASE + 1)  # b thinks a's lease is over (a paused, a skewed clock…)
    outcome: list[SqlLease | None] = []

    def take_over() -> None:
        outcome.append(claim(app.db, "b", at(expired)))

    lease.clock = at(expired)
    with lease.page("workos") as txn:
        # a's page: the fence check passes (renewing the lease from a's clock, at the same moment) …
        txn.advance("page-1", meta=None, new_events=0)
        taker = threading.Thread(target=take_over)
        taker.start()
        taker.join(0.5)
        assert taker.is_alive()  # … and b's takeover waits for a's COMMIT instead of slipping in before it
    taker.join(5)
    assert outcome == [None]  # then re-checks against the renewed lease: still a's
    row = source(app.db)
    assert (row.lease_owner, row.lease_token, row.cursor) == ("a", lease.token, "page-1")


@pytest.mark.postgres
def test_a_paused_replica_does_not_block_the_one_that_took_over(pg_url: str,
                                                                 build: Callable[..., App]) -> None:
    """a stalls inside its page transaction (holding that page's ledger rows) for long; the server ends
    a's transaction after two lease lengths idle (idle_in_transaction_session_timeout), so b, which took
    the lease over and processes the same page, finishes while a is still stalled."""
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    stall_seconds, a_lease = 10.0, 1.0
    b_done = threading.Event()
    b_results: list[TickResult] = []
    b_finished: list[float] = []

    def b_takes_over() -> None:
        later = FakeClock(start + timedelta(seconds=10))  # b's view: a's lease has expired
        b_results.append(replica(app, "b", later).sync(app.connectors[0]))
        b_finished.append(time.monotonic())
        b_done.set()

    with WorkOSSimulator(events=150, seed=5, api_key=WORKOS_KEY) as sim:
        def stall_on_first_event(event: Event, ctx: Context) -> None:
            if threading.current_thread() is threading.main_thread() and not b_started:
                b_started.append(threading.Thread(target=b_takes_over))
                b_started[0].start()
                b_done.wait(stall_seconds)

        b_started: list[threading.Thread] = []
        app = build(pg_url, sim, clock=FakeClock(start), registry=probe_registry(stall_on_first_event))
        a = SyncEngine(SqlStore(app.db), app.registry, clock=FakeClock(start), replica_id="a", lease_seconds=a_lease)
        began = time.monotonic()
        result = a.sync(app.connectors[0])

        assert b_done.is_set(), "b was still blocked by a's stalled transaction"
        assert b_results[0].ok and b_results[0].caught_up
        assert b_finished[0] - began < stall_seconds  # b did not wait for the end of a's stall …
        assert not result.ok  # … and a, back from it, found its transaction ended by the server
        assert_exactly_once(app.db, mirrored_ids(sim))


@pytest.mark.postgres
def test_a_page_slower_than_the_lease_keeps_it(pg_url: str, build: Callable[..., App]) -> None:
    """The keeper renews the lease while a slow page works: nobody takes it over, the page commits."""
    lease, slow_events, stall = 2.0, 10, 0.5  # a's first page takes over 5 s: more than two leases
    stop = threading.Event()
    attempts: list[TickResult] = []

    def slow(event: Event, ctx: Context) -> None:
        if threading.current_thread() is threading.main_thread() and len(slowed) < slow_events:
            slowed.append(event.id)
            time.sleep(stall)

    def b_keeps_trying() -> None:
        b = SyncEngine(SqlStore(app.db), app.registry, replica_id="b", lease_seconds=lease)
        while not stop.wait(0.25):
            attempts.append(b.sync(app.connectors[0]))

    slowed: list[str] = []
    with WorkOSSimulator(events=150, seed=5, api_key=WORKOS_KEY) as sim:
        app = build(pg_url, sim, clock=FakeClock(), registry=probe_registry(slow))
        a = SyncEngine(SqlStore(app.db), app.registry, replica_id="a", lease_seconds=lease, max_pages=1)
        b_thread = threading.Thread(target=b_keeps_trying)
        b_thread.start()
        try:
            result = a.sync(app.connectors[0])
        finally:
            stop.set()
            b_thread.join(10)

    assert len(slowed) == slow_events and len(attempts) > 5  # b kept trying while a's page was slow …
    assert result.ok and result.pages == 1  # … and never took the lease over: a's fenced commit went through


@pytest.mark.postgres
def test_a_lost_owner_lock_session_is_replaced_on_the_next_claim(pg_url: str) -> None:
    """The server ends the owner-lock session (a restart, an admin): releasing fails softly (the server
    dropped the lock with the session), and the next claim opens a new session."""
    from syncd.store.connect import create_engine
    from syncd.store.owners import OWNER_NAMESPACE
    from syncd.store.schema import migrate

    db = create_engine(pg_url)
    migrate(db)
    store, clock = SqlStore(db), FakeClock()
    try:
        lease = store.claim(CursorSpec("workos", "workos"), owner="a", lease_seconds=LEASE, clock=clock)
        assert isinstance(lease, SqlLease)
        with db.connect() as conn:
            [pid] = conn.execute(sa.text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = :s"),
                                 {"s": OWNER_NAMESPACE}).scalars()
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
        lease.release()  # the row is released; the lock went with the session
        assert source(db).lease_owner is None
        again = store.claim(CursorSpec("workos", "workos"), owner="a", lease_seconds=LEASE, clock=clock)
        assert isinstance(again, SqlLease) and again.token == lease.token + 1
        with db.connect() as conn:
            held = conn.execute(sa.text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = :s"),
                                {"s": OWNER_NAMESPACE}).scalars().all()
        assert len(held) == 1 and held[0] != pid  # a new session holds the new lease's lock
        again.release()
    finally:
        store.close()
        db.dispose()
