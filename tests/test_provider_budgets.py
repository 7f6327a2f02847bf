"""One budget per WorkOS and Stripe credential (issue 28): their only signal is a 429 with ``Retry-After``,
and it holds every cursor of the credential, in this process and in every replica (``syncd.retrybudget``).

- a 429 on the live cursor holds the source's backfill windows: no request until it ends
  → ``test_a_429_on_the_live_cursor_holds_its_windows_*``
- a 429 in one replica holds another replica's cursors of that credential, through the database; both
  databases; ``syncd once`` binds the budget too → ``test_a_429_in_one_replica_holds_the_other``
- the daemon's scheduler starts no poll of the credential before the hold ends, then all of them
  → ``test_the_scheduler_starts_no_poll_while_the_credential_is_held``
- ``syncd status`` shows the hold → ``test_status_shows_a_held_credential``
- a cursor's own 429 does not hold itself (its retry waits, the engine pauses it, as before)
  → ``test_a_cursors_own_429_is_its_retry_policys``
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.stripe.client import StripeConnector
from connectors.workos.client import WorkOSConnector
from simulators.stripe import DEFAULT_NOW, StripeSimulator
from simulators.workos import Faults, WorkOSSimulator
from syncd import cli
from syncd.contracts import Window
from syncd.engine import Target
from syncd.errors import RetryableError
from syncd.ops.app import App
from syncd.ops.once import run_once
from syncd.retrybudget import Gate, RetryAfterBudget
from syncd.settings import Secret
from syncd.store.budget import SqlBudgets
from syncd.store.db import create_engine
from syncd.store.schema import migrate
from syncd.workflows import Registry
from tests.conftest import settings_for

KEY = "sk_test_budget_5c1e7a"
WORKOS_KEY = "sk_workos_budget_77f2"


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(events=20, seed=3, api_key=KEY) as simulator:
        yield simulator


def stripe_app(db_url: str, sim: StripeSimulator, apps: list[App], replica: str) -> App:
    connector = StripeConnector(api_key=Secret(KEY), base_url=sim.url, timeout=5)
    env = {"STRIPE_API_KEY": KEY, "STRIPE_BASE_URL": sim.url, "SYNCD_BUILTINS": "none",
           "SYNCD_REPLICA_ID": replica}
    app = App.build(settings_for(db_url, **env), registry=Registry(), connectors=[connector])
    apps.append(app)
    return app


def window() -> Window:
    end = datetime.fromtimestamp(DEFAULT_NOW, UTC)
    return Window(end - timedelta(days=3), end)


def test_a_429_on_the_live_cursor_holds_its_windows_stripe(sqlite_url: str, sim: StripeSimulator,
                                                           apps: list[App]) -> None:
    app = stripe_app(sqlite_url, sim, apps, "a")
    connector = app.connectors[0]
    sim.faults.fail_next(1, 429, retry_after=120)
    live = app.tick(connector)
    assert not live.ok and "rate limited" in (live.error or "")
    asked = len(sim.requests)
    held = app.engine.sync(Target(connector, window()))
    assert not held.ok and "rate-limited this credential" in (held.error or "")
    assert len(sim.requests) == asked  # the window sent nothing while the credential is held


def test_a_429_on_the_live_cursor_holds_its_windows_workos() -> None:
    with WorkOSSimulator(events=10, seed=2, api_key=WORKOS_KEY,
                         faults=Faults(rate_limit_rate=1.0, retry_after=90)) as simulator:
        connector = WorkOSConnector(api_key=Secret(WORKOS_KEY), base_url=simulator.url,
                                    event_types=["user.created"], timeout=5, attempts=1)
        try:
            with pytest.raises(RetryableError) as first:
                connector.fetch_page(None)
            assert first.value.retry_after == 90 and len(simulator.requests) == 1
            simulator.faults = Faults()
            end = datetime.now(UTC)
            with pytest.raises(RetryableError) as held:
                connector.fetch_page(None, Window(end - timedelta(days=1), end))
            assert held.value.retry_after is not None and 80 < held.value.retry_after <= 90
            assert len(simulator.requests) == 1  # held: nothing sent
            connector.fetch_page(None)  # the live cursor's own hold is its engine pause's business
            assert len(simulator.requests) == 2
        finally:
            connector.close()


def test_a_429_in_one_replica_holds_the_other(db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    first = stripe_app(db_url, sim, apps, "a")
    sim.faults.fail_next(1, 429, retry_after=300)
    report = run_once(first)  # `syncd once` binds the credential's budget to the database
    assert report.sources[0].error and "rate limited" in report.sources[0].error
    [row] = SqlBudgets(first.db).all()
    assert row.credential.startswith("stripe:") and KEY not in row.credential
    assert row.reset_at > datetime.now(UTC).timestamp() + 200
    second = stripe_app(db_url, sim, apps, "b")
    second.pacers()
    asked = len(sim.requests)
    held = second.engine.sync(Target(second.connectors[0], window()))
    assert not held.ok and "rate-limited this credential" in (held.error or "")
    assert len(sim.requests) == asked


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_scheduler_starts_no_poll_while_the_credential_is_held(db_url: str) -> None:
    db = create_engine(db_url)
    try:
        migrate(db)
        clock = Clock(1_000_000.0)
        mine, theirs = RetryAfterBudget("stripe:abc", clock=clock), RetryAfterBudget("stripe:abc", clock=clock)
        mine.bind(SqlBudgets(db))
        theirs.bind(SqlBudgets(db))
        assert theirs.allow(now=clock.now, base=10, sources=3, wanted=3, horizon=1).polls == 3
        mine.throttled(60)
        plan = theirs.allow(now=clock.now + 1, base=10, sources=3, wanted=3, horizon=1)
        assert plan.polls == 0 and plan.interval == pytest.approx(59)
        clock.now += 61
        plan = theirs.allow(now=clock.now, base=10, sources=3, wanted=3, horizon=1)
        assert plan.polls == 3 and plan.interval == 10
    finally:
        db.dispose()


def test_status_shows_a_held_credential(sqlite_url: str, sim: StripeSimulator, apps: list[App],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    app = stripe_app(sqlite_url, sim, apps, "a")
    app.pacers()
    sim.faults.fail_next(1, 429, retry_after=600)
    assert not app.tick(app.connectors[0]).ok
    credential = app.connectors[0].credential  # type: ignore[attr-defined]
    assert cli.main(["status"], environ={"DATABASE_URL": sqlite_url}) in (0, 1)
    out = capsys.readouterr().out
    assert f"budget {credential}: rate-limited (429), no request until" in out and KEY not in out


def test_a_cursors_own_429_is_its_retry_policys() -> None:
    budget = RetryAfterBudget("stripe:own")
    live, backfill = Gate(budget, "stripe"), Gate(budget, "stripe", window())
    live.after(429, "30")
    live.before()  # its own hold: the retry policy (or the engine's pause) waits it out
    with pytest.raises(RetryableError) as held:
        backfill.before()
    assert held.value.retry_after is not None and 25 < held.value.retry_after <= 30
    live.after(200, None)
    with pytest.raises(RetryableError):
        backfill.before()  # an answer that is not a 429 does not end the provider's hold
