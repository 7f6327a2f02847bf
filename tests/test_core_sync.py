"""The core guarantees of issue 2, end to end: the WorkOS simulator over real loopback HTTP → syncd → a real
database (a SQLite file, and the throwaway PostgreSQL for tests taking ``db_url``).

Expected mirror rows are built here from the simulator's own objects (``sim.final_state()``), not with
syncd's row mappers, so a wrong mapping shows up as a difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connectors import workos
from connectors.workos.client import WorkOSConnector
from connectors.workos.dsync import TARGETS as DSYNC_TARGETS
from connectors.workos.tables import memberships, organizations, users
from simulators.workos import WorkOSSimulator
from syncd.contracts import Event
from syncd.engine import TickResult
from syncd.errors import ConfigError, FatalError
from syncd.ops.app import App
from syncd.settings import Secret
from syncd.store.tables import events as ledger
from syncd.store.tables import runs, sources, ticks
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for, workos_env

MakeApp = Callable[..., App]

MIRROR_TYPES = frozenset(f"{kind}.{verb}" for kind in ("user", "organization", "organization_membership")
                         for verb in ("created", "updated", "deleted"))
#: bucket of ``sim.final_state()`` → (mirror table, built-in workflow that fills it, event type prefix)
BUCKETS = {
    "users": (users, "workos.mirror.users", "user"),
    "organizations": (organizations, "workos.mirror.organizations", "organization"),
    "organization_memberships": (memberships, "workos.mirror.organization_memberships",
                                 "organization_membership"),
}
WORKFLOW_OF_PREFIX = {prefix: wf for _, wf, prefix in BUCKETS.values()}
#: Tables a replay must leave byte-for-byte unchanged, with their primary keys for a stable order.
STATE_TABLES = {
    "syncd_events": "stream, event_id", "syncd_runs": "workflow, stream, event_id",
    "syncd_tombstones": "kind, object_id", "workos_users": "id", "workos_organizations": "id",
    "workos_organization_memberships": "id",
}


# ---- helpers ------------------------------------------------------------------------------------------

def ts(value: Any) -> datetime | None:
    """Any timestamp either side may hold → an aware UTC datetime (naive means UTC)."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def expected_row(bucket: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What the mirror should hold for a WorkOS object, written from the WorkOS field list."""
    common = {"id": obj["id"], "created_at": ts(obj.get("created_at")), "updated_at": ts(obj["updated_at"])}
    if bucket == "users":
        return {**common, "email": obj["email"], "first_name": obj["first_name"],
                "last_name": obj["last_name"], "email_verified": obj["email_verified"],
                "profile_picture_url": obj["profile_picture_url"],
                "external_id": obj["external_id"], "last_sign_in_at": ts(obj["last_sign_in_at"]),
                "metadata": obj["metadata"]}
    if bucket == "organizations":
        return {**common, "name": obj["name"], "domains": obj["domains"], "metadata": obj["metadata"],
                "external_id": obj["external_id"]}
    return {**common, "user_id": obj["user_id"], "organization_id": obj["organization_id"],
            "status": obj["status"], "role": obj["role"]["slug"],
            "custom_attributes": obj["custom_attributes"],
            "directory_managed": obj["directory_managed"]}


def expected_state(sim: WorkOSSimulator) -> dict[str, dict[str, dict[str, Any]]]:
    return {bucket: {oid: expected_row(bucket, obj) for oid, obj in objects.items()}
            for bucket, objects in sim.final_state().items()}


def mirror_state(db: Engine) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    with db.connect() as conn:
        for bucket, (table, _, _) in BUCKETS.items():
            rows = conn.execute(sa.select(table)).mappings().all()
            out[bucket] = {r["id"]: {k: ts(v) if isinstance(v, datetime) else v for k, v in r.items()}
                           for r in rows}
    return out


def assert_mirror_exact(db: Engine, sim: WorkOSSimulator) -> None:
    """Every row of every WorkOS mirror table equals the simulator's final state, field by field."""
    expected, actual = expected_state(sim), mirror_state(db)
    for bucket, (table, _, _) in BUCKETS.items():
        assert set(expected[bucket]) == set(actual[bucket]), f"{table.name}: ids differ"
        for oid, row in expected[bucket].items():
            assert set(row) == set(table.c.keys()), f"{table.name} has columns this test does not check"
            assert actual[bucket][oid] == row, f"{table.name} row {oid} differs"


