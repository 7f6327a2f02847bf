"""Outbound integrations under many worker threads: one pooled client per integration per process, an
Idempotency-Key per (run, step), rate limits spread over time and shared by replicas, and ``Retry-After``
pausing one integration (``Deferred``), never another.

Real HTTP over loopback to the sink simulator; the limiter's slots on real SQLite (in memory: one
process) and PostgreSQL (the ``syncd_integration_slots`` table, shared by "replicas": limiters with
engines of their own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from connectors import workos
from simulators.sink import SinkSimulator
from syncd.errors import ConfigError
from syncd.settings import Integrations
from syncd.store.connect import create_engine
from syncd.store.ratelimit import MemorySlots, SqlSlots
from syncd.store.schema import migrate
from syncd.workflows import Registry
from syncd.workflows.integrations import IntegrationError
from syncd.workflows.outbound import MAX_RETRY_AFTER, Deferred, Outbound, RateLimiter, current_run
from syncd.workflows.steps import RunKey, current_step
from tests.test_steps import build

#: Slack: milliseconds; clocks of the sink and the test are one clock, but float sums round.
EPSILON = 0.005


@pytest.fixture
def sink() -> Iterator[SinkSimulator]:
    with SinkSimulator() as simulator:
        yield simulator


@pytest.fixture
def engines(db_url: str) -> Iterator[Callable[[], Engine]]:
    """Engines on one migrated database, one per "replica" asked for."""
    made: list[Engine] = []

    def make() -> Engine:
        made.append(create_engine(db_url))
        return made[-1]

    migrate(make())
    yield make
    for engine in made:
        engine.dispose()


def integrations(**env: str) -> Integrations:
    return Integrations.from_env(env)


def call_as(run: RunKey, step: str, fn: Callable[[], Any]) -> Any:
    """``fn`` as the runner executes a step: with the run and the step in the thread's context."""
    run_token, step_token = current_run.set(run), current_step.set(step)
    try:
        return fn()
    finally:
        current_step.reset(step_token)
        current_run.reset(run_token)


# ---- one pooled client, the right key on every request ------------------------------------------------

def test_one_pooled_client_serves_200_calls_from_many_threads_with_a_key_per_run_and_step(
        sink: SinkSimulator) -> None:
    outbound = Outbound(integrations(SYNCD_INTEGRATION_CRM_URL=f"{sink.url}/crm",
                                     SYNCD_INTEGRATION_CRM_TOKEN="tok-crm-1"))
    threads, runs_per_thread, steps = 8, 5, 5  # 8 × 5 × 5 = 200 calls

    def worker(t: int) -> None:
        for r in range(runs_per_thread):
            run = RunKey("federate", "workos", f"evt_{t}_{r}")
            for s in range(steps):
                call_as(run, f"step{s}", lambda: outbound.http("crm").post(
                    "/contacts", json={"event": run.event_id, "step": f"step{s}"}))  # noqa: B023 - run now

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(worker, range(threads)))
        assert outbound.http("CRM") is outbound.http("crm")  # one client per integration
    finally:
        outbound.close()
    assert len(sink.calls) == 200
    assert 1 <= sink.connections <= threads, sink.connections  # pooled: never one connection per call
    for call in sink.calls:
        expected = RunKey("federate", "workos", call.body["event"]).idempotency_key(call.body["step"])
        assert call.idempotency_key == expected
        assert call.authorization == "Bearer tok-crm-1"
    assert len({c.idempotency_key for c in sink.calls}) == 200


def test_a_call_outside_a_run_is_refused_before_it_leaves(sink: SinkSimulator) -> None:
    outbound = Outbound(integrations(SYNCD_INTEGRATION_CRM_URL=sink.url))
    try:
        with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="outside a workflow run"):
            pool.submit(lambda: outbound.http("crm").get("/x")).result()  # a thread that never ran a run
    finally:
        outbound.close()
    assert sink.calls == []


