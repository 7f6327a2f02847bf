"""``syncd run``'s walks batch their idle ticks (issue 28, design idle_batch §4-§6; ``syncd.engine.idlebatch``):

- a walk's members are claimed by one UPDATE and the idle ones released by one executemany, with their
  meta, success and tick rows; a member with events commits and releases on its own, before the flush
  → ``test_a_walks_idle_ticks_claim_and_release_in_one_statement_each``
- a member dropped unstarted (stopping) has its claim released, with no tick row
  → ``test_a_dropped_member_releases_its_claim``
- releases held behind an unstarted member are flushed once they waited min(1 s, lease / 5), by the next
  walk; finished batches are dropped → ``test_pending_releases_are_flushed_after_their_bound``,
  ``test_a_walk_runs_its_members_through_one_batch``
- a batched 304 tick whose lease was taken over fails as an unbatched one does (recorded so)
  → ``test_a_batched_304_tick_that_lost_its_lease_fails``
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from simulators.github import GitHubSimulator
from syncd.contracts import CursorSpec, FakeClock, Page
from syncd.engine.idlebatch import TickBatch
from syncd.engine.ingest import Target
from syncd.ops.app import App
from syncd.ops.scheduler import Daemon
from syncd.store import SqlStore
from syncd.store.sqlstore import SqlLease
from syncd.store.tables import ticks
from syncd.workflows import Registry
from tests.conftest import settings_for
from tests.test_idle_release import _source_writes  # UPDATE syncd_sources statements, as sent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "ghp_idle_batch_7e21"
REPOS = ("acme/a", "acme/b", "acme/c")
KEYS = [f"github:{repo}" for repo in REPOS]


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    with GitHubSimulator(repos={repo: 2 for repo in REPOS}, seed=5, tokens=(TOKEN,)) as simulator:
        yield simulator


def _app(db_url: str, sim: GitHubSimulator, apps: list[App], clock: FakeClock) -> App:
    """The daemon's App, caught up: every repository polled once, the next polls 304s."""
    app = App.build(settings_for(db_url, GITHUB_REPOS=",".join(REPOS), GITHUB_TOKEN=TOKEN, GITHUB_BASE_URL=sim.url,
                                 SYNCD_BUILTINS="none"), registry=Registry(), clock=clock)
    apps.append(app)
    app.engine.workers = app.workers()  # as the daemon: runs are queued, not executed by the tick
    assert all(result.ok and result.new_events == 2 for result in app.tick_all())
    clock.advance(10)
    return app


def _tick_rows(app: App) -> list[tuple[str, bool]]:
    with app.db.connect() as conn:
        return [(r.source, r.ok) for r in conn.execute(sa.select(ticks.c.source, ticks.c.ok).order_by(ticks.c.id))]


def _held(app: App, key: str) -> bool:
    row = app.engine.store.source(key)
    assert row is not None
    return row.lease_owner is not None


def test_a_walks_idle_ticks_claim_and_release_in_one_statement_each(db_url: str, sim: GitHubSimulator,
                                                                   apps: list[App]) -> None:
    clock = FakeClock(T0)
    app = _app(db_url, sim, apps, clock)
    sim.advance(5)
    sim.mutate("acme/b", 1)  # b has news; a and c poll a 304
    sim.set_remaining(TOKEN, 4321)
    writes = _source_writes(app)
    batch = app.batcher(KEYS)
    assert isinstance(batch, TickBatch) and len(writes) == 1  # the walk's claim: one UPDATE for all three
    assert all(_held(app, key) for key in KEYS)
    for key in KEYS[:2]:
        batch.run(key)
        batch.finished(key)
    assert _held(app, KEYS[0]) and _held(app, KEYS[2])  # a's release waits for the flush; c never ran yet
    assert not _held(app, KEYS[1])  # b committed its page and released on its own, with its tick row
    assert _tick_rows(app)[3:] == [(KEYS[1], True)]
    assert len(writes) == 3  # + b's page commit and release
    batch.run(KEYS[2])
    batch.finished(KEYS[2])  # no member left to start: the flush
    assert len(writes) == 4  # + one executemany for a's and c's releases
    for key in (KEYS[0], KEYS[2]):
        row = app.engine.store.source(key)
        assert row is not None and row.lease_owner is None and row.last_success_at == clock.now()
        assert row.meta is not None and row.meta["ratelimit_remaining"] <= 4321
    assert sorted(_tick_rows(app)[3:]) == sorted((key, True) for key in KEYS)
    assert batch.flush_older()  # over: nothing left


