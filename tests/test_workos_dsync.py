"""The built-in WorkOS Directory Sync mirror (issue #24, item 3), on SQLite and PostgreSQL, synced over loopback
HTTP from the WorkOS simulator's Directory Sync lifecycle (``WorkOSSimulator(dsync=SHARE)``).

The expected rows are built here from the simulator's *truth* (``directory_state()``: what WorkOS holds,
kept by the generator, never replayed from events) and checked against its replay oracle as well
(``directory_final_state()``). The mirror must equal both after a catch-up, after stale events (older
snapshots sent again), after out-of-order events (a burst listed shuffled), and after a directory's
deletion (a sole ``dsync.deleted``, as WorkOS sends) followed by stale events about what it held. A
hypothesis property draws the scenarios.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from connectors.workos import dsync
from connectors.workos.client import WorkOSConnector
from connectors.workos.tables import directories, directory_group_members, directory_groups, directory_users
from simulators.workos import WorkOSSimulator, parse_timestamp
from syncd.engine import SyncEngine
from syncd.ops.app import App
from syncd.settings import Secret
from syncd.store import SqlStore
from syncd.store.db import create_engine
from syncd.store.schema import migrate
from syncd.store.tables import tombstones
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, settings_for
from tests.test_github_sync import catch_up

TABLES = {"directories": directories, "directory_users": directory_users, "directory_groups": directory_groups,
          "directory_group_members": directory_group_members}


def when(value: Any) -> Any:
    return parse_timestamp(value) if isinstance(value, str) else None


def expected(state: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The rows the mirror must hold for ``state`` (the simulator's truth or its replay)."""
    rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in TABLES}
    for key, d in state["directories"].items():
        rows["directories"][key] = {
            "id": key, "organization_id": d["organization_id"], "name": d["name"], "type": d["type"],
            "state": d["state"], "domains": d["domains"], "created_at": when(d["created_at"]),
            "updated_at": when(d["updated_at"])}
    for key, u in state["directory_users"].items():
        rows["directory_users"][key] = {
            "id": key, "directory_id": u["directory_id"], "organization_id": u["organization_id"],
            "idp_id": u["idp_id"], "email": u["emails"][0]["value"], "first_name": u["first_name"],
            "last_name": u["last_name"], "username": u["username"], "state": u["state"],
            "role": u["role"]["slug"], "custom_attributes": u["custom_attributes"],
            "created_at": when(u["created_at"]), "updated_at": when(u["updated_at"])}
    for key, g in state["directory_groups"].items():
        rows["directory_groups"][key] = {
            "id": key, "directory_id": g["directory_id"], "organization_id": g["organization_id"],
            "idp_id": g["idp_id"], "name": g["name"], "created_at": when(g["created_at"]),
            "updated_at": when(g["updated_at"])}
    for key, m in state["directory_group_members"].items():
        rows["directory_group_members"][key] = {
            "id": key, "group_id": m["group_id"], "user_id": m["user_id"], "directory_id": m["directory_id"],
            "organization_id": m["organization_id"], "updated_at": when(m["added_at"])}
    return rows


def mirrored(db: Engine) -> dict[str, dict[str, dict[str, Any]]]:
    with db.connect() as conn:
        return {name: {row["id"]: dict(row) for row in conn.execute(sa.select(table)).mappings()}
                for name, table in TABLES.items()}


def assert_mirror_is_the_truth(db: Engine, sim: WorkOSSimulator) -> None:
    truth = expected(sim.directory_state())
    assert expected(sim.directory_final_state()) == truth, "the simulator's replay oracle disagrees with its truth"
    actual = mirrored(db)
    for name in TABLES:  # table by table: a failure names the table and the ids
        missing, extra = set(truth[name]) - set(actual[name]), set(actual[name]) - set(truth[name])
        assert not missing and not extra, (name, sorted(missing)[:5], sorted(extra)[:5])
        assert actual[name] == truth[name], name


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=1200, seed=31, api_key=WORKOS_KEY, dsync=0.6) as simulator:
        yield simulator


def build(db_url: str, sim: WorkOSSimulator, apps: list[App], **env: str) -> App:
    app = App.build(settings_for(db_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.url, **env),
                    registry=Registry())
    apps.append(app)
    return app