def test_a_run_that_called_out_is_no_longer_current_once_it_ends(sqlite_url: str, workos_sim: Any,
                                                                 sink: SinkSimulator) -> None:
    registry = Registry()

    @registry.workflow("crm", on=workos.events("user.created"))
    def crm(event: Any, ctx: Any) -> None:
        ctx.step("crm", lambda: ctx.http("crm").post("/contacts", json={"id": event.id}).status_code)

    app = build(sqlite_url, workos_sim, registry, SYNCD_INTEGRATION_CRM_URL=sink.url)
    try:
        app.tick_all()
    finally:
        app.close()
    assert sink.calls and all(c.idempotency_key for c in sink.calls)
    assert current_run.get() is None  # no later call in this thread goes out under a finished run's key


def test_an_unknown_integration_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="SYNCD_INTEGRATION_BILLING_URL"):
        Outbound(integrations()).http("billing")
    with pytest.raises(ConfigError, match="SYNCD_SLACK_WEBHOOK_URL"):
        Outbound(integrations()).slack()


# ---- Retry-After pauses the integration (every replica), and only it ---------------------------------

@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_pauses_that_integration_and_defers_the_run(engines: Callable[[], Engine],
                                                                status: int) -> None:
    with SinkSimulator(fail_rate=1.0, fail_status=status, retry_after=30) as busy, SinkSimulator() as calm:
        config = integrations(SYNCD_INTEGRATION_CRM_URL=busy.url, SYNCD_INTEGRATION_MAIL_URL=calm.url)
        replica_a, replica_b = (Outbound(config, RateLimiter(engines())) for _ in range(2))
        run = RunKey("welcome", "workos", "evt_1")
        try:
            before = time.time()
            with pytest.raises(Deferred) as deferred:
                call_as(run, "crm", lambda: replica_a.http("crm").post("/contacts", json={}))
            after = time.time()
            assert before + 30 - EPSILON <= deferred.value.until.timestamp() <= after + 30 + EPSILON
            assert f"answered {status} with Retry-After 30" in deferred.value.reason
            assert len(busy.calls) == 1

            # Another thread of the same replica, and the other replica: deferred without calling.
            with ThreadPoolExecutor(1) as pool:
                other = pool.submit(call_as, RunKey("welcome", "workos", "evt_2"), "crm",
                                    lambda: replica_a.http("crm").post("/contacts", json={}))
                with pytest.raises(Deferred) as again:
                    other.result()
            assert again.value.until == deferred.value.until
            if isinstance(replica_b.limiter.slots, SqlSlots):  # PostgreSQL (SQLite: one process, in memory)
                with pytest.raises(Deferred) as elsewhere:
                    call_as(run, "crm", lambda: replica_b.http("crm").post("/contacts", json={}))
                assert elsewhere.value.until == deferred.value.until
            assert len(busy.calls) == 1

            # Another integration is not paused.
            response = call_as(run, "mail", lambda: replica_a.http("mail").post("/send", json={}))
            assert response.status_code == 200 and len(calm.calls) == 1
        finally:
            replica_a.close()
            replica_b.close()


def test_a_refusal_without_retry_after_is_an_ordinary_failure(sink: SinkSimulator) -> None:
    sink.fail_rate, sink.fail_status = 1.0, 429
    outbound = Outbound(integrations(SYNCD_INTEGRATION_CRM_URL=f"{sink.url}/api?key=q-secret-77"))
    try:
        with pytest.raises(IntegrationError) as failed:
            call_as(RunKey("w", "s", "e"), "crm", lambda: outbound.http("crm").post("/contacts"))
        assert "answered 429" in str(failed.value) and "q-secret-77" not in str(failed.value)
        # Not paused: the next call goes out.
        with pytest.raises(IntegrationError):
            call_as(RunKey("w", "s", "e2"), "crm", lambda: outbound.http("crm").post("/contacts"))
    finally:
        outbound.close()
    assert len(sink.calls) == 2


