"""Per-page batches and prefetching (issue 8's speed work) keep every guarantee of the per-event path.

- ``apply_snapshots`` (one batch of mirror writes) leaves the tables exactly as ``apply_snapshot`` on each
  item in order does: thousands of seeded random sequences with ties, deletes, re-creations, stale items,
  NULL versions and pre-existing rows and tombstones, on SQLite and PostgreSQL.
- A batch handler that raises is rolled back and its events go one by one through the per-event handler,
  so a bad event fails alone.
- With a slow provider the next page is fetched while one commits; the result is still exact, a stop
  between pages loses nothing, and a prefetched page's request is traced under its own ``page.fetch``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from simulators.workos import Faults, WorkOSSimulator
from syncd.contracts import Event, Page
from syncd.engine import PREFETCH_AFTER_SECONDS, Target
from syncd.ops.app import App
from syncd.store.db import UTCDateTime, create_engine
from syncd.store.schema import migrate
from syncd.store.tables import runs, tombstones
from syncd.workflows import BatchContext, Context, Registry, Trigger
from syncd.workflows.mirror import apply_snapshot, apply_snapshots, plan_snapshots
from tests.conftest import WORKOS_KEY, workos_env
from tests.test_core_sync import MIRROR_TYPES, assert_mirror_exact, requested_ids, runs_by_event, sync_until_caught_up

MakeApp = Callable[..., App]

# A mirror table of our own, with a nullable version, to cover what the built-in ones cannot hold.
things = sa.Table(
    "test_batch_things", sa.MetaData(),
    sa.Column("id", sa.String(20), primary_key=True),
    sa.Column("name", sa.String(50), nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=True),
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def stamp(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def random_case(rng: random.Random) -> tuple[list[dict[str, Any]], list[tuple[str, datetime]],
                                             list[tuple[dict[str, Any], bool]]]:
    """Stored rows, stored tombstones and a batch of items over a few ids and few versions (many ties)."""
    ids = [f"t{i}" for i in range(rng.randint(1, 5))]
    stored = [{"id": i, "name": f"old-{i}", "updated_at": None if rng.random() < 0.15 else stamp(rng.randint(0, 6))}
              for i in ids if rng.random() < 0.5]
    dead = [(i, stamp(rng.randint(0, 6))) for i in ids if rng.random() < 0.3]
    items = [({"id": rng.choice(ids), "name": f"n{n}", "updated_at": stamp(rng.randint(0, 8))}, rng.random() < 0.3)
             for n in range(rng.randint(1, 12))]
    return stored, dead, items


def table_state(conn: sa.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rows = [tuple(r) for r in conn.execute(sa.select(things).order_by(things.c.id))]
    dead = [tuple(r) for r in conn.execute(sa.select(tombstones.c.object_id, tombstones.c.version)
                                           .where(tombstones.c.kind == things.name).order_by(tombstones.c.object_id))]
    return rows, dead


@pytest.fixture
def mirror_db(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    migrate(engine)
    things.create(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_batch_of_snapshots_ends_exactly_where_one_by_one_does(mirror_db: Engine) -> None:
    rng = random.Random(8)
    cases = 400 if mirror_db.dialect.name == "sqlite" else 150
    differences = []
    for case in range(cases):
        stored, dead, items = random_case(rng)
        results = []
        for batched in (False, True):
            with mirror_db.connect() as conn, conn.begin() as txn:
                if stored:
                    conn.execute(sa.insert(things), stored)
                if dead:
                    conn.execute(sa.insert(tombstones), [{"kind": things.name, "object_id": i, "version": v}
                                                         for i, v in dead])
                if batched:
                    applied = apply_snapshots(conn, things, [(dict(r), d) for r, d in items], kind=things.name)
                else:
                    applied = sum(apply_snapshot(conn, things, dict(r), kind=things.name, deleted=d)
                                  for r, d in items)
                results.append((table_state(conn), applied))
                txn.rollback()
        if results[0] != results[1]:
            differences.append((case, stored, dead, items, results))
    assert not differences, differences[:2]


def test_the_plan_writes_each_object_once() -> None:
    rows = [({"id": "a", "updated_at": stamp(i)}, False) for i in range(5)]
    plan = plan_snapshots([*rows, ({"id": "a", "updated_at": stamp(9)}, True)], {"a": stamp(0)}, {})
    assert plan.upserts == [] and plan.deletes == [("a", stamp(9))] and plan.tombstones == [("a", stamp(9))]
    plan = plan_snapshots(rows, {}, {"a": stamp(2)})  # items not newer than the tombstone are skipped
    assert plan.upserts == [{"id": "a", "updated_at": stamp(4)}] and plan.applied == 2


# ---- a failing batch falls back to one event at a time --------------------------------------------------


class Recorder:
    """A workflow with a batch handler that fails on ``bad`` events, and a per-event one that fails on them too."""

    def __init__(self, bad: set[str]) -> None:
        self.bad = bad
        self.batches: list[int] = []
        self.singles: list[str] = []

    def one(self, event: Event, ctx: Context) -> None:
        self.singles.append(event.id)
        if event.id in self.bad:
            raise ValueError(f"bad event {event.id}")
        ctx.db.execute(sa.text("INSERT INTO seen (event_id, via) VALUES (:e, 'one')"), {"e": event.id})

    def many(self, events: Sequence[Event], ctx: BatchContext) -> None:
        self.batches.append(len(events))
        ctx.connection.execute(sa.text("INSERT INTO seen (event_id, via) VALUES (:e, 'many')"),
                               [{"e": e.id} for e in events])
        if any(e.id in self.bad for e in events):  # after writing: those writes must roll back
            raise ValueError("a bad event in the batch")


def seen(db: Engine) -> dict[str, str]:
    with db.connect() as conn:
        return {r.event_id: r.via for r in conn.execute(sa.text("SELECT event_id, via FROM seen"))}


def test_a_failing_batch_rolls_back_and_runs_its_events_one_by_one(db_url: str, make_app: MakeApp,
                                                                  workos_sim: WorkOSSimulator) -> None:
    user_events = [e["id"] for e in workos_sim.events() if e["event"] == "user.created"]
    bad = {user_events[1], user_events[-1]}
    recorder = Recorder(bad)
    registry = Registry()
    registry.workflow("test.users", on=Trigger(provider="workos", types=frozenset({"user.created"})),
                      retries=1, batch=recorder.many)(recorder.one)
    app = make_app(db_url, registry=registry, SYNCD_BUILTINS="none", **workos_env(workos_sim))
    with app.db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE seen (event_id VARCHAR(40) PRIMARY KEY, via VARCHAR(10))"))

    [result] = app.tick_all()

    assert result.ok and result.runs_failed == 2 and result.runs_ok == len(user_events) - 2
    # the pages holding a bad event went one by one; the others took one batch each
    assert sorted(recorder.singles) == sorted(e for e in user_events
                                              if any(e in page for page in pages_with(workos_sim, bad)))
    assert sum(recorder.batches) == len(user_events)
    stored = seen(app.db)
    assert set(stored) == set(user_events) - bad  # the failed batch's writes (bad events' too) rolled back
    assert {stored[e] for e in recorder.singles if e not in bad} == {"one"}
    by_event = runs_by_event(app.db)
    assert {by_event[e]["test.users"] for e in bad} == {"dead"}
    assert {by_event[e]["test.users"] for e in set(user_events) - bad} == {"succeeded"}


def pages_with(sim: WorkOSSimulator, wanted: set[str]) -> list[set[str]]:
    """The requested pages (100 events each) that contain one of ``wanted``."""
    ids = [e["id"] for e in sim.events() if e["event"] == "user.created"]
    pages = [set(ids[i:i + 100]) for i in range(0, len(ids), 100)]
    return [page for page in pages if page & wanted]


def test_batch_workflows_run_before_per_event_ones_in_a_transaction(sqlite_url: str, make_app: MakeApp,
                                                            workos_sim: WorkOSSimulator) -> None:
    """An inline per-event workflow reading a built-in mirror sees its whole transaction already applied to it.
    (A queued one runs after the page commits: it sees the mirror as of then, at least as new.)"""
    missing: list[str] = []

    def check(event: Event, ctx: Context) -> None:
        found = ctx.db.execute(sa.text("SELECT count(*) FROM workos_users WHERE id = :i"),
                               {"i": event.data["id"]}).scalar_one()
        if not found:
            missing.append(event.id)

    registry = Registry()
    registry.workflow("test.reader", on=Trigger(provider="workos", types=frozenset({"user.created"})),
                      inline=True)(check)
    app = make_app(sqlite_url, registry=registry, **workos_env(workos_sim), SYNCD_GROUP_EVENTS="300",
                   SYNCD_GROUP_SECONDS="60")  # three pages per transaction
    sync_until_caught_up(app)
    # only users deleted later in their own transaction may be missing: the mirror applied that delete too
    events = workos_sim.events()
    page_of = {e["id"]: i // 300 for i, e in enumerate(e for e in events if e["event"] in MIRROR_TYPES)}
    deleted_on = {(e["data"]["id"], page_of[e["id"]]) for e in events if e["event"] == "user.deleted"}
    by_id = {e["id"]: e for e in events}
    assert all((by_id[m]["data"]["id"], page_of[m]) in deleted_on for m in missing), missing
    assert len(missing) < sum(1 for e in events if e["event"] == "user.created")


# ---- prefetching the next page ---------------------------------------------------------------------------


@pytest.fixture
def slow_sim() -> Iterator[WorkOSSimulator]:
    """A provider slow enough (like a real one over the internet) for the engine to prefetch."""
    with WorkOSSimulator(events=600, seed=11, api_key=WORKOS_KEY,
                         faults=Faults(latency=2 * PREFETCH_AFTER_SECONDS)) as simulator:
        yield simulator


class ThreadRecorder:
    """A Connector that delegates to another one (its ``prefetch`` flag and key included) and records
    which threads ask it for pages: what the engine sees through the Connector contract, nothing else."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: set[str] = set()

    def fetch_page(self, cursor: str | None, window: Any = None) -> Page:
        self.threads.add(threading.current_thread().name)
        return cast(Page, self.inner.fetch_page(cursor, window))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def fetching_threads(app: App) -> set[str]:
    """The names of the threads that fetch pages for ``app`` (filled as it syncs)."""
    recorder = ThreadRecorder(app.connectors[0])
    app.connectors[0] = recorder  # the App ticks its connectors list: the recorder is the source now
    return recorder.threads