def test_the_mirror_equals_the_simulators_directories(db_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    app = build(db_url, sim, apps, SYNCD_BUILTINS="workos")
    catch_up(app, app.connectors[0])
    truth = sim.directory_state()
    assert {name: len(objects) > 5 for name, objects in truth.items()} == dict.fromkeys(truth, True)
    kinds = {e["event"] for e in sim.events()}
    assert set(dsync.TARGETS) <= kinds, set(dsync.TARGETS) - kinds  # every type was exercised
    assert_mirror_is_the_truth(app.db, sim)
    sim.generate(400)  # later ticks go on from the cursor
    catch_up(app, app.connectors[0])
    assert_mirror_is_the_truth(app.db, sim)


def test_directory_sync_types_are_requested_only_with_the_builtin_mirror(
        sqlite_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    on = build(sqlite_url, sim, apps, SYNCD_BUILTINS="workos")
    assert set(dsync.TARGETS) <= set(on.connectors[0].event_types)  # type: ignore[attr-defined]
    assert "workos.mirror.directory_sync" in {wf.name for wf in on.registry.all()}
    off = build(sqlite_url, sim, apps, SYNCD_BUILTINS="none", WORKOS_EVENTS="user.created")
    assert "workos.mirror.directory_sync" not in {wf.name for wf in off.registry.all()}


def test_stale_and_out_of_order_events_leave_the_truth(db_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    app = build(db_url, sim, apps, SYNCD_BUILTINS="workos")
    catch_up(app, app.connectors[0])
    history = [e for e in sim.events() if e["event"].startswith("dsync.")]
    rng = random.Random(7)
    burst = sim.dsync_events(300)
    stale = [{"event": e["event"], "data": e["data"], "created_at": e["created_at"]} for e in rng.sample(history, 80)]
    delivery = burst + stale + rng.sample(burst, 40)  # some of the burst twice
    rng.shuffle(delivery)
    sim.append(delivery)
    times = [when(e["created_at"]) for e in sim.events()[-len(delivery):]]
    assert times != sorted(times), "the burst is listed out of order"
    catch_up(app, app.connectors[0])
    assert_mirror_is_the_truth(app.db, sim)


def test_a_deleted_directory_takes_what_it_held_and_stale_events_do_not_bring_it_back(
        db_url: str, apps: list[App]) -> None:
    with WorkOSSimulator(events=0, api_key=WORKOS_KEY) as sim:
        app = build(db_url, sim, apps, SYNCD_BUILTINS="workos")
        made = sim.dsync_events(1)  # one directory
        directory = made[0]["data"]
        while len(sim.directory_state()["directory_group_members"]) < 3:
            made += sim.dsync_events(1)
        sim.append(made)
        catch_up(app, app.connectors[0])
        before = mirrored(app.db)
        assert before["directory_group_members"] and before["directory_users"]
        assert {row["directory_id"] for row in before["directory_users"].values()} == {directory["id"]}
        deleted = {**directory, "state": "deleting"}  # the directory as it was before: its old updated_at
        sim.append({"event": "dsync.deleted", "data": deleted})
        sim.append([{"event": e["event"], "data": e["data"], "created_at": e["created_at"]} for e in made])  # stale
        catch_up(app, app.connectors[0])
        assert mirrored(app.db) == {name: {} for name in TABLES}
        assert expected(sim.directory_final_state()) == mirrored(app.db)


def test_a_membership_event_without_its_user_fails_that_run_only(sqlite_url: str, apps: list[App]) -> None:
    with WorkOSSimulator(events=0, api_key=WORKOS_KEY) as sim:
        app = build(sqlite_url, sim, apps, SYNCD_BUILTINS="workos")
        sim.append([{"event": "dsync.group.user_added", "data": {"directory_id": "directory_x", "group": {"id": "g"}}},
                    *sim.dsync_events(3)])
        [result] = app.tick_all()
        assert result.ok
        assert any("has no data.user.id" in error for _, _, error in result.failed_runs)
        assert len(mirrored(app.db)["directories"]) == 1  # the events after it applied


# ---- the property: any delivery order, any stale repeats ---------------------------------------------------

EXAMPLES = itertools.count()


@pytest.fixture
def database(db_url: str) -> Iterator[Engine]:
    db = create_engine(db_url)
    migrate(db)
    yield db
    db.dispose()


def clear(db: Engine) -> None:
    """Empty the mirror and its tombstones: each example starts from nothing (one database for all)."""
    with db.begin() as conn:
        for table in TABLES.values():
            conn.execute(sa.delete(table))
        conn.execute(sa.delete(tombstones).where(tombstones.c.kind.in_([t.name for t in TABLES.values()])))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**20), history=st.integers(0, 150), burst=st.integers(1, 120),
       repeats=st.integers(0, 40), order=st.randoms(use_true_random=False))
def test_property_the_mirror_is_the_truth_whatever_the_order(database: Engine, seed: int, history: int, burst: int,
                                                             repeats: int, order: random.Random) -> None:
    clear(database)
    registry = Registry()
    dsync.register(registry)
    stream = f"workos:d{next(EXAMPLES)}"  # a stream per example: its ledger starts empty too
    with WorkOSSimulator(events=history, seed=seed, api_key=WORKOS_KEY, dsync=1.0) as sim:
        connector = WorkOSConnector(api_key=Secret(WORKOS_KEY), base_url=sim.url, event_types=sorted(dsync.TARGETS),
                                    key=stream)
        try:
            engine = SyncEngine(SqlStore(database), registry)
            assert engine.sync(connector).ok  # the history, in order
            made = sim.dsync_events(burst)
            sent = [{"event": e["event"], "data": e["data"], "created_at": e["created_at"]} for e in sim.events()]
            delivery = made + [order.choice(sent + made) for _ in range(repeats)]
            order.shuffle(delivery)
            sim.append(delivery)
            for _ in range(10):
                result = engine.sync(connector)
                assert result.ok, result.error
                if result.caught_up:
                    break
        finally:
            connector.close()
        assert_mirror_is_the_truth(database, sim)