def test_a_huge_retry_after_is_capped() -> None:
    with SinkSimulator(fail_rate=1.0, fail_status=429, retry_after=86_400) as sink:
        outbound = Outbound(integrations(SYNCD_SLACK_WEBHOOK_URL=f"{sink.url}/services/T0/B0/hook-secret-9"))
        try:
            before = time.time()
            with pytest.raises(Deferred) as deferred:
                call_as(RunKey("w", "s", "e"), "slack", lambda: outbound.slack().post(
                    f"{sink.url}/services/T0/B0/hook-secret-9", json={"text": "hi"}))
        finally:
            outbound.close()
    assert deferred.value.until.timestamp() <= time.time() + MAX_RETRY_AFTER + EPSILON
    assert deferred.value.until.timestamp() >= before + MAX_RETRY_AFTER - EPSILON
    assert "capped" in deferred.value.reason and "hook-secret-9" not in str(deferred.value)


# ---- rate limits ----------------------------------------------------------------------------------

def arrivals_are_spaced(arrivals: list[float], start: float, interval: float) -> None:
    """The k-th call (in arrival order) arrived no earlier than ``start + k × interval``: N calls at rate
    R span at least (N-1)/R seconds. A lower bound: slowness cannot make it fail."""
    for k, arrived in enumerate(sorted(arrivals)):
        assert arrived >= start + k * interval - EPSILON, (k, arrived - start)


def test_calls_are_spread_by_the_integrations_rate(engines: Callable[[], Engine], sink: SinkSimulator) -> None:
    config = integrations(SYNCD_INTEGRATION_CRM_URL=sink.url, SYNCD_INTEGRATION_CRM_RATE="20/s",
                          SYNCD_INTEGRATION_MAIL_URL=sink.url)
    # A wait horizon longer than the test: every call waits for its slot instead of being deferred.
    outbound = Outbound(config, RateLimiter(engines(), max_wait=60))
    start = time.time()
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i: call_as(RunKey("w", "s", f"e{i}"), "crm",
                                            lambda: outbound.http("crm").post(f"/crm/{i}")), range(30)))
        # An integration without a rate is not spaced (and not slowed by the other's budget).
        call_as(RunKey("w", "s", "m"), "mail", lambda: outbound.http("mail").post("/mail"))
    finally:
        outbound.close()
    crm = [c.arrived_at for c in sink.calls if c.path.startswith("/crm/")]
    assert len(crm) == 30
    arrivals_are_spaced(crm, start, 1 / 20)


@pytest.mark.postgres
def test_two_replicas_share_one_budget_on_postgresql(pg_server: Any, sink: SinkSimulator) -> None:
    url = pg_server.create_database()
    engines = [create_engine(url) for _ in range(2)]
    migrate(engines[0])
    config = integrations(SYNCD_INTEGRATION_CRM_URL=sink.url, SYNCD_INTEGRATION_CRM_RATE="10/s")
    replicas = [Outbound(config, RateLimiter(engine, max_wait=60)) for engine in engines]
    start = time.time()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: call_as(RunKey("w", "s", f"e{i}"), "crm",
                                            lambda: replicas[i % 2].http("crm").post(f"/crm/{i}")), range(20)))
    finally:
        for replica in replicas:
            replica.close()
        for engine in engines:
            engine.dispose()
    assert len(sink.calls) == 20
    arrivals_are_spaced([c.arrived_at for c in sink.calls], start, 1 / 10)


def test_a_slot_beyond_the_wait_horizon_defers_without_using_it(engines: Callable[[], Engine],
                                                               sink: SinkSimulator) -> None:
    config = integrations(SYNCD_INTEGRATION_CRM_URL=sink.url, SYNCD_INTEGRATION_CRM_RATE="1/min")
    outbound = Outbound(config, RateLimiter(engines()))
    try:
        first = time.time()
        call_as(RunKey("w", "s", "e1"), "crm", lambda: outbound.http("crm").post("/a"))
        deferred = []
        for event in ("e2", "e3"):  # the first deferral reserved nothing: the second gets the same slot
            with pytest.raises(Deferred) as caught:
                call_as(RunKey("w", "s", event), "crm", lambda: outbound.http("crm").post("/b"))
            deferred.append(caught.value)
    finally:
        outbound.close()
    assert len(sink.calls) == 1
    assert deferred[0].until == deferred[1].until
    assert first + 60 - EPSILON <= deferred[0].until.timestamp() <= time.time() + 60
    assert "rate limit 1/min" in deferred[0].reason and "integration 'crm'" in deferred[0].reason


