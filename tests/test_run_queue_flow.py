"""Integration flow control through the run queue, end to end (issue #20): an integration's rate limit
spaces the calls of every run at the sink, and a ``Retry-After`` from an integration defers its runs —
the same attempt, due again when the integration may be called — instead of holding a worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.sink import SinkSimulator
from simulators.workos import WorkOSSimulator
from syncd.contracts import Event
from syncd.ops.app import App
from syncd.ops.once import run_once
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for

RATE = 10  # calls per second


@pytest.fixture(scope="module")
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=120, seed=5, api_key=WORKOS_KEY) as simulator:
        yield simulator


def crm_registry() -> Registry:
    registry = Registry()

    @registry.workflow("crm", on=workos.events("user.created"), retries=2)
    def crm(event: Event, ctx: Context) -> None:
        ctx.step("upsert", lambda: ctx.http("crm").post("/contacts", json={"id": event.data["id"]}).status_code,
                 retries=0)

    return registry


def build(db_url: str, sim: WorkOSSimulator, sink: SinkSimulator, apps: list[App], **env: str) -> App:
    app = App.build(settings_for(db_url, SYNCD_BUILTINS="none", WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.url,
                                 SYNCD_INTEGRATION_CRM_URL=sink.url, SYNCD_WORKERS="8", **env),
                    registry=crm_registry())
    apps.append(app)
    return app


def statuses(app: App) -> dict[str, int]:
    with app.db.connect() as conn:
        return dict(conn.execute(sa.text("SELECT status || ':' || attempts, count(*) FROM syncd_runs "
                                         "GROUP BY status, attempts")).all())


def test_an_integrations_rate_limit_spaces_every_runs_calls(db_url: str, sim: WorkOSSimulator,
                                                            apps: list[App]) -> None:
    with SinkSimulator() as sink:
        app = build(db_url, sim, sink, apps, SYNCD_INTEGRATION_CRM_RATE=f"{RATE}/s")
        created = len([e for e in sim.events() if e["event"] == "user.created"])
        for _ in range(10):  # runs deferred past a once's short wait are due at the next one
            run_once(app)
            if statuses(app) == {"succeeded:1": created}:
                break
        assert statuses(app) == {"succeeded:1": created}  # deferrals are not attempts
        arrived = sorted(c.arrived_at for c in sink.calls)
    assert len(arrived) == created
    # Eight workers would send them all at once; the limit lets one through every 1/RATE s. (A lower bound:
    # a slow machine only spaces them more.)
    span = arrived[-1] - arrived[0]
    assert span >= 0.9 * (created - 1) / RATE, span


def test_retry_after_from_an_integration_defers_its_runs_without_counting_attempts(
        db_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    with SinkSimulator(fail_rate=0.3, seed=4, fail_status=429, retry_after=1) as sink:
        app = build(db_url, sim, sink, apps)
        created = len([e for e in sim.events() if e["event"] == "user.created"])
        for _ in range(20):
            run_once(app)
            if statuses(app) == {"succeeded:1": created}:
                break
        assert statuses(app) == {"succeeded:1": created}  # every 429 deferred its run, no attempt spent
        refused = [c for c in sink.calls if c.status == 429]
        delivered = [c for c in sink.calls if c.status < 300]
    assert refused and len({c.body["id"] for c in delivered}) == len(delivered) == created
