"""An idle worker pool waits for a wake-up or the next due run, not a one-second poll (issue 28, session 10).

- the dispatcher's sleep: until the next run falls due, at most the idle poll → ``test_dispatch_wait``
- on SQLite the idle poll is ``IDLE_POLL_SECONDS``; on PostgreSQL (NOTIFY) it stays ``POLL_SECONDS``
  → ``test_the_idle_poll_is_long_on_sqlite_only``
- a sleep due in 3 s is waited for 3 s, not the 10 s fallback, and runs once due
  → ``test_a_run_due_in_three_seconds_bounds_the_wait``
- a run enqueued by another process (nothing wakes this pool) is picked up at the fallback poll
  → ``test_a_run_queued_by_another_process_is_picked_up``
- a page of events seen before that queues runs (a workflow added since, the cursor reset) wakes the pool
  → ``test_runs_queued_for_events_seen_before_wake_the_pool``
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from connectors import workos
from simulators.workos import DEFAULT_NOW, WorkOSSimulator
from syncd.contracts import CursorSpec, Event, FakeClock
from syncd.engine.workers import IDLE_POLL_SECONDS, POLL_SECONDS, WorkerPool, dispatch_wait
from syncd.ops.app import App
from syncd.store.heal import reset_cursor
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for, sim_key


@pytest.fixture(scope="module")
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=6, seed=5, api_key=WORKOS_KEY) as simulator:
        yield simulator


def build(db_url: str, sim: WorkOSSimulator, registry: Registry, apps: list[App], clock: FakeClock) -> App:
    app = App.build(settings_for(db_url, SYNCD_BUILTINS="none", WORKOS_API_KEY=sim_key(sim), WORKOS_BASE_URL=sim.url,
                                 SYNCD_WORKERS="2"), registry=registry, clock=clock)
    apps.append(app)
    return app


@pytest.mark.parametrize(("due_in", "idle", "wait"), [
    (math.inf, 10.0, 10.0), (3.0, 10.0, 3.0), (0.0, 10.0, 0.01), (-5.0, 10.0, 0.01), (30.0, 1.0, 1.0)])
def test_dispatch_wait(due_in: float, idle: float, wait: float) -> None:
    assert dispatch_wait(due_in, idle) == wait


def test_the_idle_poll_is_long_on_sqlite_only(db_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    registry = Registry()

    @registry.workflow("noted", on=workos.events("user.created"))
    def noted(event: Event, ctx: Context) -> None:
        pass

    app = build(db_url, sim, registry, apps, FakeClock(DEFAULT_NOW))
    expected = POLL_SECONDS if db_url.startswith("postgresql") else IDLE_POLL_SECONDS
    assert app.workers().idle_poll_seconds == expected


def _started(app: App, **kwargs: float) -> tuple[WorkerPool, queue.Queue[float], threading.Event]:
    engine = app.engine
    pool = WorkerPool(engine.store, app.registry, engine.executor, workers=2, clock=engine.clock,
                      lease_seconds=engine.lease_seconds, replica_id=engine.replica_id, stop=app.stop, **kwargs)
    waits: queue.Queue[float] = queue.Queue()
    finished = threading.Event()
    pool.on_wait = waits.put
    pool.on_finished = lambda _record: finished.set()
    return pool, waits, finished


def test_a_run_due_in_three_seconds_bounds_the_wait(sqlite_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    woke: list[str] = []
    registry = Registry()

    def woken(event_id: str) -> str:
        woke.append(event_id)
        return "done"

    @registry.workflow("nap", on=workos.events("user.created"))
    def nap(event: Event, ctx: Context) -> None:
        ctx.sleep("nap", timedelta(seconds=3))
        ctx.step("after", lambda: woken(event.id))

    app = build(sqlite_url, sim, registry, apps, clock)
    pool, waits, _ = _started(app)
    app.engine.workers = pool  # the tick only queues; the pool, started, runs them
    [tick] = app.tick_all()
    assert tick.ok and tick.new_events > 0
    pool.start()
    try:
        # The runs sleep; then the idle dispatcher waits for their wake-up (3 s on the pool's clock), not 10 s.
        for _ in range(50):
            if (wait := waits.get(timeout=30)) == pytest.approx(3.0, abs=0.5):
                break
            assert wait <= IDLE_POLL_SECONDS
        else:
            pytest.fail("the dispatcher never waited for the sleeping runs' wake-up")
        assert woke == []
        clock.advance(3)
        pool.wake()  # stands for the 3 s of real time the dispatcher sleeps (the clock is the test's)
        while len(woke) < tick.new_events:
            assert waits.get(timeout=30) <= IDLE_POLL_SECONDS
    finally:
        pool.close()
    assert len(set(woke)) == tick.new_events


def test_a_run_queued_by_another_process_is_picked_up(sqlite_url: str, sim: WorkOSSimulator,
                                                      apps: list[App]) -> None:
    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    ran: list[str] = []
    registry = Registry()

    @registry.workflow("noted", on=workos.events("user.created"))
    def noted(event: Event, ctx: Context) -> None:
        ran.append(event.id)

    daemon = build(sqlite_url, sim, registry, apps, clock)
    pool, waits, finished = _started(daemon, idle_poll_seconds=0.2)  # the fallback, made short for the test
    pool.start()
    try:
        assert waits.get(timeout=30) == pytest.approx(0.2)  # idle: nothing queued, nothing due
        other = build(sqlite_url, sim, registry, apps, clock)  # another process: its page wakes no one here
        other.engine.workers = other.workers()  # it only queues (never started)
        [tick] = other.tick_all()
        assert tick.ok and tick.new_events > 0 and ran == []
        assert finished.wait(30)  # claimed by the idle pool at its fallback poll
    finally:
        pool.close()


def test_runs_queued_for_events_seen_before_wake_the_pool(sqlite_url: str, sim: WorkOSSimulator,
                                                         apps: list[App]) -> None:
    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    first, second = Registry(), Registry()
    ran = threading.Event()

    @first.workflow("noted", on=workos.events("user.created"))
    def noted(event: Event, ctx: Context) -> None:
        pass

    kept = first.get("noted")
    assert kept is not None
    second.add(kept)

    @second.workflow("added", on=workos.events("user.created"))
    def added(event: Event, ctx: Context) -> None:
        ran.set()

    before = build(sqlite_url, sim, first, apps, clock)
    before.engine.workers = before.workers()  # queues only
    [tick] = before.tick_all()
    assert tick.ok and tick.new_events > 0
    [connector] = before.connectors
    reset_cursor(before.db, CursorSpec(connector.key, connector.key),
                 connector.cursor_at(DEFAULT_NOW - timedelta(days=400)),  # type: ignore[attr-defined]
                 now=clock.now(), note="test")
    after = build(sqlite_url, sim, second, apps, clock)
    pool, waits, _ = _started(after, idle_poll_seconds=60)  # no fallback poll within the test
    after.engine.workers = pool
    pool.start()
    try:
        while waits.get(timeout=30) < 60:  # the first's runs, due at start, run; then the pool is idle
            pass
        [again] = after.tick_all()
        assert again.ok and again.new_events == 0 and again.events > 0
        assert ran.wait(30)  # woken by the page, not by the 60 s poll
    finally:
        pool.close()
