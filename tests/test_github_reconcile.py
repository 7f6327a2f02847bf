"""GitHub deletions and transfers (issue 24, item 2), end to end against the GitHub simulator, on both databases.

What must be shown, and where:
- deleted and transferred issues reconciled once: the workflow runs once per issue, also across a second
  reconcile, a replay of the cursor and a crash mid-reconcile → ``test_deleted_and_transferred_*``,
  ``test_replaying_the_cursor_*``, ``test_a_reconcile_stopped_mid_way_*`` (and a real SIGKILL of
  ``syncd once``: ``test_github_reconcile_kill.py``)
- idle reconciliation costs conditional requests only (304s) → ``test_an_idle_reconcile_*``
- a bad ``GITHUB_RECONCILE_SECONDS`` exits 2 naming the variable → ``test_a_bad_reconcile_interval_*``
- a stale event after the deletion does not resurrect the row → ``test_a_stale_version_after_*``
- a reconcile that is due runs inside ``syncd once`` → ``test_syncd_once_reconciles_*``
- a throttled step pauses the repository and the walk resumes where it stood → ``test_a_throttled_*``
The pure parts (the state in the cursor, what an answer means), the 404 guard and the simulator's answers for
one issue are in ``test_github_reconcile_units.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from connectors import github
from connectors.github.client import GitHubConnector
from connectors.github.mirrorindex import SqlMirrorIndex
from connectors.github.tables import issues as issues_table
from connectors.github.workflows import issue_row
from simulators.github import GitHubSimulator
from syncd import cli
from syncd.contracts import Event, FakeClock
from syncd.ops.app import App
from syncd.ops.once import run_once
from syncd.settings import Secret
from syncd.store.tables import events as ledger
from syncd.store.tables import sources
from syncd.workflows import Context, Registry
from syncd.workflows.mirror import apply_snapshot, apply_snapshots
from tests.conftest import settings_for

TOKEN = "ghp_test_secret_reconcile_77"
REPOS = {"acme/web": 30, "acme/api": 8}
HOUR = 3600.0
Build = Callable[..., App]


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    with GitHubSimulator(repos=REPOS, seed=24, tokens=(TOKEN,)) as simulator:
        yield simulator


@pytest.fixture
def build(sim: GitHubSimulator) -> Iterator[Build]:
    """Apps over the simulator whose connectors read the simulator's clock (so "an hour later" is
    ``sim.advance``), with pages of 10 issues (a walk of a few pages)."""
    built: list[App] = []

    def make(db_url: str, registry: Registry | None = None, *, every: float = HOUR,
             clock: FakeClock | None = None) -> App:
        env = {"GITHUB_REPOS": ",".join(REPOS), "GITHUB_BASE_URL": sim.url, "GITHUB_TOKEN": TOKEN}
        connectors = [GitHubConnector(repo=r, base_url=sim.url, token=Secret(TOKEN), page_size=10,
                                      clock=lambda: sim.now.timestamp(), reconcile_seconds=every,
                                      mirror=SqlMirrorIndex(db_url)) for r in REPOS]
        app = App.build(settings_for(db_url, **env), registry=registry or Registry(), clock=clock,
                        connectors=connectors)  # type: ignore[arg-type]
        built.append(app)
        return app

    yield make
    for app in built:
        app.close()


def removals_registry() -> tuple[Registry, list[tuple[str, str | None, int]]]:
    """A workflow on deleted and transferred issues, recording (event id, action, number) per run."""
    seen: list[tuple[str, str | None, int]] = []
    registry = Registry()

    @registry.workflow("on-removed", on=github.issues(actions={"deleted", "transferred"}))
    def on_removed(event: Event, ctx: Context) -> None:
        seen.append((event.id, event.action, event.data["number"]))

    return registry, seen


def mirrored(app: App, repo: str) -> dict[int, tuple[int, str]]:
    """id → (number, updated_at) of the mirror's rows of ``repo``."""
    with app.db.connect() as conn:
        rows = conn.execute(sa.select(issues_table.c.id, issues_table.c.number, issues_table.c.updated_at)
                            .where(issues_table.c.repo == repo)).all()
    return {row.id: (row.number, row.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ")) for row in rows}


def truth(sim: GitHubSimulator, repo: str) -> dict[int, tuple[int, str]]:
    return {i: (issue["number"], issue["updated_at"]) for i, issue in sim.issues(repo).items()}


def tick_all(app: App) -> list[Any]:
    results = app.tick_all()
    assert all(r.ok for r in results), [r.error for r in results]
    return results


def paths(sim: GitHubSimulator, since: int) -> list[tuple[str, int]]:
    return [(path, status) for path, status, _ in sim.requests[since:]]


def single_gets(requests: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(p, s) for p, s in requests if "/issues/" in p]


def cursor_of(app: App, key: str) -> str:
    with app.db.connect() as conn:
        return str(conn.execute(sa.select(sources.c.cursor).where(sources.c.key == key)).scalar_one())


def set_cursor(app: App, key: str, text: str) -> None:
    with app.db.begin() as conn:
        conn.execute(sources.update().where(sources.c.key == key).values(cursor=text))


# ---- deleted and transferred, once ---------------------------------------------------------------------


def test_deleted_and_transferred_issues_are_reconciled_once(db_url: str, build: Build, sim: GitHubSimulator) -> None:
    registry, seen = removals_registry()
    app = build(db_url, registry)
    tick_all(app)
    assert mirrored(app, "acme/web") == truth(sim, "acme/web")
    web = sim.issues("acme/web")
    pull = next(i for i in web.values() if "pull_request" in i)
    plain = [i for i in web.values() if "pull_request" not in i]
    gone, moved = plain[0], plain[1]
    sim.advance(5)
    sim.delete("acme/web", gone["number"])
    sim.delete("acme/web", pull["number"])
    sim.transfer("acme/web", moved["number"], "acme/api")

    before = len(sim.requests)
    tick_all(app)  # not due yet: polls only, and the listing shows nothing of the deletions
    assert single_gets(paths(sim, before)) == []
    assert gone["id"] in mirrored(app, "acme/web") and seen == []

    sim.advance(HOUR)
    before = len(sim.requests)
    tick_all(app)
    asked = single_gets(paths(sim, before))
    assert sorted(asked) == sorted([(f"/repos/acme/web/issues/{gone['number']}", 410),
                                    (f"/repos/acme/web/issues/{pull['number']}", 410),
                                    (f"/repos/acme/web/issues/{moved['number']}", 301)])
    expected = Counter({(f"{gone['id']}:deleted@{gone['updated_at']}", "deleted", gone["number"]): 1,
                        (f"{pull['id']}:deleted@{pull['updated_at']}", "deleted", pull["number"]): 1,
                        (f"{moved['id']}:transferred@{moved['updated_at']}", "transferred", moved["number"]): 1})
    assert Counter(seen) == expected
    for repo in REPOS:  # the rows went; the transferred issue is acme/api's now, under its new number
        assert mirrored(app, repo) == truth(sim, repo)
    with app.db.connect() as conn:
        stored = conn.execute(sa.select(ledger.c.payload, ledger.c.action).where(
            ledger.c.event_id == f"{moved['id']}:transferred@{moved['updated_at']}")).one()
    assert stored.action == "transferred"
    assert stored.payload["id"] == moved["id"] and stored.payload["number"] == moved["number"]
    assert stored.payload["updated_at"] == moved["updated_at"]  # the last mirrored version
    assert stored.payload["transferred_to"].startswith(f"/repositories/{sim.repo_id('acme/api')}/issues/")

    # A second reconcile, and a tick between two: nothing is asked again, no run is repeated.
    sim.advance(HOUR)
    tick_all(app)
    assert Counter(seen) == expected
    assert all(r.ok for r in app.tick_all())
    assert Counter(seen) == expected


def test_replaying_the_cursor_of_a_reconcile_runs_nothing_twice(db_url: str, build: Build,
                                                                 sim: GitHubSimulator) -> None:
    registry, seen = removals_registry()
    app = build(db_url, registry)
    tick_all(app)
    victims = [i for i in sim.issues("acme/web").values()][:2]
    for victim in victims:
        sim.delete("acme/web", victim["number"])
    sim.advance(HOUR + 1)
    web = app.connectors[0]
    before_reconcile = cursor_of(app, web.key)
    app.tick(web)
    assert sorted(n for _, _, n in seen) == sorted(v["number"] for v in victims)

    # Put the cursor back: the reconcile runs again; its events are the same ids, which the ledger holds.
    set_cursor(app, web.key, before_reconcile)
    with app.db.begin() as conn:  # and the rows back too, so that the reconcile finds them missing again
        for victim in victims:
            conn.execute(issues_table.insert().values(
                issue_row(victim, Event("github:acme/web", "x", "github.issue", sim.now, victim))))
    result = app.tick(web)
    assert result.ok and result.new_events == 0
    assert len(seen) == len(victims)


def test_a_reconcile_stopped_mid_way_resumes_and_runs_each_once(db_url: str, build: Build,
                                                                 sim: GitHubSimulator) -> None:
    registry, seen = removals_registry()
    app = build(db_url, registry)
    tick_all(app)
    victims = [i for i in sim.issues("acme/web").values()][3:6]
    for victim in victims:
        sim.delete("acme/web", victim["number"])
    sim.advance(HOUR + 1)
    web = app.connectors[0]
    states: list[str] = []
    for _ in range(3):  # each tick stops after two pages, as a crash between two commits would
        assert app.tick(web, max_pages=2).ok
        states.append(cursor_of(app, web.key))
    assert any('"page"' in s for s in states) and any('"check"' in s for s in states)  # stopped mid-walk, mid-check

    restarted = build(db_url, registry)  # a new process goes on from the stored state
    for _ in range(10):
        if restarted.tick(restarted.connectors[0]).caught_up:
            break
    assert Counter(n for _, _, n in seen) == Counter(v["number"] for v in victims)
    assert mirrored(restarted, "acme/web") == truth(sim, "acme/web")


# ---- cost ------------------------------------------------------------------------------------------------


def test_an_idle_reconcile_costs_conditional_requests_only(db_url: str, build: Build, sim: GitHubSimulator) -> None:
    app = build(db_url)
    tick_all(app)
    sim.advance(HOUR + 1)
    before = len(sim.requests)
    tick_all(app)  # the first reconcile: every page of the walk is a 200 (no ETag yet), nothing missing
    first = paths(sim, before)
    walk = [p for p, _ in first if "sort=created" in p]
    assert walk and single_gets(first) == []

    sim.advance(HOUR + 1)  # nothing changed: the next one is 304s only, and GitHub counts none of them
    before = len(sim.requests)
    tick_all(app)
    idle = paths(sim, before)
    assert [p for p, _ in idle if "sort=created" in p] == walk
    assert {s for _, s in idle} == {304}
    assert sim.used(TOKEN)[1] == 0  # the window began with these requests: none was counted

    before = len(sim.requests)
    tick_all(app)  # and a tick between two reconciles costs nothing extra: one 304 per repository
    assert [s for _, s in paths(sim, before)] == [304] * len(REPOS)


def test_a_reconcile_waits_while_the_token_is_near_its_reserve(sqlite_url: str, build: Build,
                                                               sim: GitHubSimulator) -> None:
    registry, seen = removals_registry()
    app = build(sqlite_url, registry)
    tick_all(app)
    victim = next(iter(sim.issues("acme/web").values()))
    sim.delete("acme/web", victim["number"])
    sim.advance(HOUR + 1)
    sim.set_remaining(TOKEN, 300)  # 6% of 5,000 left: above the polls' 5% reserve, below reconcile's 10%
    sim.mutate("acme/web", 1)
    before = len(sim.requests)
    results = tick_all(app)
    assert results[0].new_events == 1  # the poll goes on
    assert not [p for p, _ in paths(sim, before) if "sort=created" in p or "/issues/" in p] and seen == []

    sim.advance(HOUR)  # a new window: the reconcile that waited runs
    tick_all(app)
    assert [n for _, _, n in seen] == [victim["number"]]


def test_a_throttled_reconcile_pauses_the_source_and_resumes_where_it_stood(sqlite_url: str, build: Build,
                                                                           sim: GitHubSimulator) -> None:
    registry, seen = removals_registry()
    clock = FakeClock(datetime.now(UTC))
    app = build(sqlite_url, registry, clock=clock)
    web = app.connectors[0]
    assert app.tick(web).ok
    victim = list(sim.issues("acme/web").values())[-1]
    sim.delete("acme/web", victim["number"])
    sim.advance(HOUR + 1)
    assert app.tick(web, max_pages=2).ok  # the poll that begins the reconcile, and its first listing page
    sim.rate_limit_next(1, status=429, retry_after=120)  # the second listing page is throttled
    throttled = app.tick(web)
    assert not throttled.ok and "rate limited" in str(throttled.error)
    before = len(sim.requests)
    clock.advance(60)
    assert str(app.tick(web).skipped_reason).startswith("paused until")  # nothing asked while paused
    assert len(sim.requests) == before
    clock.advance(61)
    assert app.tick(web).ok
    walked = [httpx.URL(p).params.get("page") for p, _ in paths(sim, before) if "sort=created" in p]
    assert walked == ["2", "3"]  # from where it stood: page 1 is not asked again
    assert [n for _, _, n in seen] == [victim["number"]]


# ---- the tombstone -----------------------------------------------------------------------------------------


def test_a_stale_version_after_the_deletion_does_not_resurrect_the_row(db_url: str, build: Build,
                                                                        sim: GitHubSimulator) -> None:
    app = build(db_url)
    tick_all(app)
    victim = next(i for i in sim.issues("acme/web").values())
    sim.delete("acme/web", victim["number"])
    sim.advance(HOUR + 1)
    tick_all(app)
    assert victim["id"] not in mirrored(app, "acme/web")

    stale = Event("github:acme/web", f"{victim['id']}@{victim['updated_at']}", "github.issue", sim.now, victim,
                  action="edited")
    older = {**victim, "updated_at": "2020-01-01T00:00:00Z"}
    with app.db.begin() as conn:  # the per-event path and the batch path both keep it deleted
        assert not apply_snapshot(conn, issues_table, issue_row(victim, stale), kind=issues_table.name)
        assert apply_snapshots(conn, issues_table, [(issue_row(older, stale), False)], kind=issues_table.name) == 0
    assert victim["id"] not in mirrored(app, "acme/web")
    # The listing, read again from the start, holds no trace of it either.
    web = app.connectors[0]
    set_cursor(app, web.key, web.cursor_at(sim.now.replace(year=2000)))  # type: ignore[attr-defined]
    tick_all(app)
    assert mirrored(app, "acme/web") == truth(sim, "acme/web")


# ---- settings and syncd once ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["hourly", "-5", "nan"])
def test_a_bad_reconcile_interval_exits_2_naming_the_variable(sqlite_url: str, value: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"DATABASE_URL": sqlite_url, "OTEL_SDK_DISABLED": "true", "GITHUB_REPOS": "acme/web",
               "GITHUB_TOKEN": TOKEN, "GITHUB_RECONCILE_SECONDS": value}
    assert cli.main(["once"], environ=environ) == 2
    err = capsys.readouterr().err
    assert "configuration error: GITHUB_RECONCILE_SECONDS" in err and TOKEN not in err


def test_syncd_once_reconciles_when_due(sqlite_url: str, sim: GitHubSimulator) -> None:
    env = {"GITHUB_REPOS": "acme/api", "GITHUB_TOKEN": TOKEN, "GITHUB_BASE_URL": sim.url,
           "GITHUB_RECONCILE_SECONDS": "0.001"}

    def once() -> None:  # what `syncd once` runs, built from the environment as the command builds it
        app = App.build(settings_for(sqlite_url, **env), registry=Registry())
        try:
            report = run_once(app)
            assert all(o.tick.ok for o in report.sources)
        finally:
            app.close()

    once()
    victim = next(iter(sim.issues("acme/api").values()))
    sim.delete("acme/api", victim["number"])
    once()
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        actions = conn.execute(sa.select(ledger.c.action).where(ledger.c.event_id.like(f"{victim['id']}:%"))).all()
        left = conn.execute(sa.select(issues_table.c.id).where(issues_table.c.id == victim["id"])).all()
    engine.dispose()
    assert [a for (a,) in actions] == ["deleted"] and left == []