def requested_ids(sim: WorkOSSimulator, types: frozenset[str] = MIRROR_TYPES) -> list[str]:
    return [e["id"] for e in sim.events() if e["event"] in types]


def ledger_rows(db: Engine) -> list[tuple[str, str]]:
    with db.connect() as conn:
        query = (sa.select(ledger.c.event_id, ledger.c.type).where(ledger.c.stream == "workos")
                 .order_by(ledger.c.event_id))
        return [(r.event_id, r.type) for r in conn.execute(query)]


def runs_by_event(db: Engine) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with db.connect() as conn:
        for r in conn.execute(sa.select(runs.c.event_id, runs.c.workflow, runs.c.status)):
            out.setdefault(r.event_id, {})[r.workflow] = r.status
    return out


def source_row(db: Engine, key: str = "workos") -> Any:
    with db.connect() as conn:
        return conn.execute(sa.select(sources).where(sources.c.key == key)).one()


def sync_until_caught_up(app: App, max_ticks: int = 10) -> list[TickResult]:
    results: list[TickResult] = []
    for _ in range(max_ticks):
        tick = app.tick_all()
        results.extend(tick)
        assert all(r.ok for r in tick), [r.error for r in tick]
        if all(r.caught_up for r in tick):
            return results
    raise AssertionError(f"not caught up after {max_ticks} ticks")


