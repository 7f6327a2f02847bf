"""WorkOS ordering (issue #24, item 4): syncd asks ``order=asc``; a page the provider lists newest first
anyway (the documented default; users report ``order`` being ignored) fails its tick with one line naming
the source, the cursor does not move, other sources go on, and the walk resumes once the provider lists
oldest first again. Over loopback HTTP against the WorkOS simulator's ``newest_first`` knob, on SQLite and
PostgreSQL; the pure rule is tested by a table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from connectors import workos
from connectors.workos.cursor import newest_first
from simulators.stripe import StripeSimulator
from simulators.workos import Faults, WorkOSSimulator, ulid
from syncd.contracts import Event
from syncd.ops.app import App
from syncd.store.tables import events as ledger
from syncd.store.tables import sources
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for

TYPES = "user.created,user.updated,user.deleted,organization.created,organization.updated"
STRIPE_KEY = "sk_test_ordering_9d1e"


def eid(ms: int, rand: int = 0) -> str:
    return "event_" + ulid(ms, rand)


A, B, C, D = (eid(1_700_000_000_000 + step * 1000) for step in range(4))


@pytest.mark.parametrize(("ids", "expected"), [
    ([], None),
    ([A], None),
    ([A, B, C, D], None),                    # oldest first
    ([D, C, B, A], (D, C)),                  # newest first
    ([B, A], (B, A)),                        # two events are enough
    ([C, D, A, B], None),                    # a page that ends with older events again: not newest first
    ([D, "evt_not_a_ulid", C], (D, C)),      # ids that are not ULIDs are no evidence either way
    (["x", "y"], None),
    ([D, D], None),                          # the same id twice (a repeated boundary) is not going back
])
def test_newest_first_rule(ids: list[str], expected: tuple[str, str] | None) -> None:
    assert newest_first([{"id": i} for i in ids]) == expected


@pytest.fixture
def wsim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=400, seed=23, api_key=WORKOS_KEY) as simulator:
        yield simulator


@pytest.fixture
def ssim() -> Iterator[StripeSimulator]:
    with StripeSimulator(events=50, seed=5, api_key=STRIPE_KEY) as simulator:
        yield simulator


def build(db_url: str, wsim: WorkOSSimulator, ssim: StripeSimulator, apps: list[App],
          processed: list[str]) -> App:
    registry = Registry()

    @registry.workflow("count", on=workos.events())
    def count(event: Event, ctx: Context) -> None:
        processed.append(event.id)

    app = App.build(settings_for(db_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=wsim.url, WORKOS_EVENTS=TYPES,
                                 STRIPE_API_KEY=STRIPE_KEY, STRIPE_BASE_URL=ssim.url, SYNCD_BUILTINS="stripe"),
                    registry=registry)
    apps.append(app)
    return app


def wanted(sim: WorkOSSimulator) -> list[str]:
    types = set(TYPES.split(","))
    return [e["id"] for e in sim.events() if e["event"] in types]


def cursor_of(app: App, key: str) -> Any:
    with app.db.connect() as conn:
        return conn.execute(sa.select(sources.c.cursor, sources.c.last_error).where(sources.c.key == key)).one()


def ledger_count(app: App, stream: str) -> int:
    with app.db.connect() as conn:
        query = sa.select(sa.func.count()).select_from(ledger).where(ledger.c.stream == stream)
        return int(conn.execute(query).scalar_one())


def by_source(results: list[Any]) -> dict[str, Any]:
    return {r.source: r for r in results}


def test_syncd_asks_oldest_first(db_url: str, wsim: WorkOSSimulator, ssim: StripeSimulator, apps: list[App]) -> None:
    app = build(db_url, wsim, ssim, apps, [])
    app.tick(next(c for c in app.connectors if c.key == "workos"))
    orders = [parse_qs(urlsplit(path).query).get("order") for path, _ in wsim.requests]
    assert orders and all(order == ["asc"] for order in orders)


def test_a_newest_first_first_page_fails_the_tick_and_moves_nothing(
        db_url: str, wsim: WorkOSSimulator, ssim: StripeSimulator, apps: list[App]) -> None:
    processed: list[str] = []
    app = build(db_url, wsim, ssim, apps, processed)
    wsim.faults = Faults(newest_first=True)
    results = by_source(app.tick_all())
    failed = results["workos"]
    assert not failed.ok
    error = str(failed.error)
    assert "\n" not in error and error.startswith("workos: ") and "newest first" in error and "order=asc" in error
    row = cursor_of(app, "workos")
    assert row.cursor is None and row.last_error == error
    assert ledger_count(app, "workos") == 0 and processed == []
    stripe = results["stripe"]  # the other source went on
    assert stripe.ok and stripe.caught_up and ledger_count(app, "stripe") == stripe.new_events > 0

    wsim.faults = Faults()  # the provider lists oldest first again: the next ticks catch up, nothing lost
    for _ in range(20):
        if app.tick_all()[0].caught_up:
            break
    assert Counter(processed) == Counter(wanted(wsim))
    assert cursor_of(app, "workos").cursor == wanted(wsim)[-1]


def test_a_provider_that_turns_newest_first_mid_stream_never_moves_the_cursor(
        db_url: str, wsim: WorkOSSimulator, ssim: StripeSimulator, apps: list[App]) -> None:
    processed: list[str] = []
    app = build(db_url, wsim, ssim, apps, processed)
    for _ in range(20):
        if by_source(app.tick_all())["workos"].caught_up:
            break
    before = cursor_of(app, "workos").cursor
    assert before == wanted(wsim)[-1]
    wsim.generate(300)
    wsim.faults = Faults(newest_first=True)
    for _ in range(3):  # every tick fails the same way; none moves the cursor, none runs a workflow
        result = by_source(app.tick_all())["workos"]
        assert not result.ok and "newest first" in str(result.error)
        assert cursor_of(app, "workos").cursor == before
    assert Counter(processed) == Counter(wanted(wsim)[:len(processed)])
    wsim.faults = Faults()
    for _ in range(20):
        if by_source(app.tick_all())["workos"].caught_up:
            break
    assert Counter(processed) == Counter(wanted(wsim))


def test_the_simulator_knob_lists_newest_first_whatever_order_asks(wsim: WorkOSSimulator) -> None:
    wsim.faults = Faults(newest_first=True)
    with httpx.Client(base_url=wsim.url, headers={"Authorization": f"Bearer {WORKOS_KEY}"}) as client:
        first = client.get("/events", params={"events": TYPES, "order": "asc", "limit": 50}).json()
        ids = [e["id"] for e in first["data"]]
        assert len(ids) == 50 and ids == sorted(ids, reverse=True) and ids[0] == wanted(wsim)[-1]
        older = client.get("/events", params={"events": TYPES, "order": "asc", "after": ids[-1]}).json()
        assert all(e["id"] < ids[-1] for e in older["data"])  # desc semantics: after= lists older events
