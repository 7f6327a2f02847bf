"""The run queue's flow control, end to end through real syncs (issue #20): runs of one key never overlap
and keep event order, a workflow's concurrency limit holds across replicas, a sleeping run resumes on
whichever replica is free, and ``syncd once`` leaves every run it queued executed. SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.workos import WorkOSSimulator
from simulators.workos.api import DEFAULT_NOW
from syncd.contracts import Event, FakeClock
from syncd.ops.app import App
from syncd.ops.once import run_once
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for, sim_key

EVENTS = 120
USER_EVENTS = ("user.created", "user.updated", "user.deleted")


@pytest.fixture(scope="module")
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=EVENTS, seed=5, api_key=WORKOS_KEY) as simulator:
        yield simulator


def build(db_url: str, sim: WorkOSSimulator, registry: Registry, apps: list[App], *, clock: FakeClock | None = None,
          **env: str) -> App:
    app = App.build(settings_for(db_url, SYNCD_BUILTINS="none", WORKOS_API_KEY=sim_key(sim), WORKOS_BASE_URL=sim.url,
                                 **env), registry=registry, clock=clock)
    apps.append(app)
    return app


class InFlight:
    """Counts runs in flight (per key), the most seen at once, and the order runs started in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = defaultdict(int)
        self.most: dict[str, int] = defaultdict(int)
        self.started: dict[str, list[str]] = defaultdict(list)

    def run(self, key: str, event_id: str, seconds: float = 0.005) -> None:
        with self.lock:
            self.now[key] += 1
            self.most[key] = max(self.most[key], self.now[key])
            self.started[key].append(event_id)
        time.sleep(seconds)  # long enough for overlapping runs to be seen overlapping
        with self.lock:
            self.now[key] -= 1


def bucket(event: Event) -> str:
    return f"k{sum(map(ord, event.id)) % 3}"


def test_runs_with_one_key_never_overlap_and_keep_event_order(db_url: str, sim: WorkOSSimulator,
                                                              apps: list[App]) -> None:
    seen = InFlight()
    registry = Registry()

    @registry.workflow("ordered", on=workos.events(*USER_EVENTS), key=bucket)
    def ordered(event: Event, ctx: Context) -> None:
        seen.run(bucket(event), event.id)

    report = run_once(build(db_url, sim, registry, apps, SYNCD_WORKERS="8"))
    delivered = [e["id"] for e in sim.events() if e["event"] in USER_EVENTS]  # the provider's (cursor's) order
    assert report.exit_code == 0 and report.sources[0].runs_ok == len(delivered)
    assert set(seen.most) == {"k0", "k1", "k2"} and all(n == 1 for n in seen.most.values()), dict(seen.most)
    for key, started in seen.started.items():
        assert started == [i for i in delivered if f"k{sum(map(ord, i)) % 3}" == key], key