def snapshot(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Raw rows of every state table (SQLite: the stored text itself)."""
    with db.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY {order}"))]
                for t, order in STATE_TABLES.items()}


def after_param(path: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get("after")
    return values[-1] if values else None


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    """A smaller stream than ``workos_sim`` (~220 WorkOS mirror events, 3 pages) for the narrower tests."""
    with WorkOSSimulator(events=230, seed=11, api_key=WORKOS_KEY) as simulator:
        yield simulator


# ---- 1. full sync -------------------------------------------------------------------------------------

def test_full_sync_mirrors_the_final_state_exactly(db_url: str, make_app: MakeApp,
                                                    workos_sim: WorkOSSimulator) -> None:
    app = make_app(db_url, **workos_env(workos_sim))
    [first] = app.tick_all()
    # one tick pages until caught up (no one-page-per-tick limit)
    assert first.ok and first.caught_up, first.error
    wanted = requested_ids(workos_sim)
    assert first.pages == -(-len(wanted) // 100)
    assert first.new_events == first.events == len(wanted)
    sync_until_caught_up(app)

    assert_mirror_exact(app.db, workos_sim)
    state = expected_state(workos_sim)
    assert all(state.values()), "the simulated stream should leave objects in every table"
    deleted = {e["data"]["id"] for e in workos_sim.events() if e["event"].endswith(".deleted")}
    assert deleted, "the simulated stream should delete some objects"
    assert not deleted & set(mirror_state(app.db)["users"])

    # the ledger holds exactly the requested events; each has one succeeded run per matching built-in workflow
    recorded = ledger_rows(app.db)
    assert [event_id for event_id, _ in recorded] == sorted(wanted)
    by_event = runs_by_event(app.db)
    for event_id, event_type in recorded:
        matching = WORKFLOW_OF_PREFIX[event_type.rpartition(".")[0]]
        assert by_event.get(event_id) == {matching: "succeeded"}, event_id
    assert set(by_event) == {event_id for event_id, _ in recorded}  # no run without a ledger entry

    row = source_row(app.db)
    assert row.cursor == wanted[-1]
    assert row.events_seen == len(wanted)
    assert row.last_error is None and row.last_success_at is not None
    assert row.lease_owner is None  # released after the tick
    # every request carried the contract's parameters
    for path, status in workos_sim.requests:
        query = parse_qs(urlsplit(path).query)
        assert status == 200
        assert set(query["events"][0].split(",")) == MIRROR_TYPES | set(DSYNC_TARGETS)  # + Directory Sync's mirror
        assert (query["limit"], query["order"]) == (["100"], ["asc"])


def test_full_sync_parses_every_timestamp_form(sqlite_url: str, make_app: MakeApp) -> None:
    """The simulator's mixed style writes the three forms WorkOS has sent (``…Z``, space + ms, space + µs)."""
    with WorkOSSimulator(events=250, seed=5, api_key=WORKOS_KEY, timestamp_style="mixed") as sim:
        stamps = [e["created_at"] for e in sim.events()]
        assert any(s.endswith("Z") for s in stamps)
        assert any(" " in s and len(s.rpartition(".")[2]) == 3 for s in stamps)
        assert any(" " in s and len(s.rpartition(".")[2]) == 6 for s in stamps)
        app = make_app(sqlite_url, **workos_env(sim))
        [result] = sync_until_caught_up(app)
        assert result.skipped == 0
        assert_mirror_exact(app.db, sim)
        with app.db.connect() as conn:
            stored = dict(conn.execute(sa.select(ledger.c.event_id, ledger.c.occurred_at)).all())
        for event in sim.events():
            if event["id"] in stored:
                assert stored[event["id"]] == ts(event["created_at"])


# ---- 2. restart mid-stream ------------------------------------------------------------------------------

def test_restart_mid_stream_resumes_without_gap_or_duplicate(db_url: str, make_app: MakeApp,
                                                            sim: WorkOSSimulator) -> None:
    env = workos_env(sim)
    wanted = requested_ids(sim)
    crashed = make_app(db_url, **env)
    [partial] = crashed.tick_all(max_pages=2)  # the process dies after committing two pages
    assert partial.ok and not partial.caught_up and partial.pages == 2
    assert source_row(crashed.db).cursor == wanted[199]
    assert len(ledger_rows(crashed.db)) == 200
    crashed.close()

    requests_before = len(sim.requests)
    fresh = make_app(db_url, **env)
    results = sync_until_caught_up(fresh)
    # the fresh process starts from the stored cursor, not from the beginning
    assert after_param(sim.requests[requests_before][0]) == wanted[199]
    assert [event_id for event_id, _ in ledger_rows(fresh.db)] == sorted(wanted)  # no gap
    by_event = runs_by_event(fresh.db)
    assert sum(len(v) for v in by_event.values()) == len(wanted)
    assert all(status == "succeeded" for v in by_event.values() for status in v.values())
    # no run executed twice: the two processes ran exactly one run per event between them
    assert partial.runs_ok + sum(r.runs_ok for r in results) == len(wanted)
    assert sum(r.new_events for r in results) == len(wanted) - 200
    assert_mirror_exact(fresh.db, sim)
    assert source_row(fresh.db).events_seen == len(wanted)


# ---- 3. replay ----------------------------------------------------------------------------------------

def test_replaying_the_whole_stream_changes_nothing(db_url: str, make_app: MakeApp,
                                                    sim: WorkOSSimulator) -> None:
    app = make_app(db_url, **workos_env(sim))
    sync_until_caught_up(app)
    before = snapshot(app.db)
    cursor = source_row(app.db).cursor
    assert all(before[t] for t in STATE_TABLES), "every state table should have rows to compare"

    with app.db.begin() as conn:
        conn.execute(sa.update(sources).where(sources.c.key == "workos").values(cursor=None))
    [replay] = app.tick_all()

    assert replay.ok and replay.caught_up, replay.error
    assert replay.events == len(requested_ids(sim))  # the whole stream came again…
    assert (replay.new_events, replay.runs_ok, replay.runs_failed) == (0, 0, 0)  # …and nothing ran
    assert snapshot(app.db) == before
    row = source_row(app.db)
    assert row.cursor == cursor
    assert row.events_seen == len(requested_ids(sim))
    assert row.last_error is None


# ---- 4. out-of-order and stale events -------------------------------------------------------------------

def test_stale_updates_never_overwrite_newer_rows_nor_resurrect(db_url: str, make_app: MakeApp,
                                                                sim: WorkOSSimulator) -> None:
    app = make_app(db_url, **workos_env(sim))
    sync_until_caught_up(app)
    live = expected_state(sim)["users"]
    alive_id, alive = sorted(live.items())[0]
    deleted_event = next(e for e in sim.events() if e["event"] == "user.deleted")
    dead = deleted_event["data"]
    dead_at = ts(dead["updated_at"])
    assert dead_at is not None and alive["updated_at"] is not None
    snapshot_of = {e["data"]["id"]: e["data"] for e in sim.events() if e["event"].startswith("user.")}

    def update(data: dict[str, Any], at: datetime, **change: Any) -> dict[str, Any]:
        return {"event": "user.updated", "data": {**data, **change, "updated_at": at.isoformat()}}

    base = snapshot_of[alive_id]
    newer_at = alive["updated_at"] + timedelta(hours=2)
    sim.append([
        update(base, newer_at, first_name="Newer"),
        update(base, newer_at - timedelta(hours=1), first_name="Stale"),  # arrives after, is older
        update(base, alive["updated_at"] - timedelta(days=1), first_name="Ancient"),
        update(dead, dead_at - timedelta(seconds=1), first_name="Zombie"),  # older than the delete
        {"event": "user.created", "data": {**dead, "first_name": "Zombie", "updated_at": dead["created_at"]}},
        update(dead, dead_at, first_name="Zombie"),  # same instant as the delete: the delete wins
    ])
    [result] = app.tick_all()
    assert result.ok and result.new_events == 6 and result.runs_ok == 6 and result.runs_failed == 0

    mirrored = mirror_state(app.db)["users"]
    assert mirrored[alive_id]["first_name"] == "Newer"
    assert mirrored[alive_id]["updated_at"] == newer_at
    assert dead["id"] not in mirrored
    assert_mirror_exact(app.db, sim)  # the simulator applies the same newer-wins rules

    # a genuinely newer event after a delete is a new version and does apply (the rule is not "never again")
    sim.append(update(dead, dead_at + timedelta(seconds=1), first_name="Reborn"))
    assert app.tick_all()[0].ok
    assert mirror_state(app.db)["users"][dead["id"]]["first_name"] == "Reborn"
    assert_mirror_exact(app.db, sim)


# ---- 5. a failing workflow ----------------------------------------------------------------------------

NOTES = sa.Table("test_notes", sa.MetaData(), sa.Column("workflow", sa.String(50), primary_key=True),
                 sa.Column("event_id", sa.String(64), primary_key=True))


class Poison:
    """User workflows on ``user.created``: ``welcome`` writes a note then raises on one event, ``strict``
    makes the database itself fail on another (a duplicate key: on PostgreSQL this aborts the transaction up
    to the savepoint), ``audit`` always writes."""

    def __init__(self, event_id: str, sql_event_id: str = "none") -> None:
        self.event_id = event_id
        self.sql_event_id = sql_event_id
        self.armed = True
        self.registry = Registry()
        self.registry.workflow("welcome", on=workos.events("user.created"), version="1.0.0")(self.welcome)
        self.registry.workflow("strict", on=workos.events("user.created"))(self.strict)
        self.registry.workflow("audit", on=workos.events("user.created"))(self.audit)

    def welcome(self, event: Event, ctx: Context) -> None:
        ctx.db.execute(NOTES.insert().values(workflow="welcome", event_id=event.id))
        if self.armed and event.id == self.event_id:
            raise RuntimeError(f"mail server refused {event.data['email']}")

    def strict(self, event: Event, ctx: Context) -> None:
        ctx.db.execute(NOTES.insert().values(workflow="strict", event_id=event.id))
        if self.armed and event.id == self.sql_event_id:
            ctx.db.execute(NOTES.insert().values(workflow="strict", event_id=event.id))

    def audit(self, event: Event, ctx: Context) -> None:
        ctx.db.execute(NOTES.insert().values(workflow="audit", event_id=event.id))


def notes(db: Engine, workflow: str) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(sa.select(NOTES.c.event_id).where(NOTES.c.workflow == workflow)).scalars())


