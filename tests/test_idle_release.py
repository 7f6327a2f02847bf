"""An idle poll's empty page needs no transaction of its own (issue 28, session 10).

- its cursor move and meta go with the lease's release, in one UPDATE fenced on the token; the tick is
  recorded in the same transaction → ``test_a_held_advance_is_written_by_the_release``
- fenced out (the lease taken over since), the release writes none of it, nor the tick, and frees the
  owner lock → ``test_a_held_advance_of_a_lost_lease_is_not_written``
- a 304 tick persists the provider's rate-limit meta, moves no cursor, and writes ``syncd_sources``
  twice (claim, release) instead of four times → ``test_a_304_tick_persists_its_meta_in_the_release``
- a tick whose held move is fenced out fails, as a fenced page does
  → ``test_a_304_tick_that_lost_its_lease_fails``
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from simulators.github import GitHubSimulator
from syncd.contracts import CursorSpec, FakeClock, Page, TickRecord
from syncd.engine.ingest import Target
from syncd.errors import LeaseLostError
from syncd.ops.app import App
from syncd.store import SqlStore
from syncd.store.sqlstore import SqlLease
from syncd.store.tables import ticks
from syncd.workflows import Registry
from tests.conftest import settings_for

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "ghp_idle_release_5c31"


def _tick(ok: bool = True) -> TickRecord:
    return TickRecord("src", "a", T0, T0 + timedelta(seconds=1), ok, 1, 0, 0, 0, 0, 0, None, None)


def test_a_held_advance_is_written_by_the_release(store: SqlStore) -> None:
    clock = FakeClock(T0)
    spec = CursorSpec("src", "src", None, None)
    lease = store.claim(spec, owner="a", lease_seconds=60, clock=clock)
    assert isinstance(lease, SqlLease)
    lease.advance_on_release("c1", {"remaining": 5})
    row = store.source("src")
    assert row is not None and row.cursor is None and row.meta is None  # held, not written yet
    lease.release(_tick(), succeeded=True)
    row = store.source("src")
    assert row is not None and row.cursor == "c1" and row.meta == {"remaining": 5} and row.lease_owner is None
    assert row.last_success_at == T0 + timedelta(seconds=1) and row.lease_expires_at is None
    again = store.claim(spec, owner="a", lease_seconds=60, clock=clock)
    assert isinstance(again, SqlLease) and again.cursor == "c1"
    again.advance_on_release(None, {"remaining": 4})  # a 304: the cursor stays, the meta is renewed
    again.release()
    row = store.source("src")
    assert row is not None and row.cursor == "c1" and row.meta == {"remaining": 4}
    with store.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ticks)).scalar() == 1


def test_a_held_advance_of_a_lost_lease_is_not_written(store: SqlStore) -> None:
    clock = FakeClock(T0)
    spec = CursorSpec("src", "src", None, None)
    stale = store.claim(spec, owner="a", lease_seconds=60, clock=clock)
    assert isinstance(stale, SqlLease)
    stale.advance_on_release("stale", {"remaining": 1})
    clock.advance(120)
    other = SqlStore(store.db)  # another replica takes the expired lease over
    try:
        taker = other.claim(spec, owner="b", lease_seconds=60, clock=clock)
        assert isinstance(taker, SqlLease) and taker.token == stale.token + 1
        with pytest.raises(LeaseLostError):
            stale.release(_tick(), succeeded=True)
        row = store.source("src")
        assert row is not None and row.cursor is None and row.meta is None and row.lease_owner == "b"
        assert row.last_success_at is None
        with store.db.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(ticks)).scalar() == 0
        assert stale.owner_lock is None or not stale.owner_lock.held()
        taker.release()
    finally:
        other.close()


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    with GitHubSimulator(repos={"acme/idle": 3}, seed=3, tokens=(TOKEN,)) as simulator:
        yield simulator


def _app(db_url: str, sim: GitHubSimulator, apps: list[App], clock: FakeClock) -> App:
    app = App.build(settings_for(db_url, GITHUB_REPOS="acme/idle", GITHUB_TOKEN=TOKEN, GITHUB_BASE_URL=sim.url,
                                 SYNCD_BUILTINS="none"), registry=Registry(), clock=clock)
    apps.append(app)
    app.engine.workers = app.workers()  # as the daemon: the release goes with the tick's record
    return app


def _source_writes(app: App) -> list[str]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE SYNCD_SOURCES"):
            seen.append(statement)

    sa.event.listen(app.db, "before_cursor_execute", note)
    return seen


def test_a_304_tick_persists_its_meta_in_the_release(db_url: str, sim: GitHubSimulator, apps: list[App]) -> None:
    clock = FakeClock(T0)
    app = _app(db_url, sim, apps, clock)
    [first] = app.tick_all()
    assert first.ok and first.new_events == 3
    before = app.engine.store.source("github:acme/idle")
    assert before is not None and before.meta is not None
    sim.set_remaining(TOKEN, 1234)
    writes = _source_writes(app)
    clock.advance(10)
    [idle] = app.tick_all()
    assert idle.ok and idle.pages == 1 and idle.events == 0 and sim.requests[-1][1] == 304
    row = app.engine.store.source("github:acme/idle")
    assert row is not None and row.cursor == before.cursor and row.lease_owner is None
    assert row.meta is not None and row.meta["ratelimit_remaining"] == 1234
    assert row.last_success_at == T0 + timedelta(seconds=10)
    assert len(writes) == 2  # the claim's and the release's (the page transaction's and the success's are folded)


def test_a_304_tick_that_lost_its_lease_fails(db_url: str, sim: GitHubSimulator, apps: list[App]) -> None:
    clock = FakeClock(T0)
    app = _app(db_url, sim, apps, clock)
    assert app.tick_all()[0].ok
    sim.set_remaining(TOKEN, 999)
    other = SqlStore(app.db)
    taken: list[SqlLease] = []

    def take_over(_target: Target, _page: Page) -> None:  # after the fetch, before the release
        clock.advance(app.settings.lease_seconds + 1)
        lease = other.claim(CursorSpec("github:acme/idle", "github:acme/idle", None, None), owner="b",
                            lease_seconds=60, clock=clock)
        assert isinstance(lease, SqlLease)
        taken.append(lease)

    app.engine.on_page = take_over
    try:
        [tick] = app.tick_all()
        assert not tick.ok and tick.error is not None and "lease" in tick.error.lower()
        row = app.engine.store.source("github:acme/idle")
        assert row is not None and row.lease_owner == "b" and row.last_error == tick.error
        assert row.meta is not None and row.meta.get("ratelimit_remaining") != 999  # not written
        with app.db.connect() as conn:
            oks = conn.execute(sa.select(ticks.c.ok).order_by(ticks.c.id)).scalars().all()
        assert oks == [True, False]
        taken[0].release()
    finally:
        other.close()