def test_prefetching_a_slow_provider_is_exact(db_url: str, make_app: MakeApp, slow_sim: WorkOSSimulator) -> None:
    # several transactions: prefetching starts after the first commits
    app = make_app(db_url, **workos_env(slow_sim), SYNCD_GROUP_EVENTS="300")
    fetchers = fetching_threads(app)
    [result] = app.tick_all()
    assert result.ok and result.caught_up
    # PostgreSQL prefetches; SQLite never does (its one write lock would starve other connections)
    prefetched = any(name.startswith("prefetch:") for name in fetchers)
    assert prefetched == (app.db.dialect.name == "postgresql"), fetchers
    assert_mirror_exact(app.db, slow_sim)
    # one request per page, none wasted: the last page says there is no more, so nothing follows it
    assert len(slow_sim.requests) == result.pages == -(-len(requested_ids(slow_sim)) // 100)


def test_a_stop_between_pages_drops_the_prefetched_page_and_loses_nothing(
        db_url: str, make_app: MakeApp, slow_sim: WorkOSSimulator) -> None:
    app = make_app(db_url, **workos_env(slow_sim), SYNCD_GROUP_EVENTS="1")  # one page per transaction
    committed: list[str | None] = []

    def stop_after_two(target: Target, page: Page) -> None:
        committed.append(page.next_cursor)
        if len(committed) == 2:
            app.engine.stop.set()  # SIGTERM: finish the page, start no other

    app.engine.on_page = stop_after_two
    [first] = app.tick_all()
    assert first.ok and first.pages == 2 and not first.caught_up
    # on PostgreSQL the next pages were already being fetched (at most 5 waiting, plus one on its way):
    # dropped, not committed
    if app.db.dialect.name == "postgresql":
        deadline = time.monotonic() + 5  # a dropped request still lands at the provider, a latency later
        while len(slow_sim.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 3 <= len(slow_sim.requests) <= 2 + 5 + 1
    else:
        assert len(slow_sim.requests) == 2
    with app.db.connect() as conn:
        cursor = conn.execute(sa.text("SELECT cursor FROM syncd_sources WHERE key = 'workos'")).scalar_one()
        assert cursor == committed[1]
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == 200
    app.engine.stop.clear()
    app.engine.on_page = None
    sync_until_caught_up(app)
    assert_mirror_exact(app.db, slow_sim)
    assert sorted(runs_by_event(app.db)) == sorted(requested_ids(slow_sim))


@pytest.mark.postgres
def test_a_stop_does_not_wait_for_a_prefetch_nobody_will_use(pg_server: Any, make_app: MakeApp) -> None:
    """SIGTERM while the next page is still on its way: the tick ends once its commit is done, without
    waiting for that request (which a slow or hung provider may hold for the whole HTTP timeout)."""
    with WorkOSSimulator(events=400, seed=11, api_key=WORKOS_KEY, faults=Faults(latency=3.0)) as very_slow:
        app = make_app(pg_server.create_database(), **workos_env(very_slow))
        stopped: list[float] = []

        def stop_after_first(target: Target, page: Page) -> None:
            app.engine.stop.set()
            stopped.append(time.monotonic())

        app.engine.on_page = stop_after_first
        [result] = app.tick_all()
        returned = time.monotonic()
        assert result.ok and result.pages == 1 and not result.caught_up
        assert returned - stopped[0] < 1.5  # the prefetched page would take 3 s more
        # and the process will not wait for it at exit either: its thread is a daemon
        fetching = [t for t in threading.enumerate() if t.name.startswith("prefetch:")]
        assert fetching and all(t.daemon for t in fetching)


@pytest.mark.postgres
def test_prefetching_can_be_switched_off(pg_server: Any, make_app: MakeApp, slow_sim: WorkOSSimulator) -> None:
    app = make_app(pg_server.create_database(), SYNCD_PREFETCH_PAGES="0", **workos_env(slow_sim))
    fetchers = fetching_threads(app)
    [result] = app.tick_all()
    assert result.ok and result.caught_up and fetchers == {threading.main_thread().name}
    assert_mirror_exact(app.db, slow_sim)