def test_the_slack_webhook_has_its_own_rate(engines: Callable[[], Engine], sink: SinkSimulator) -> None:
    hook = f"{sink.url}/services/T0/B0/hook-secret-4"
    config = integrations(SYNCD_SLACK_WEBHOOK_URL=hook, SYNCD_SLACK_RATE="1/h", SYNCD_INTEGRATION_CRM_URL=sink.url,
                          SYNCD_INTEGRATION_CRM_RATE="1/h")
    outbound = Outbound(config, RateLimiter(engines()))
    try:
        call_as(RunKey("w", "s", "e1"), "slack", lambda: outbound.slack().post(hook, json={"text": "a"}))
        with pytest.raises(Deferred) as deferred:
            call_as(RunKey("w", "s", "e2"), "slack", lambda: outbound.slack().post(hook, json={"text": "b"}))
        # The CRM's budget is its own: its first call goes out.
        call_as(RunKey("w", "s", "e1"), "crm", lambda: outbound.http("crm").post("/contacts"))
    finally:
        outbound.close()
    assert [c.path for c in sink.calls] == ["/services/T0/B0/hook-secret-4", "/contacts"]
    assert "the Slack webhook: rate limit 1/h" in deferred.value.reason and "hook-secret-4" not in str(deferred.value)


def test_deferred_passes_through_user_code_and_step_retries() -> None:
    until = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        try:
            raise Deferred(until, "integration 'crm': rate limit 1/min")
        except Exception:  # what a workflow's own handler catches
            pytest.fail("Deferred was caught as an Exception")
    except Deferred as deferred:
        assert deferred.until == until and deferred.wake_at == until and deferred.new is None
        assert "2030-01-01" in str(deferred) and "rate limit" in str(deferred)


# ---- the slots' contract, on every implementation -------------------------------------------------

@pytest.fixture(params=["memory", "sql"])
def slots(request: pytest.FixtureRequest, engines: Callable[[], Engine]) -> Any:
    return MemorySlots() if request.param == "memory" else SqlSlots(engines())


def test_slots_take_pause_and_read(slots: Any) -> None:
    assert slots.next_at("http:CRM") is None
    assert tuple(slots.take("http:CRM", now=100.0, interval=2.0, horizon=1.0)) == (True, 100.0)
    assert slots.next_at("http:CRM") == 102.0
    assert tuple(slots.take("http:CRM", now=101.0, interval=2.0, horizon=1.0)) == (True, 102.0)
    # 104 is beyond 101.5 + 1: refused, nothing taken.
    assert tuple(slots.take("http:CRM", now=101.5, interval=2.0, horizon=1.0)) == (False, 104.0)
    assert slots.next_at("http:CRM") == 104.0
    # Later than next_at: the slot starts now.
    assert tuple(slots.take("http:CRM", now=200.0, interval=2.0, horizon=1.0)) == (True, 200.0)
    slots.pause("http:CRM", 300.0)
    slots.pause("http:CRM", 250.0)  # a shorter pause never shortens a longer one
    assert slots.next_at("http:CRM") == 300.0
    assert tuple(slots.take("http:CRM", now=299.5, interval=2.0, horizon=1.0)) == (True, 300.0)
    slots.pause("slack", 50.0)  # a pause of a name never seen
    assert slots.next_at("slack") == 50.0 and slots.next_at("http:CRM") == 302.0


def test_concurrent_takes_get_distinct_evenly_spaced_slots(slots: Any) -> None:
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda _: slots.take("x", now=1000.0, interval=0.5, horizon=1e9), range(80)))
    assert all(slot.granted for slot in taken)
    assert sorted(slot.at for slot in taken) == [1000.0 + 0.5 * k for k in range(80)]
