"""Attack: values the ledger stores but a built-in mirror's columns cannot (an e-mail longer than its
``varchar(320)``, a balance beyond ``bigint``, an id longer than the key), sent by the Stripe simulator over
loopback HTTP between good events, and the same into the Directory Sync mirror from the WorkOS simulator.

What must hold on both databases: the page is not blocked — the good events around the bad ones are
mirrored in the same catch-up and the cursor passes them all; each bad event either fits (SQLite does not
enforce ``varchar`` lengths) or its mirror run is failed in one line with neither the user's e-mail nor
the value in the stored error; and an idle tick afterwards does not bring any of them back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.stripe.tables import customers
from connectors.workos.tables import directory_users
from simulators.stripe import StripeSimulator
from simulators.workos import WorkOSSimulator
from syncd.ops.app import App
from syncd.store.tables import runs
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, settings_for
from tests.test_github_sync import catch_up

KEY = "sk_test_unstorable_51d2"
LONG_EMAIL = "ada." + "x" * 380 + "@example.com"  # 396 characters into varchar(320)
HUGE = 2**70  # beyond bigint

BAD: dict[str, dict[str, Any]] = {
    "evt_bad_email": {"id": "cus_bad_email", "email": LONG_EMAIL, "name": "Long"},
    "evt_bad_balance": {"id": "cus_bad_balance", "balance": HUGE, "email": "big@example.com"},
    "evt_bad_currency": {"id": "cus_bad_currency", "currency": "c" * 40},
    "evt_bad_key": {"id": "cus_" + "k" * 300, "email": "key@example.com"},
}


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(events=40, seed=5, api_key=KEY) as simulator:
        yield simulator


def event(event_id: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": "customer.created", "created": created,
            "api_version": "2024-06-20", "data": {"object": {"object": "customer", **obj}}}


def test_values_a_mirror_cannot_store_fail_their_own_run_and_block_nothing(
        db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    app = App.build(settings_for(db_url, STRIPE_API_KEY=KEY, STRIPE_BASE_URL=sim.url, SYNCD_BUILTINS="stripe"),
                    registry=Registry())
    apps.append(app)
    catch_up(app, app.connectors[0])
    sim.advance(5)
    good = [f"cus_good_{i}" for i in range(3)]
    sim.append_raw(event("evt_good_0", {"id": good[0], "email": "g0@example.com"}, sim.now))
    for event_id, obj in BAD.items():
        sim.append_raw(event(event_id, obj, sim.now))
    for i in (1, 2):
        sim.append_raw(event(f"evt_good_{i}", {"id": good[i], "email": f"g{i}@example.com"}, sim.now))

    catch_up(app, app.connectors[0])

    with app.db.connect() as conn:
        stored = {r.id: r for r in conn.execute(sa.select(customers.c.id, customers.c.email))}
        outcome = {r.event_id: (r.status, r.last_error) for r in conn.execute(
            sa.select(runs.c.event_id, runs.c.status, runs.c.last_error)
            .where(runs.c.workflow == "stripe.mirror.customers", runs.c.event_id.in_([*BAD, "evt_good_0",
                                                                                     "evt_good_1", "evt_good_2"])))}
    assert set(good) <= set(stored), "good events around the bad ones were not mirrored"
    assert all(outcome[f"evt_good_{i}"][0] == "succeeded" for i in range(3))
    failed = 0
    for event_id, obj in BAD.items():
        status, error = outcome[event_id]
        if obj["id"] in stored:  # it fitted (SQLite does not enforce varchar lengths)
            assert status == "succeeded"
            continue
        failed += 1
        assert status in ("failed", "dead"), (event_id, status)
        assert error and "\n" not in error.strip(), (event_id, error)
        for secret in (LONG_EMAIL, "big@example.com", "key@example.com", str(HUGE), "c" * 40, "k" * 300):
            assert secret not in error, (event_id, error)
    if app.db.dialect.name == "postgresql":
        assert failed == len(BAD), "PostgreSQL enforces every one of these columns"

    # The cursor passed them all: an idle tick fetches nothing new and runs nothing again.
    before = dict(outcome)
    result = app.tick(app.connectors[0])
    assert result.ok and result.caught_up
    with app.db.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(runs).where(
            runs.c.workflow == "stripe.mirror.customers", runs.c.event_id.in_(list(before)))).scalar()
    assert total == len(before)


def test_directory_users_a_mirror_cannot_store_fail_their_own_run_and_block_nothing(
        db_url: str, apps: list[App]) -> None:
    with WorkOSSimulator(events=0, api_key=WORKOS_KEY) as sim:
        app = App.build(settings_for(db_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.url,
                                     SYNCD_BUILTINS="workos"), registry=Registry())
        apps.append(app)
        made = sim.dsync_events(1)
        while sum(e["event"] == "dsync.user.created" for e in made) < 3:
            made += sim.dsync_events(1)
        users = [e for e in made if e["event"] == "dsync.user.created"]
        bad = {**users[1]["data"], "email": LONG_EMAIL, "first_name": "f" * 250}
        sim.append([e if e is not users[1] else {**e, "data": bad} for e in made])
        catch_up(app, app.connectors[0])
        with app.db.connect() as conn:
            stored = set(conn.execute(sa.select(directory_users.c.id)).scalars())
            status, error = conn.execute(sa.select(runs.c.status, runs.c.last_error).where(
                runs.c.workflow == "workos.mirror.directory_sync", runs.c.status != "succeeded")).one() \
                if app.db.dialect.name == "postgresql" else ("succeeded", None)
        assert {users[0]["data"]["id"], users[2]["data"]["id"]} <= stored, "the users around the bad one"
        if app.db.dialect.name == "postgresql":
            assert bad["id"] not in stored
            assert status in ("failed", "dead") and error and LONG_EMAIL not in error and "f" * 250 not in error
        else:
            assert bad["id"] in stored  # SQLite does not enforce varchar lengths
