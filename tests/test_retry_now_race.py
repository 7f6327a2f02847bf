"""Attack: the dashboard's "Replay" of failed runs (``Store.retry_now``) hammered while two replicas' worker
pools claim, fail and retry those very runs.

``retry_now`` only makes a ``failed`` run due now; the claim that follows is fenced like any other. What must
hold on both databases, whatever the interleaving: no run is ever executed by two workers at once, each run
is attempted exactly as often as its workflow needs (two failures, then a success: three calls, no more),
and every run ends ``succeeded`` with three attempts recorded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.workos import WorkOSSimulator
from syncd.contracts import Event, RunKey
from syncd.ops.app import App
from syncd.store.tables import runs
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for, sim_key
from tests.test_run_queue import InFlight

FAILURES = 2  # each run fails twice, then succeeds


@pytest.fixture(scope="module")
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=80, seed=13, api_key=WORKOS_KEY) as simulator:
        yield simulator


def test_retry_now_racing_two_replicas_claims_never_runs_an_attempt_twice(db_url: str, sim: WorkOSSimulator,
                                                                           apps: list[App]) -> None:
    seen, calls, lock = InFlight(), Counter[str](), threading.Lock()
    registry = Registry()

    @registry.workflow("flaky", on=workos.events("user.created"), retries=FAILURES + 3)
    def flaky(event: Event, ctx: Context) -> None:
        seen.run(event.id, event.id, 0.002)  # two workers on one run at once would show as 2 in flight
        with lock:
            calls[event.id] += 1
            failing = calls[event.id] <= FAILURES
        if failing:
            raise RuntimeError("the CRM said 503")

    def build() -> App:
        app = App.build(settings_for(db_url, SYNCD_BUILTINS="none", WORKOS_API_KEY=sim_key(sim),
                                     WORKOS_BASE_URL=sim.url, SYNCD_WORKERS="4"), registry=registry)
        apps.append(app)
        return app

    first, second = build(), build()
    first.engine.workers = first.workers()  # the tick only queues; the replicas' pools run the runs
    [tick] = first.tick_all()
    expected = {e["id"] for e in sim.events() if e["event"] == "user.created"}
    assert tick.ok and len(expected) > 10

    def keys(status: str) -> list[RunKey]:
        with first.db.connect() as conn:
            return [RunKey(r.workflow, r.stream, r.event_id) for r in conn.execute(
                sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id).where(runs.c.status == status))]

    done = threading.Event()
    replayed = Counter[str]()

    def replay_failed() -> None:  # the operator clicking Replay on every failed run, again and again
        store = second.engine.store
        while not done.is_set():
            for key in keys("failed"):
                replayed["due"] += store.retry_now(key, second.engine.clock.now())

    def drain(app: App) -> None:
        pool = app.workers()
        while not done.is_set():
            pool.drain()

    threads = [threading.Thread(target=replay_failed), *(threading.Thread(target=drain, args=(a,))
                                                          for a in (first, second))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and len(keys("succeeded")) < len(expected):
            time.sleep(0.05)
    finally:
        done.set()
        for thread in threads:
            thread.join(60)

    assert replayed["due"] > 0, "no failed run was ever brought forward: the race was not run"
    assert all(n == 1 for n in seen.most.values()), {k: n for k, n in seen.most.items() if n > 1}
    assert calls == Counter(dict.fromkeys(expected, FAILURES + 1))
    with first.db.connect() as conn:
        ended = {r.event_id: (r.status, r.attempts) for r in conn.execute(
            sa.select(runs.c.event_id, runs.c.status, runs.c.attempts).where(runs.c.workflow == "flaky"))}
    assert ended == dict.fromkeys(expected, ("succeeded", FAILURES + 1))
