"""Durable steps (issue 9): ctx.step memoization and retries, ctx.parallel, durable sleeps, replay of a
failed step, outbound integrations with idempotency keys, email over a real SMTP server."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.sink import SinkSimulator
from syncd.contracts import FakeClock
from syncd.ops.app import App
from syncd.store.tables import runs, steps
from syncd.workflows import Registry
from tests.conftest import settings_for, workos_env

CREATED = workos.events("user.created")


class Calls:
    """Thread-safe call counter for step functions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def hit(self, name: str) -> int:
        with self._lock:
            self.counts[name] += 1
            return self.counts[name]


def build(db_url: str, sim: Any, registry: Registry, clock: FakeClock | None = None, **env: str) -> App:
    settings = settings_for(db_url, SYNCD_BUILTINS="none", **workos_env(sim), **env)
    return App.build(settings, registry=registry, clock=clock)


def run_rows(app: App, workflow: str) -> list[Any]:
    with app.db.connect() as conn:
        return list(conn.execute(sa.select(runs).where(runs.c.workflow == workflow)))


def created_ids(sim: Any) -> set[str]:
    return {e["id"] for e in sim.events() if e["event"] == "user.created"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


def test_steps_run_once_and_results_are_memoized(db_url: str, workos_sim: Any) -> None:
    calls, registry = Calls(), Registry()

    @registry.workflow("two-steps", on=CREATED)
    def two_steps(event: Any, ctx: Any) -> None:
        a = ctx.step("a", lambda: {"n": calls.hit(f"a:{event.id}")})
        b = ctx.step("b", lambda: calls.hit(f"b:{event.id}") + a["n"])
        ctx.db.execute(sa.text("INSERT INTO results (event_id, value) VALUES (:e, :v)"), {"e": event.id, "v": b})

    app = build(db_url, workos_sim, registry)
    with app.db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE results (event_id VARCHAR(64) PRIMARY KEY, value INTEGER)"))
    try:
        assert all(r.ok for r in app.tick_all())
        ids = created_ids(workos_sim)
        rows = run_rows(app, "two-steps")
        assert {r.event_id for r in rows} == ids and {r.status for r in rows} == {"succeeded"}
        assert all(calls.counts[f"a:{i}"] == 1 and calls.counts[f"b:{i}"] == 1 for i in ids)
        with app.db.connect() as conn:
            values = dict(conn.execute(sa.text("SELECT event_id, value FROM results")).all())
            stored = conn.execute(sa.select(sa.func.count()).select_from(steps)).scalar_one()
        assert values == {i: 2 for i in ids}  # b = 1 + a["n"], each computed once
        assert stored == 2 * len(ids)
        # Replaying the stream changes nothing and runs no step again.
        with app.db.begin() as conn:
            conn.execute(sa.text("UPDATE syncd_sources SET cursor = NULL"))
        assert all(r.ok for r in app.tick_all())
        assert max(calls.counts.values()) == 1
    finally:
        app.close()


def test_duplicate_step_names_fail_the_run(sqlite_url: str, workos_sim: Any) -> None:
    registry = Registry()

    @registry.workflow("dup", on=CREATED, retries=1)
    def dup(event: Any, ctx: Any) -> None:
        ctx.step("same", lambda: 1)
        ctx.step("same", lambda: 2)

    app = build(sqlite_url, workos_sim, registry)
    try:
        app.tick_all()
        rows = run_rows(app, "dup")
        assert rows and {r.status for r in rows} == {"dead"}
        assert all("used twice" in r.last_error for r in rows)
    finally:
        app.close()


def test_step_retries_on_its_own_then_fails_the_run_keeping_earlier_steps(
        sqlite_url: str, workos_sim: Any, clock: FakeClock) -> None:
    calls, registry = Calls(), Registry()
    broken = {"on": True}

    @registry.workflow("flaky", on=CREATED)
    def flaky(event: Any, ctx: Any) -> None:
        ctx.step("first", lambda: calls.hit(f"first:{event.id}"))

        def second() -> int:
            n = calls.hit(f"second:{event.id}")
            if broken["on"] or n < 2:
                raise RuntimeError("downstream unavailable")
            return n

        ctx.step("second", second, retries=2)

    app = build(sqlite_url, workos_sim, registry, clock=clock)
    try:
        app.tick_all()
        ids = created_ids(workos_sim)
        rows = run_rows(app, "flaky")
        assert {r.status for r in rows} == {"failed"}
        assert all("after 3 attempts" in r.last_error for r in rows)
        assert all(calls.counts[f"second:{i}"] == 3 for i in ids)  # 1 try + 2 retries, within the step
        broken["on"] = False
        clock.advance(3600)
        app.tick_all()
        assert {r.status for r in run_rows(app, "flaky")} == {"succeeded"}
        assert all(calls.counts[f"first:{i}"] == 1 for i in ids)  # never re-run after it succeeded
        assert all(calls.counts[f"second:{i}"] == 4 for i in ids)
    finally:
        app.close()


def test_parallel_steps_keep_completed_results_when_one_fails(sqlite_url: str, workos_sim: Any,
                                                              clock: FakeClock) -> None:
    calls, registry = Calls(), Registry()
    close_down = {"on": True}

    @registry.workflow("fanout", on=CREATED)
    def fanout(event: Any, ctx: Any) -> None:
        def close() -> str:
            calls.hit(f"close:{event.id}")
            if close_down["on"]:
                raise RuntimeError("close is down")
            return "c"

        out = ctx.parallel([("intercom", lambda: calls.hit(f"intercom:{event.id}") and "i"),
                            ("slack", lambda: calls.hit(f"slack:{event.id}") and "s"),
                            ("close", close)], retries=1)
        assert out == ["i", "s", "c"]

    app = build(sqlite_url, workos_sim, registry, clock=clock)
    try:
        app.tick_all()
        ids = created_ids(workos_sim)
        assert {r.status for r in run_rows(app, "fanout")} == {"failed"}
        close_down["on"] = False
        clock.advance(3600)
        app.tick_all()
        assert {r.status for r in run_rows(app, "fanout")} == {"succeeded"}
        for i in ids:
            assert calls.counts[f"intercom:{i}"] == 1 and calls.counts[f"slack:{i}"] == 1
            assert calls.counts[f"close:{i}"] == 3  # 2 attempts in the first run, 1 in the retry
    finally:
        app.close()


def test_durable_sleep_resumes_after_wake_time_across_a_restart(db_url: str, workos_sim: Any,
                                                                clock: FakeClock) -> None:
    calls, registry = Calls(), Registry()

    @registry.workflow("drip", on=CREATED)
    def drip(event: Any, ctx: Any) -> None:
        ctx.step("before", lambda: calls.hit(f"before:{event.id}"))
        ctx.sleep("wait", timedelta(minutes=30))
        ctx.step("after", lambda: calls.hit(f"after:{event.id}"))

    app = build(db_url, workos_sim, registry, clock=clock)
    ids = created_ids(workos_sim)
    try:
        app.tick_all()
        rows = run_rows(app, "drip")
        assert {r.status for r in rows} == {"sleeping"}
        assert all(r.next_attempt_at == clock.now() + timedelta(minutes=30) for r in rows)
        clock.advance(29 * 60)
        app.tick_all()
        assert {r.status for r in run_rows(app, "drip")} == {"sleeping"}
        assert not any(k.startswith("after:") for k in calls.counts)
    finally:
        app.close()
    clock.advance(2 * 60)
    restarted = build(db_url, workos_sim, registry, clock=clock)  # a new process: nothing in memory
    try:
        restarted.tick_all()
        assert {r.status for r in run_rows(restarted, "drip")} == {"succeeded"}
        assert all(calls.counts[f"before:{i}"] == 1 and calls.counts[f"after:{i}"] == 1 for i in ids)
        restarted.tick_all()
        assert all(calls.counts[f"after:{i}"] == 1 for i in ids)
    finally:
        restarted.close()


def test_replay_reruns_only_the_failed_step(sqlite_url: str, workos_sim: Any, clock: FakeClock) -> None:
    from syncd.ops.replay import Selection, replay_dead

    calls, registry = Calls(), Registry()
    fixed = {"yes": False}

    @registry.workflow("onboard", on=CREATED, retries=1)
    def onboard(event: Any, ctx: Any) -> None:
        ctx.step("crm", lambda: calls.hit(f"crm:{event.id}"))

        def mail() -> int:
            calls.hit(f"mail:{event.id}")
            if not fixed["yes"]:
                raise RuntimeError("template missing")
            return 1

        ctx.step("mail", mail, retries=0)

    app = build(sqlite_url, workos_sim, registry, clock=clock)
    try:
        app.tick_all()
        ids = created_ids(workos_sim)
        assert {r.status for r in run_rows(app, "onboard")} == {"dead"}
        fixed["yes"] = True
        report = replay_dead(app.engine, Selection(workflow="onboard"))
        assert {r.status for r in run_rows(app, "onboard")} == {"succeeded"}, report
        for i in ids:
            assert calls.counts[f"crm:{i}"] == 1  # the step that had succeeded did not run again
            assert calls.counts[f"mail:{i}"] == 2  # failed once, then once after the fix
    finally:
        app.close()


@pytest.fixture
def sink() -> Iterator[SinkSimulator]:
    with SinkSimulator(fail_rate=0.3, seed=5) as s:
        yield s


def test_account_federation_calls_each_integration_once_per_user(sqlite_url: str, workos_sim: Any,
                                                                sink: SinkSimulator, clock: FakeClock) -> None:
    import syncd.examples.account_federation as example
    from syncd.workflows import default_registry

    registry = Registry()
    registry.add(default_registry.get("account-federation") or pytest.fail("example not registered"))
    assert example.federate is not None
    env = {"SYNCD_INTEGRATION_INTERCOM_URL": f"{sink.url}/intercom", "SYNCD_INTEGRATION_INTERCOM_TOKEN": "tok-in-9f",
           "SYNCD_INTEGRATION_CLOSE_URL": f"{sink.url}/close", "SYNCD_SLACK_WEBHOOK_URL": f"{sink.url}/slack"}
    app = build(sqlite_url, workos_sim, registry, clock=clock, **env)
    try:
        for _ in range(12):  # 30% of calls fail: retried within steps, then by run retries
            app.tick_all()
            clock.advance(3600)
        rows = run_rows(app, "account-federation")
        ids = created_ids(workos_sim)
        assert {r.event_id for r in rows} == ids and {r.status for r in rows} == {"succeeded"}
        for path in ("/intercom", "/slack", "/close"):
            ok = sink.successes_by_key(path)
            assert len(ok) == len(ids), path  # one idempotency key per user and integration
            assert set(ok.values()) == {1}, path  # and exactly one successful call with it
        assert any(c.status >= 500 for c in sink.calls)  # failures really happened
        intercom_bodies = {c.body["external_id"] for c in sink.calls if c.path.startswith("/intercom")}
        assert intercom_bodies == {e["data"]["id"] for e in workos_sim.events() if e["event"] == "user.created"}
    finally:
        app.close()


def test_send_email_over_a_real_smtp_server_once_per_run(sqlite_url: str, workos_sim: Any) -> None:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        registry = Registry()

        @registry.workflow("welcome-mail", on=CREATED)
        def welcome(event: Any, ctx: Any) -> None:
            ctx.send_email(to=event.data["email"], subject="Welcome", body="Hello!")

        app = build(sqlite_url, workos_sim, registry, SYNCD_SMTP_URL=f"smtp://127.0.0.1:{port}",
                    SYNCD_SMTP_FROM="hello@example.com")
        try:
            app.tick_all()
            with app.db.begin() as conn:
                conn.execute(sa.text("UPDATE syncd_sources SET cursor = NULL"))
            app.tick_all()  # a replay sends nothing more
        finally:
            app.close()
        emails = sorted(e["data"]["email"] for e in workos_sim.events() if e["event"] == "user.created")
        assert sorted(env.rcpt_tos[0] for env in received) == emails
        message_ids = [e.content.split(b"Message-ID: ")[1].split(b"\r\n")[0] for e in received]
        assert len(set(message_ids)) == len(emails)
    finally:
        controller.stop()
