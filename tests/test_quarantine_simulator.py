"""The WorkOS simulator's ``poison_every`` knob (issue #17, item 1): every n-th event of the stream is
served broken (a NUL, an unpaired surrogate, 3,000 levels of nesting, no data, not an object). A sync with
the built-in mirrors on SQLite and PostgreSQL catches up in one tick; every other event lands and runs,
every poisoned one is quarantined and listed by ``syncd status``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from simulators.workos import Faults, WorkOSSimulator
from simulators.workos.faults import POISONS
from syncd.ops.app import App
from syncd.ops.status import collect
from syncd.store.reads import SqlReads
from syncd.store.tables import events as ledger
from syncd.store.tables import runs
from tests.conftest import WORKOS_KEY, settings_for, workos_env

EVERY = 7


def test_poisoned_events_are_quarantined_and_the_rest_of_the_stream_lands(
        db_url: str, make_app: Callable[..., App]) -> None:
    with WorkOSSimulator(events=300, seed=23, api_key=WORKOS_KEY) as sim:
        listed = sim.events()  # as stored, before the knob breaks them in flight
        sim.faults = Faults(poison_every=EVERY)
        app = App.build(settings_for(db_url, **workos_env(sim)))
        try:
            types = set(app.connectors[0].event_types)  # type: ignore[attr-defined]
            ticks = app.tick_all()
            assert all(t.ok and t.caught_up for t in ticks), [t.error for t in ticks]
            reads = SqlReads(app.db)
            report = collect(reads, run_limit=500)
            with app.db.connect() as conn:
                landed = {r[0] for r in conn.execute(sa.select(ledger.c.event_id))}
                statuses = {r[0] for r in conn.execute(sa.select(runs.c.status).distinct())}
        finally:
            app.close()
    wanted = [(i, e) for i, e in enumerate(listed) if e["event"] in types]
    poisoned = [(i, e) for i, e in wanted if (i + 1) % EVERY == 0]
    assert poisoned and len({(i + 1) // EVERY % len(POISONS) for i, _ in poisoned}) == len(POISONS)
    assert landed == {e["id"] for i, e in wanted if (i + 1) % EVERY}
    assert statuses == {"succeeded"}  # the mirrors ran on every event that landed
    held = report["quarantined"]
    assert held["total"] == len(poisoned)
    ids: set[Any] = {q["event_id"] for q in held["events"]}
    # every poisoned event that still had an id is listed by it; "not an object" ones have none
    assert {e["id"] for i, e in poisoned if POISONS[((i + 1) // EVERY - 1) % len(POISONS)] != "not_object"} <= ids
