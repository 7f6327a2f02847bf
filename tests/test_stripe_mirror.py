"""The built-in Stripe mirror (``stripe_customers``, ``stripe_subscriptions``) on SQLite and PostgreSQL,
synced over loopback HTTP from the Stripe simulator: it equals the simulator's final state, a stale event
(an older ``created``) changes nothing, a deleted customer is not brought back, and of two events in one
second the later in Stripe's list wins."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.stripe.tables import customers, subscriptions
from simulators.stripe import StripeSimulator
from syncd.ops.app import App
from syncd.workflows import Registry
from tests.conftest import settings_for
from tests.test_github_sync import catch_up

KEY = "sk_test_stripe_mirror_0c4b"


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(events=600, seed=12, api_key=KEY) as simulator:
        yield simulator


def build(db_url: str, sim: StripeSimulator, apps: list[App]) -> App:
    env = {"STRIPE_API_KEY": KEY, "STRIPE_BASE_URL": sim.url, "SYNCD_BUILTINS": "stripe"}
    app = App.build(settings_for(db_url, **env), registry=Registry())
    apps.append(app)
    return app


def epoch(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def expected(sim: StripeSimulator) -> dict[str, dict[str, dict[str, Any]]]:
    """The rows the mirror must hold: each object's last snapshot, with the time and id of its event."""
    rows: dict[str, dict[str, dict[str, Any]]] = {"customers": {}, "subscriptions": {}}
    for event in sim.events():
        obj, kind = event["data"]["object"], event["type"].rpartition(".")[0]
        common = {"id": obj["id"], "metadata": obj.get("metadata"), "livemode": obj.get("livemode"),
                  "created_at": epoch(obj.get("created")), "updated_at": epoch(event["created"]),
                  "event_id": event["id"]}
        if kind == "customer":
            if event["type"] == "customer.deleted":
                rows["customers"].pop(obj["id"], None)
                continue
            rows["customers"][obj["id"]] = {**common, "email": obj.get("email"), "name": obj.get("name"),
                                            "balance": obj.get("balance"), "currency": obj.get("currency"),
                                            "delinquent": obj.get("delinquent")}
        elif kind == "customer.subscription":
            rows["subscriptions"][obj["id"]] = {
                **common, "customer": obj.get("customer"), "status": obj.get("status"),
                "cancel_at_period_end": obj.get("cancel_at_period_end"),
                "current_period_end": epoch(obj.get("current_period_end")),
                "canceled_at": epoch(obj.get("canceled_at")), "ended_at": epoch(obj.get("ended_at"))}
    return rows


def mirrored(app: App) -> dict[str, dict[str, dict[str, Any]]]:
    with app.db.connect() as conn:
        return {name: {row["id"]: dict(row) for row in conn.execute(sa.select(table)).mappings()}
                for name, table in (("customers", customers), ("subscriptions", subscriptions))}


def test_the_mirror_equals_the_simulators_final_state(db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    app = build(db_url, sim, apps)
    catch_up(app, app.connectors[0])
    want = expected(sim)
    assert len(want["customers"]) > 20 and len(want["subscriptions"]) > 20
    assert mirrored(app) == want
    assert {row["status"] for row in want["subscriptions"].values()} >= {"canceled", "active"}
    assert set(sim.final_state()["customers"]) == set(want["customers"])  # the simulator's own oracle agrees
    sim.advance(10)
    sim.generate(150)
    catch_up(app, app.connectors[0])
    assert mirrored(app) == expected(sim)


def test_stale_events_change_nothing_and_a_deleted_customer_stays_deleted(
        db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    app = build(db_url, sim, apps)
    catch_up(app, app.connectors[0])
    before = mirrored(app)
    deleted = next(e["data"]["object"]["id"] for e in sim.events() if e["type"] == "customer.deleted")
    living = next(iter(before["customers"].values()))
    sim.advance(60)
    old = sim.now - 86_400 * 25  # before every snapshot, as a replayed or delayed event would be
    sim.append_raw({"id": "evt_stale_update", "object": "event", "type": "customer.updated", "created": old,
                    "api_version": "2024-06-20", "data": {"object": {"id": living["id"], "name": "Stale"}}})
    sim.append_raw({"id": "evt_stale_create", "object": "event", "type": "customer.created", "created": old,
                    "api_version": "2024-06-20", "data": {"object": {"id": deleted, "name": "Ghost"}}})
    catch_up(app, app.connectors[0])
    assert mirrored(app) == before


def test_of_two_events_in_one_second_the_later_in_the_list_wins(
        db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    app = build(db_url, sim, apps)
    catch_up(app, app.connectors[0])
    sim.advance(60)
    sim.add("customer.created", {"id": "cus_same_second", "object": "customer", "name": "first"})
    sim.add("customer.updated", {"id": "cus_same_second", "object": "customer", "name": "second"})
    sim.add("customer.updated", {"id": "cus_same_second", "object": "customer", "name": "third"})
    catch_up(app, app.connectors[0])
    row = mirrored(app)["customers"]["cus_same_second"]
    assert row["name"] == "third" and row["event_id"] == sim.events()[-1]["id"]
