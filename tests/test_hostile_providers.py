"""Providers that misbehave (issue #17, items 5 and 6): a WorkOS cursor the provider rejects and
``syncd cursor reset``, pages that cycle, events older than the cursor, pauses capped whatever the provider
asks. Over real loopback HTTP against the simulators' fault knobs (GitHub's classes, the crowded second
included, are in ``test_hostile_github.py``); classes whose outcome goes through the ledger's dedupe run on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import workos
from connectors.github.policy import reset_wait
from connectors.workos import cursor as workos_cursor
from simulators.workos import Faults, WorkOSSimulator
from syncd.contracts import Event, Page
from syncd.engine.decisions import MAX_PAUSE, pause_of
from syncd.engine.pages import Pager
from syncd.errors import CursorCycleError, RetryableError
from syncd.ops.app import App
from syncd.settings import PREFETCH_PAGES, Secret
from syncd.store.tables import events as ledger
from syncd.store.tables import sources
from syncd.workflows import Context, Registry, Trigger
from tests.conftest import WORKOS_KEY, settings_for

TYPES = "user.created,user.updated,user.deleted,organization.created,organization.updated"
GH_TOKEN = "ghp_hostile_test_token_7c2"

Build = Callable[..., App]


# ---- helpers -------------------------------------------------------------------------------------


def counting_registry(processed: list[str], on: Any) -> Registry:
    registry = Registry()

    @registry.workflow("count", on=on)
    def count(event: Event, ctx: Context) -> None:
        processed.append(event.id)

    return registry


def ledger_ids(app: App, stream: str) -> list[str]:
    with app.db.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(ledger.c.event_id).where(ledger.c.stream == stream))]


def source_row(app: App, key: str) -> Any:
    with app.db.connect() as conn:
        return conn.execute(sa.select(sources).where(sources.c.key == key)).one()


@pytest.fixture
def wsim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=400, seed=17, api_key=WORKOS_KEY) as simulator:
        yield simulator



def workos_app(db_url: str, sim: WorkOSSimulator, apps: list[App], registry: Registry, **env: str) -> App:
    app = App.build(settings_for(db_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.url, WORKOS_EVENTS=TYPES,
                                 SYNCD_BUILTINS="none", **env), registry=registry)
    apps.append(app)
    return app


def wanted_ids(sim: WorkOSSimulator) -> list[str]:
    types = set(TYPES.split(","))
    return [e["id"] for e in sim.events() if e["event"] in types]


# ---- item 5: a cursor WorkOS rejects heals itself ------------------------------------------------


@pytest.mark.parametrize("status", [400, 422])
def test_a_rejected_workos_cursor_heals_from_a_time_without_loss_or_duplicates(
        db_url: str, wsim: WorkOSSimulator, apps: list[App], status: int) -> None:
    processed: list[str] = []
    app = workos_app(db_url, wsim, apps, counting_registry(processed, workos.events()))
    assert all(r.ok for r in app.tick_all())
    cursor = source_row(app, "workos").cursor
    assert cursor == wanted_ids(wsim)[-1]
    # The provider now refuses every cursor up to ours (expired); new events arrive after it.
    wsim.faults = Faults(expired_before=cursor, expired_status=status)
    wsim.generate(150)

    result = app.tick_all()[0]
    assert result.ok, result.error
    assert Counter(processed) == Counter(wanted_ids(wsim)), "every event once: none lost, none run twice"
    assert sorted(ledger_ids(app, "workos")) == sorted(wanted_ids(wsim))
    row = source_row(app, "workos")
    assert row.cursor == wanted_ids(wsim)[-1] and row.last_error is None
    assert "cursor healed at" in row.meta["cursor_healed"] and cursor[:40] in row.meta["cursor_healed"]
    assert any("range_start=" in path for path, code in wsim.requests if code == 200)
    assert (f"after={cursor}", status) in [(path.split("&")[-1], code) for path, code in wsim.requests
                                           if "after=" in path]


def test_a_rejected_cursor_without_a_time_points_at_cursor_reset(wsim: WorkOSSimulator) -> None:
    connector = workos.WorkOSConnector(api_key=Secret(WORKOS_KEY), base_url=wsim.url, event_types=["user.created"])
    wsim.faults = Faults(expired_before="event_ZZZZZZZZZZZZZZZZZZZZZZZZZZ", expired_status=422)
    with pytest.raises(workos.client.CursorRejectedError) as info:  # type: ignore[attr-defined]
        connector.fetch_page("event_not_a_ulid")
    message = str(info.value)
    assert "syncd cursor reset workos --to TIME" in message and "WORKOS_EVENTS" not in message
    connector.close()


@pytest.mark.parametrize(("cursor", "candidate", "expected"), [
    (None, "event_01B", "event_01B"),
    ("event_01B", "event_01C", "event_01C"),
    ("event_01C", "event_01B", "event_01C"),  # an older id never moves the cursor back
    ("@2026-01-01T00:00:00Z", "event_01B", "event_01B"),
    ("event_01B", None, "event_01B"),
])
def test_workos_cursor_never_moves_backwards(cursor: str | None, candidate: str | None, expected: str) -> None:
    assert workos_cursor.later(cursor, candidate) == expected


def test_workos_cursor_times() -> None:
    moment = datetime(2026, 1, 15, 12, 0, 0, 123000, tzinfo=UTC)
    from simulators.workos import ulid

    event_id = "event_" + ulid(int(moment.timestamp() * 1000), 5)
    assert workos_cursor.id_time(event_id) == moment
    assert workos_cursor.heal_start(event_id) == moment - workos_cursor.HEAL_MARGIN
    assert workos_cursor.heal_start("evt_123") is None
    assert workos_cursor.cursor_time(workos_cursor.at(moment)) == moment


# ---- item 6: events older than the cursor --------------------------------------------------------


def test_events_older_than_the_cursor_never_move_it_back(db_url: str, wsim: WorkOSSimulator,
                                                         apps: list[App]) -> None:
    processed: list[str] = []
    # one page per transaction: every cursor move is seen
    app = workos_app(db_url, wsim, apps, counting_registry(processed, workos.events()), SYNCD_GROUP_EVENTS="1")
    cursors: list[str] = []
    app.engine.on_page = lambda target, page: cursors.append(str(page.next_cursor))
    app.tick_all()  # the first page is asked by time, without after
    wsim.faults = Faults(stale_events=7)  # every later page ends with 7 events from before its cursor
    wsim.generate(300)
    results = [app.tick_all()[0] for _ in range(3)]
    assert all(r.ok for r in results), [r.error for r in results]
    assert cursors == sorted(cursors), "the cursor only ever moves forward"
    assert source_row(app, "workos").cursor == wanted_ids(wsim)[-1]
    assert Counter(processed) == Counter(wanted_ids(wsim))  # stale events reach the ledger, never a run twice


# ---- item 6: pages that cycle -------------------------------------------------------------------


def test_pages_that_cycle_fail_the_tick_at_the_first_repeat() -> None:
    import threading

    from opentelemetry import trace

    cycle = {"A": "B", "B": "C", "C": "A"}  # each cursor differs from the last; the sequence repeats
    fetched: list[str | None] = []

    def fetch(cursor: str | None) -> Page:
        fetched.append(cursor)
        return Page(events=(), next_cursor=cycle[cursor or "A"], has_more=True)

    pager = Pager("src", fetch, lambda: trace.INVALID_SPAN, None, threading.Event(), group_seconds=3600)
    group, failure = pager.group("A", None)  # the pages before the repeat are handed on, to be committed
    assert fetched == ["A", "B", "C"]  # bounded: three requests, not an endless tick
    assert [page.next_cursor for _, page in group] == ["B", "C"]
    assert isinstance(failure, CursorCycleError)
    assert "cycle" in str(failure) and "'A'" in str(failure) and "syncd cursor reset src" in str(failure)


def test_workos_pages_that_cycle_stop_the_tick_and_lose_nothing(db_url: str, wsim: WorkOSSimulator,
                                                                apps: list[App]) -> None:
    """WorkOS's cursor never moves back, so a listing that cycles to the start is a cursor that does not move:
    the tick stops there (the loop guard), visibly, and a later tick catches up once the provider is fixed."""
    processed: list[str] = []
    app = workos_app(db_url, wsim, apps, counting_registry(processed, workos.events()), SYNCD_GROUP_EVENTS="1")
    assert app.tick_all()[0].ok
    wsim.generate(400)
    middle = wanted_ids(wsim)[len(processed) + 99]  # the last id of the first page of the new events
    wsim.faults = Faults(cycle_after=middle)
    requests = len(wsim.requests)
    result = app.tick_all()[0]
    assert not result.ok and "did not move" in str(result.error)
    # bounded: the tick stops at the first page that goes round. On PostgreSQL the prefetcher may have asked for
    # up to SYNCD_PREFETCH_PAGES more by then (12 requests under load, against < 10 idle); an endless tick never stops
    assert len(wsim.requests) - requests < 10 + PREFETCH_PAGES, "bounded: the tick stops where the pages go round"
    row = source_row(app, "workos")
    assert row.cursor == middle and "did not move" in row.last_error
    wsim.faults = Faults()
    assert app.tick_all()[0].ok
    assert Counter(processed) == Counter(wanted_ids(wsim))


class CyclingConnector:
    """A provider double whose pages cycle: page k leads to page k+1 up to ``length``, then back to page 1;
    every cursor differs from the one before it. Each page holds one new event until the cycle closes."""

    key = "cycler"

    def __init__(self, length: int) -> None:
        self.length = length
        self.requests = 0

    def fetch_page(self, cursor: str | None, window: Any = None) -> Page:
        self.requests += 1
        page = int(cursor.removeprefix("p")) if cursor else 0
        following = page + 1 if page < self.length else 1
        event = Event(stream=self.key, id=f"e{page}", type="tick", data={},
                      occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=page))
        return Page(events=(event,), next_cursor=f"p{following}", has_more=True)

    def close(self) -> None:
        pass


def test_a_source_whose_pages_cycle_fails_its_tick_visibly_and_the_next_source_goes_on(
        db_url: str, wsim: WorkOSSimulator, apps: list[App]) -> None:
    processed: list[str] = []
    app = workos_app(db_url, wsim, apps, counting_registry(processed, Trigger(provider="cycler")))
    cycler = CyclingConnector(length=5)
    result = app.tick(cycler)
    assert not result.ok and "pages cycle" in str(result.error) and "'p1'" in str(result.error)
    assert cycler.requests == 6, "bounded: one request per page of the cycle, then the repeat"
    # The pages before the one leading back are committed; that one is not (its cursor would go back).
    assert sorted(processed) == [f"e{i}" for i in range(5)]
    row = source_row(app, "cycler")
    assert "pages cycle" in row.last_error and row.cursor == "p5"
    assert app.tick_all()[0].ok, "the other sources tick as usual"


# ---- item 6: rate-limit resets far away or out of range ------------------------------------------


@pytest.mark.parametrize(("wait", "capped"), [
    (30.0, False), (3600.0, False), (3601.0, True), (1e30, True), (math.inf, True),
])
def test_pause_of_caps_every_wait(wait: float, capped: bool) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    until, reason = pause_of(RetryableError("s", "rate limited", wait), now)
    assert until is not None and until - now <= MAX_PAUSE
    assert ("capped" in str(reason)) == capped
    assert pause_of(RetryableError("s", "x", math.nan), now) == (None, None)


@pytest.mark.parametrize(("reset", "wait"), [(10**9 + 30, 31.0), (10**9 - 5, 1.0), (2 * 10**9, 10**9 + 1),
                                             (10**11, math.inf), (10**40, math.inf), (10**400, math.inf)])
def test_reset_wait_never_overflows(reset: int, wait: float) -> None:
    assert reset_wait(reset, now=1e9) == wait


# ---- item 5: syncd cursor reset SOURCE --to TIME --------------------------------------------------


def cli_env(db_url: str, sim: WorkOSSimulator) -> dict[str, str]:
    return {"DATABASE_URL": db_url, "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": sim.url,
            "WORKOS_EVENTS": TYPES, "SYNCD_BUILTINS": "none", "SYNCD_HTTP_PORT": "0"}


def test_cursor_reset_restarts_the_walk_from_a_time_without_duplicate_effects(
        db_url: str, wsim: WorkOSSimulator, apps: list[App], capsys: pytest.CaptureFixture[str]) -> None:
    from syncd import cli

    processed: list[str] = []
    app = workos_app(db_url, wsim, apps, counting_registry(processed, workos.events()))
    assert app.tick_all()[0].ok
    before = Counter(processed)
    moment = wsim.events()[len(wsim.events()) // 2]["created_at"]  # half the stream is listed again
    assert cli.main(["cursor", "reset", "workos", "--to", moment], cli_env(db_url, wsim)) == 0
    assert "workos: cursor reset to" in capsys.readouterr().out
    row = source_row(app, "workos")
    assert row.cursor.startswith("@") and "by syncd cursor reset" in row.meta["cursor_reset"]
    wsim.generate(20)
    requests = len(wsim.requests)
    assert app.tick_all()[0].ok
    assert any("range_start=" in path for path, _ in wsim.requests[requests:])
    assert Counter(processed) == Counter(wanted_ids(wsim)), "the events listed again run nothing twice"
    assert Counter(processed) - before == Counter(wanted_ids(wsim)[len(before):])
    assert source_row(app, "workos").cursor == wanted_ids(wsim)[-1]


def test_cursor_reset_refuses_bad_input_and_a_source_being_synced(
        sqlite_url: str, wsim: WorkOSSimulator, apps: list[App], capsys: pytest.CaptureFixture[str]) -> None:
    from syncd import cli
    from syncd.contracts import CursorSpec, SystemClock
    from syncd.store import SqlStore

    env = cli_env(sqlite_url, wsim)
    assert cli.main(["cursor", "reset", "workos", "--to", "yesterday-ish"], env) == 2
    assert cli.main(["cursor", "reset", "github:acme/none", "--to", "2026-01-01T00:00:00Z"], env) == 2
    errors = capsys.readouterr().err
    assert "--to: not a time" in errors and "unknown source 'github:acme/none' (sources: workos)" in errors
    app = workos_app(sqlite_url, wsim, apps, Registry())
    lease = SqlStore(app.db).claim(CursorSpec("workos", "workos"), owner="replica-a", lease_seconds=60,
                                   clock=SystemClock())
    assert not isinstance(lease, type(None))
    assert cli.main(["cursor", "reset", "workos", "--to", "2026-01-01T00:00:00Z"], env) == 1
    assert "is being synced now (lease held by replica-a" in capsys.readouterr().err


def test_cursor_reset_as_a_user_runs_it(tmp_path: Any, wsim: WorkOSSimulator) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": str(root), **cli_env(f"sqlite:///{tmp_path / 'cli.db'}", wsim)}

    def syncd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "syncd", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    assert syncd("once").returncode == 0
    done = syncd("cursor", "reset", "workos", "--to", "2026-01-01T00:00:00Z")
    assert done.returncode == 0, done.stderr
    status = syncd("status")
    assert "cursor reset:" in status.stdout and "@2026-01-01T00:00:00Z" in status.stdout
    assert "--to TIME" in syncd("cursor", "reset", "-h").stdout