def test_a_failing_workflow_does_not_stop_the_others(db_url: str, make_app: MakeApp,
                                                     sim: WorkOSSimulator) -> None:
    created = [e for e in sim.events() if e["event"] == "user.created"]
    victim, sql_victim = created[len(created) // 2], created[len(created) // 3]
    poison = Poison(victim["id"], sql_victim["id"])
    app = make_app(db_url, registry=poison.registry, **workos_env(sim))
    NOTES.create(app.db)

    [result] = app.tick_all()
    assert result.ok and result.caught_up, result.error
    assert result.runs_failed == 2
    # Workers run runs side by side, so the two failures are reported in the order they ended: sort them.
    strict, welcome = sorted(result.failed_runs)
    assert strict == ("strict", sql_victim["id"], strict[2]) and "IntegrityError" in strict[2]
    # the payload's e-mail is masked in the stored error (SYNCD_LOG_PAYLOADS is off by default; syncd.payloads)
    assert welcome == ("welcome", victim["id"], "RuntimeError: mail server refused [payload value]")
    assert source_row(app.db).cursor == requested_ids(sim)[-1]  # the cursor went past the failures

    created_ids = {e["id"] for e in created}
    assert notes(app.db, "welcome") == created_ids - {victim["id"]}  # the failing run's write rolled back
    assert notes(app.db, "strict") == created_ids - {sql_victim["id"]}
    assert notes(app.db, "audit") == created_ids  # another workflow's write for that same event persisted
    assert_mirror_exact(app.db, sim)  # and so did the built-in mirror's
    by_event = runs_by_event(app.db)
    assert by_event[victim["id"]] == {"welcome": "failed", "strict": "succeeded", "audit": "succeeded",
                                      "workos.mirror.users": "succeeded"}
    assert by_event[sql_victim["id"]] == {"welcome": "succeeded", "strict": "failed", "audit": "succeeded",
                                          "workos.mirror.users": "succeeded"}
    with app.db.connect() as conn:
        run = conn.execute(sa.select(runs).where(runs.c.workflow == "welcome",
                                                 runs.c.event_id == victim["id"])).one()
    assert run.attempts == 1
    assert "mail server refused" in run.last_error
    assert run.next_attempt_at is not None and run.next_attempt_at > run.started_at
    assert run.workflow_version == "1.0.0"

    # the failed run is retried on a later tick once due; the others are not run again
    poison.armed = False
    with app.db.begin() as conn:
        conn.execute(sa.update(runs).where(runs.c.status == "failed")
                     .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    [retry] = app.tick_all()
    assert retry.ok and retry.runs_ok == 2 and retry.runs_failed == 0
    assert notes(app.db, "welcome") == notes(app.db, "strict") == created_ids
    assert runs_by_event(app.db)[victim["id"]]["welcome"] == "succeeded"
    assert runs_by_event(app.db)[sql_victim["id"]]["strict"] == "succeeded"


def test_a_workflow_added_later_runs_once_on_replayed_events(sqlite_url: str, make_app: MakeApp,
                                                              sim: WorkOSSimulator) -> None:
    env = workos_env(sim)
    first = make_app(sqlite_url, **env)
    sync_until_caught_up(first)
    first.close()
    poison = Poison("none")
    later = make_app(sqlite_url, registry=poison.registry, **env)
    NOTES.create(later.db)
    with later.db.begin() as conn:
        conn.execute(sa.update(sources).values(cursor=None))  # replay, as `syncd replay` would
    [result] = later.tick_all()
    created_ids = {e["id"] for e in sim.events() if e["event"] == "user.created"}
    assert result.ok and result.new_events == 0
    assert result.runs_ok == 3 * len(created_ids)  # only the new workflows ran, once per event
    assert notes(later.db, "welcome") == notes(later.db, "strict") == notes(later.db, "audit") == created_ids
    [again] = later.tick_all()
    assert again.runs_ok == 0


# ---- 6. unknown event types and malformed events ---------------------------------------------------------

def test_unknown_event_types_are_recorded_not_run(sqlite_url: str, make_app: MakeApp,
                                                  sim: WorkOSSimulator) -> None:
    extra = frozenset({"session.created", "connection.activated", "dsync.user.created"})
    app = make_app(sqlite_url, WORKOS_EVENTS=",".join(sorted(MIRROR_TYPES | extra)), **workos_env(sim))
    [result] = sync_until_caught_up(app)
    assert result.runs_failed == 0 and result.error is None

    unknown = requested_ids(sim, extra)
    assert unknown, "the simulated stream should contain other event types"
    recorded = dict(ledger_rows(app.db))
    assert set(recorded) == set(requested_ids(sim, MIRROR_TYPES | extra))
    assert {recorded[i] for i in unknown} <= extra
    by_event = runs_by_event(app.db)
    assert not set(unknown) & set(by_event)  # no workflow listens: no run, no error
    assert len(by_event) == len(requested_ids(sim))
    assert_mirror_exact(app.db, sim)


def test_malformed_events_are_skipped_and_counted(sqlite_url: str, make_app: MakeApp,
                                                  sim: WorkOSSimulator) -> None:
    app = make_app(sqlite_url, **workos_env(sim))
    sync_until_caught_up(app)
    sim.append([
        {"event": "user.updated", "data": "not an object"},
        {"event": "user.created", "data": [1, 2, 3]},
        {"event": "user.deleted", "data": None},
        {"event": "user.updated", "data": {"id": "user_x", "updated_at": "2026-01-15T12:00:00Z"},
         "created_at": "the day before yesterday"},
        {"event": "user.created", "data": {
            "object": "user", "id": "user_after_poison", "email": "ok@example.com", "first_name": "Ok",
            "last_name": "After", "email_verified": True, "profile_picture_url": None, "external_id": None,
            "last_sign_in_at": None, "metadata": {}, "created_at": "2026-01-16T00:00:00.000Z",
            "updated_at": "2026-01-16T00:00:00.000Z"}},
    ])
    last_id = sim.events()[-1]["id"]
    [result] = app.tick_all()
    assert result.ok, result.error
    assert result.skipped == 4
    assert result.new_events == 1 and result.runs_ok == 1
    assert source_row(app.db).cursor == last_id  # the malformed events did not hold the cursor back
    assert "user_after_poison" in mirror_state(app.db)["users"]
    with app.db.connect() as conn:
        recorded = conn.execute(sa.select(ticks.c.ok, ticks.c.skipped)
                                .order_by(ticks.c.id.desc()).limit(1)).one()
    assert tuple(recorded) == (True, 4)
    assert [r.ok for r in app.tick_all()] == [True]  # and nothing is stuck afterwards


def canned_connector(pages: list[dict[str, Any]]) -> tuple[WorkOSConnector, list[str | None]]:
    """A connector on ``httpx.MockTransport`` serving ``pages`` in order (shapes the simulator can't make)."""
    seen_after: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_after.append(request.url.params.get("after"))
        return httpx.Response(200, json=pages[min(len(seen_after), len(pages)) - 1])

    connector = WorkOSConnector(api_key=Secret(WORKOS_KEY), base_url="http://workos.invalid",
                                event_types=sorted(MIRROR_TYPES), transport=httpx.MockTransport(handler))
    return connector, seen_after


def test_events_without_id_or_type_are_skipped_by_the_engine(sqlite_url: str) -> None:
    user = {"id": "user_1", "email": "a@example.com", "updated_at": "2026-01-15T12:00:00Z"}
    good = {"object": "event", "id": "event_02", "event": "user.created",
            "created_at": "2026-01-15T12:00:00Z", "data": user}
    data = [
        {"object": "event", "event": "user.created", "created_at": "2026-01-15T11:00:00Z",
         "data": user},  # no id
        {"object": "event", "id": "event_01", "created_at": "2026-01-15T11:00:00Z", "data": user},  # no event
        "garbage",
        good,
        {"object": "event", "id": "event_03", "event": "user.updated", "created_at": "2026-01-15T12:00:00Z",
         "data": "x"},  # last on the page, malformed, yet the cursor passes it
    ]
    connector, seen_after = canned_connector([
        {"object": "list", "data": data, "list_metadata": {"before": None, "after": "event_03"}},
        {"object": "list", "data": [], "list_metadata": {"before": None, "after": None}},
    ])
    app = App.build(settings_for(sqlite_url), registry=Registry(), connectors=[connector])
    try:
        result = app.tick(connector)
        assert result.ok and result.caught_up, result.error
        assert (result.pages, result.skipped, result.new_events, result.runs_ok) == (2, 4, 1, 1)
        assert seen_after == [None, "event_03"]
        assert ledger_rows(app.db) == [("event_02", "user.created")]
        assert source_row(app.db).cursor == "event_03"
    finally:
        app.close()


def test_a_provider_that_does_not_advance_is_stopped_by_the_loop_guard(sqlite_url: str, make_app: MakeApp,
                                                                      sim: WorkOSSimulator) -> None:
    from simulators.workos import Faults

    wanted = requested_ids(sim)
    sim.faults = Faults(stuck_after=wanted[99])  # the page after event 100 is served forever
    app = make_app(sqlite_url, **workos_env(sim))
    [result] = app.tick_all()
    assert not result.ok
    assert "did not move" in (result.error or "")
    assert result.pages == 2  # two good pages committed, then the repeat was refused
    assert len(sim.requests) == 3
    assert source_row(app.db).cursor == wanted[199]
    assert len(ledger_rows(app.db)) == 200


# ---- 7. credentials and contract errors ---------------------------------------------------------------

def test_a_rejected_key_fails_the_tick_clearly_without_leaking_it(
        sqlite_url: str, make_app: MakeApp, sim: WorkOSSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk_test_wrong_key_0d9f31"
    app = make_app(sqlite_url, WORKOS_API_KEY=wrong, WORKOS_BASE_URL=sim.url)
    [result] = app.tick_all()  # returns: a rejected key fails that source, it does not crash the daemon

    assert not result.ok
    assert result.error is not None and "WORKOS_API_KEY" in result.error and "401" in result.error
    assert [status for _, status in sim.requests] == [401]  # not retried
    row = source_row(app.db)
    assert row.last_error == result.error and row.cursor is None and row.last_success_at is None
    with app.db.connect() as conn:
        tick_errors = list(conn.execute(sa.select(ticks.c.error)).scalars())
    assert tick_errors == [result.error]
    assert "WORKOS_API_KEY rejected" in caplog.text
    for text in (result.error, row.last_error, caplog.text, repr(app.connectors), repr(app.settings),
                 repr(result)):
        assert wrong not in text
        assert WORKOS_KEY not in text

    # with the right key the same source recovers and the error is cleared
    fixed = make_app(sqlite_url, **workos_env(sim))
    assert sync_until_caught_up(fixed)[0].ok
    assert source_row(fixed.db).last_error is None


def test_missing_events_filter_is_a_clear_fatal_error(sim: WorkOSSimulator) -> None:
    with pytest.raises(ValueError, match="at least one event type"):
        WorkOSConnector(api_key=Secret(WORKOS_KEY), base_url=sim.url, event_types=[])
    connector = WorkOSConnector(api_key=Secret(WORKOS_KEY), base_url=sim.url, event_types=[""])
    try:
        with pytest.raises(FatalError) as info:
            connector.fetch_page(None)
    finally:
        connector.close()
    message = str(info.value)
    assert "422" in message and "events: required" in message and "WORKOS_EVENTS" in message
    assert [status for _, status in sim.requests] == [422]  # a contract error is not retried


@pytest.mark.parametrize(("env", "registry_types"), [
    ({"SYNCD_BUILTINS": "none"}, None),  # no workflow listens to WorkOS
    ({}, ()),  # a user workflow listens to every WorkOS type: the filter cannot be derived
])
def test_no_event_types_to_request_is_a_config_error(
        sqlite_url: str, make_app: MakeApp, sim: WorkOSSimulator, env: dict[str, str],
        registry_types: tuple[str, ...] | None) -> None:
    registry = Registry()
    if registry_types is not None:
        registry.workflow("everything", on=workos.events(*registry_types))(lambda event, ctx: None)
    with pytest.raises(ConfigError) as info:
        make_app(sqlite_url, registry=registry, **env, **workos_env(sim))
    assert info.value.variable == "WORKOS_EVENTS"
    assert sim.requests == []


@pytest.fixture
def closed_port_url() -> Iterator[str]:
    """A loopback URL nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def test_an_unreachable_provider_fails_the_tick_not_the_process(sqlite_url: str, make_app: MakeApp,
                                                                closed_port_url: str) -> None:
    app = make_app(sqlite_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=closed_port_url)
    [result] = app.tick_all()
    assert not result.ok and "cannot reach the provider" in (result.error or "")
    assert source_row(app.db).last_error == result.error