def test_a_dropped_member_releases_its_claim(db_url: str, sim: GitHubSimulator, apps: list[App]) -> None:
    clock = FakeClock(T0)
    app = _app(db_url, sim, apps, clock)
    made: list[TickBatch] = []

    def batcher(names: Any) -> TickBatch | None:
        batch = app.batcher(names)
        assert batch is not None
        made.append(batch)
        return batch

    daemon = Daemon([(c.key, lambda: None) for c in app.connectors], interval=10, stop=app.stop, batcher=batcher)
    [walker] = daemon.walkers
    daemon._pool.close()  # stopping: the pool takes no more ticks (as Daemon.wait closes it)
    daemon.walk(walker)
    assert len(made) == 1 and not walker.running
    for key in KEYS:  # claimed by the walk's batch, released unticked
        row = app.engine.store.source(key)
        assert row is not None and row.lease_owner is None and row.lease_token == 2
    assert len(_tick_rows(app)) == 3  # the catch-up's only
    assert made[0].flush_older()


def test_pending_releases_are_flushed_after_their_bound(db_url: str, sim: GitHubSimulator,
                                                        apps: list[App]) -> None:
    clock = FakeClock(T0)
    app = _app(db_url, sim, apps, clock)
    batch = app.batcher(KEYS)
    assert batch is not None
    batch.run(KEYS[0])
    batch.finished(KEYS[0])  # b and c not started (behind slow ticks): a's release waits
    assert _held(app, KEYS[0])
    clock.advance(0.5)
    assert not batch.flush_older() and _held(app, KEYS[0])  # younger than min(1 s, lease / 5)
    clock.advance(0.5)
    assert not batch.flush_older()  # flushed, but b and c are still to finish
    assert not _held(app, KEYS[0]) and len(_tick_rows(app)) == 4
    batch.run(KEYS[1])
    batch.finished(KEYS[2])  # dropped unstarted: its claim goes in the flush
    batch.finished(KEYS[1])
    assert not any(_held(app, key) for key in KEYS) and len(_tick_rows(app)) == 5
    assert batch.flush_older()


def test_a_walk_runs_its_members_through_one_batch(db_url: str, sim: GitHubSimulator, apps: list[App]) -> None:
    clock = FakeClock(T0)
    app = _app(db_url, sim, apps, clock)
    made: list[TickBatch] = []
    finished = threading.Event()

    def batcher(names: Any) -> TickBatch | None:
        batch = app.batcher(names)
        assert batch is not None
        made.append(batch)
        return batch

    daemon = Daemon([(c.key, lambda: None) for c in app.connectors], interval=10, stop=app.stop, batcher=batcher,
                    wall=lambda: 1000.0)
    [walker] = daemon.walkers
    real_done = walker.done

    def done(key: str) -> None:
        real_done(key)
        if not walker.running:
            finished.set()

    walker.done = done  # type: ignore[method-assign]  # to wait on the walk's end, not to change it
    writes = _source_writes(app)
    daemon.walk(walker)
    assert finished.wait(30)
    assert len(made) == 1 and len(writes) == 2  # one claim, one release of the three (jobs unused)
    assert [ok for _, ok in _tick_rows(app)[3:]] == [True] * 3
    assert not any(_held(app, key) for key in KEYS)
    daemon.walk(walker)  # nothing due (the interval has not passed): the finished batch is dropped
    assert daemon._batches == [] and len(made) == 1
    daemon._pool.close()


def test_a_batched_304_tick_that_lost_its_lease_fails(db_url: str, sim: GitHubSimulator, apps: list[App]) -> None:
    clock = FakeClock(T0)
    app = _app(db_url, sim, apps, clock)
    sim.set_remaining(TOKEN, 999)
    other = SqlStore(app.db)
    taken: list[SqlLease] = []

    def take_over(target: Target, _page: Page) -> None:  # after the fetch, before the release
        if target.key == KEYS[0]:
            clock.advance(app.settings.lease_seconds + 1)
            lease = other.claim(CursorSpec(KEYS[0], KEYS[0]), owner="b", lease_seconds=60, clock=clock)
            assert isinstance(lease, SqlLease)
            taken.append(lease)

    app.engine.on_page = take_over
    try:
        batch = app.batcher(KEYS[:2])
        assert batch is not None
        for key in KEYS[:2]:
            batch.run(key)
            batch.finished(key)
        row = app.engine.store.source(KEYS[0])
        assert row is not None and row.lease_owner == "b" and row.last_error is not None
        assert "lease" in row.last_error.lower()
        assert row.meta is not None and row.meta.get("ratelimit_remaining") != 999  # not written
        assert sorted(_tick_rows(app)[3:]) == [(KEYS[0], False), (KEYS[1], True)]  # the other still written
        fine = app.engine.store.source(KEYS[1])
        assert fine is not None and fine.lease_owner is None and fine.meta is not None
        assert fine.meta.get("ratelimit_remaining") is not None
        taken[0].release()
    finally:
        other.close()