def test_a_concurrency_limit_holds_across_two_replicas(db_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    seen = InFlight()
    registry = Registry()

    @registry.workflow("limited", on=workos.events(*USER_EVENTS), concurrency=2)
    def limited(event: Event, ctx: Context) -> None:
        seen.run("all", event.id, 0.01)

    first = build(db_url, sim, registry, apps, SYNCD_WORKERS="6")
    second = build(db_url, sim, registry, apps, SYNCD_WORKERS="6")
    first.engine.workers = first.workers()  # the tick only queues; the two replicas' pools run the runs
    [tick] = first.tick_all()
    runs = len([e for e in sim.events() if e["event"] in USER_EVENTS])
    assert tick.ok and tick.new_events == runs
    pools = [first.workers(), second.workers()]
    threads = [threading.Thread(target=pool.drain) for pool in pools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert seen.most["all"] == 2 and len(seen.started["all"]) == runs  # never a third in flight
    with first.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM syncd_runs WHERE status = 'succeeded'")).scalar() == runs


def test_a_sleeping_run_resumes_on_whichever_replica_is_free(db_url: str, sim: WorkOSSimulator,
                                                             apps: list[App]) -> None:
    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    after: list[tuple[str, int]] = []
    registry = Registry()

    @registry.workflow("nap", on=workos.events("user.created"), retries=2)
    def nap(event: Event, ctx: Context) -> None:
        ctx.sleep("nap", timedelta(minutes=30))
        ctx.step("after", lambda: after.append((event.id, ctx.attempt)) or "done")

    first = build(db_url, sim, registry, apps, clock=clock, SYNCD_WORKERS="4")
    report = run_once(first)
    sleepers = report.sources[0].waiting
    assert sleepers > 0 and after == []
    first.close()
    apps.remove(first)
    clock.advance(31 * 60)
    second = build(db_url, sim, registry, apps, clock=clock, SYNCD_WORKERS="4")
    report = run_once(second)
    assert report.exit_code == 0 and report.sources[0].waiting == 0
    assert len(after) == sleepers and len({e for e, _ in after}) == sleepers  # each once, on the other one
    assert {attempt for _, attempt in after} == {1}  # a sleep is not a retry


def test_ctx_db_writes_commit_with_the_run_and_a_failure_rolls_them_back(db_url: str, sim: WorkOSSimulator,
                                                                         apps: list[App]) -> None:
    registry = Registry()

    @registry.workflow("writes", on=workos.events("user.created"), retries=1)
    def writes(event: Event, ctx: Context) -> None:
        ctx.db.execute(sa.text("INSERT INTO seen (event_id) VALUES (:e)"), {"e": event.id})
        ctx.step("call", lambda: 1)  # a step after a write: a checkpoint, the write redone once
        if event.id.endswith(("6", "N", "R")):
            raise RuntimeError("refused")

    app = build(db_url, sim, registry, apps)
    with app.db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE seen (event_id VARCHAR(100) PRIMARY KEY)"))
    report = run_once(app)
    created = [e["id"] for e in sim.events() if e["event"] == "user.created"]
    failing = [i for i in created if i.endswith(("6", "N", "R"))]
    assert failing and report.sources[0].runs_failed == len(failing)
    with app.db.connect() as conn:
        rows: Any = {r[0] for r in conn.execute(sa.text("SELECT event_id FROM seen"))}
        statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM syncd_runs GROUP BY status")).all())
    assert rows == set(created) - set(failing)  # each success's write once, no failure's
    assert statuses == {"succeeded": len(created) - len(failing), "dead": len(failing)}


def test_status_and_metrics_show_the_queue(db_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    from syncd.ops.metrics import collect_metrics, render_metrics
    from syncd.ops.status import collect, render

    registry = Registry()

    @registry.workflow("later", on=workos.events("user.created"))
    def later(event: Event, ctx: Context) -> None:
        pass

    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    app = build(db_url, sim, registry, apps, clock=clock)
    app.engine.workers = app.workers()  # queue only; nothing drains
    [tick] = app.tick_all()
    created = len([e for e in sim.events() if e["event"] == "user.created"])
    assert tick.ok and created > 1
    lock = app.engine.store.hold_owner("w1")
    clock.advance(90)
    claimed = app.engine.store.claim_runs("w1", clock.now(), lease_seconds=60, limit=1, workflows={"later"},
                                          limited={})
    assert len(claimed) == 1 and lock is not None
    queue = app.reads.queue(clock.now())
    assert (queue.depth, queue.in_flight, queue.later) == (created - 1, {"later": 1}, 0)
    assert queue.oldest_age(clock.now()) == 90.0
    text = render_metrics(collect_metrics(app.reads, ["workos"], now=clock.now(), interval=60))
    assert f"syncd_run_queue_depth {created - 1}" in text
    assert 'syncd_runs_in_flight{workflow="later"} 1' in text
    assert "syncd_run_queue_oldest_age_seconds 90" in text
    report = collect(app.reads)
    assert report["queue"]["due"] == created - 1 and report["queue"]["in_flight"] == {"later": 1}
    assert f"run queue: {created - 1} due now" in render(report) and "1 in flight (later: 1)" in render(report)
    lock.release()


@pytest.mark.postgres
def test_a_page_that_queues_runs_wakes_every_replicas_workers(pg_server: Any, sim: WorkOSSimulator,
                                                               apps: list[App]) -> None:
    registry = Registry()

    @registry.workflow("noted", on=workos.events("user.created"))
    def noted(event: Event, ctx: Context) -> None:
        pass

    app = build(pg_server.create_database(), sim, registry, apps)
    woken = threading.Event()
    listener = app.engine.store.listen_runs(woken.set)  # another replica's listener, as its pool starts it
    assert listener is not None
    try:
        assert listener.listening.wait(30)  # type: ignore[attr-defined]
        app.engine.workers = app.workers()  # this replica only queues
        assert not woken.is_set()
        [tick] = app.tick_all()
        assert tick.ok and tick.new_events > 0
        assert woken.wait(30)  # NOTIFY syncd_runs, delivered when the page committed
    finally:
        listener.stop()
