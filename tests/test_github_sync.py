"""GitHub issues as a source, end to end over real loopback HTTP against the GitHub simulator.

What issue 3 asks to be shown, and where:
- a full sync mirrors the simulator's final state for several repositories → ``test_full_sync_mirrors_*``
- same-second versions split across polls are processed exactly once → ``test_same_second_boundary_*``
- an idle tick is one conditional request per repository, answered 304 → ``test_idle_tick_*``
- a 403/429 rate limit pauses only that source until reset and it resumes → ``test_rate_limit_*``
- ``syncd status`` shows each repository's cursor, remaining rate limit and pause → ``test_status_*``
Pure decisions (cursor moves, actions, throttle waits, triggers, settings) are tables at the end.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from connectors import github
from connectors.github.client import (
    ACTIONS,
    SEEN_LIMIT,
    Cursor,
    GitHubConnector,
    advance,
    derive_action,
    secondary_wait,
    status_policy,
    throttle_wait,
)
from connectors.github.tables import issues as issues_table
from simulators.github import GitHubSimulator
from syncd import cli, store
from syncd.contracts import Event, FakeClock, Window
from syncd.errors import AuthError, ConfigError, FatalError, RetryableError
from syncd.ops.app import App
from syncd.settings import Secret
from syncd.store.tables import events as ledger
from syncd.timefmt import parse_time, parse_time_or_none
from syncd.workflows import Context, Registry
from tests.conftest import settings_for

TOKEN = "ghp_test_secret_5d1e9c"
REPOS = {"acme/web": 130, "acme/api": 60, "octo/tools": 25}

Build = Callable[..., App]


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    # The simulator's clock starts at the wall clock, so x-ratelimit-reset agrees with the connector's clock.
    with GitHubSimulator(repos=REPOS, seed=5, tokens=(TOKEN,)) as simulator:
        yield simulator


@pytest.fixture
def build(sim: GitHubSimulator) -> Iterator[Build]:
    """Apps syncing ``repos`` from the simulator; ``page_size`` builds the connectors directly (test knob)."""
    built: list[App] = []

    def make(db_url: str, *, repos: tuple[str, ...] = tuple(REPOS), registry: Registry | None = None,
             page_size: int | None = None, clock: FakeClock | None = None, token: str | None = TOKEN) -> App:
        env = {"GITHUB_REPOS": ",".join(repos), "GITHUB_BASE_URL": sim.url}
        if token is not None:
            env["GITHUB_TOKEN"] = token
        connectors = None
        if page_size is not None or clock is not None:
            # With a fake engine clock, the connectors read the simulator's clock, which x-ratelimit-reset
            # is counted on: the waits are then exact however slowly the test runs.
            connectors = [GitHubConnector(repo=r, base_url=sim.url, token=Secret(token) if token else None,
                                          page_size=page_size or 100, clock=lambda: sim.now.timestamp())
                          for r in repos]
        app = App.build(settings_for(db_url, **env), registry=registry or Registry(), clock=clock,
                        connectors=connectors)  # type: ignore[arg-type]
        built.append(app)
        return app

    yield make
    for app in built:
        app.close()


def mirrored(app: App, repo: str) -> dict[int, dict[str, Any]]:
    with app.db.connect() as conn:
        rows = conn.execute(sa.select(issues_table).where(issues_table.c.repo == repo)).mappings().all()
    return {row["id"]: dict(row) for row in rows}


def expected_rows(sim: GitHubSimulator, repo: str) -> dict[int, dict[str, Any]]:
    return {
        issue_id: {
            "id": issue_id, "repo": repo, "number": i["number"], "title": i["title"], "state": i["state"],
            "labels": [label["name"] for label in i["labels"]], "author": i["user"]["login"],
            "is_pull_request": "pull_request" in i, "created_at": parse_time(i["created_at"]),
            "updated_at": parse_time(i["updated_at"]), "closed_at": parse_time_or_none(i["closed_at"]),
        }
        for issue_id, i in sim.issues(repo).items()
    }


def versions(issues: Any) -> set[str]:
    return {f"{i['id']}@{i['updated_at']}" for i in issues}


def source_row(app: App, key: str) -> store.SourceRow:
    with app.db.connect() as conn:
        row = store.get_source(conn, key)
    assert row is not None
    return row


def catch_up(app: App, connector: Any, limit: int = 50, max_pages: int | None = None) -> list[Any]:
    """Tick one source until it reports caught up (each tick stops after ``max_pages`` pages, if given)."""
    results = []
    for _ in range(limit):
        results.append(app.tick(connector, max_pages=max_pages))
        assert results[-1].ok, results[-1].error
        if results[-1].caught_up:
            return results
    raise AssertionError("never caught up")


# ---- full sync ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [None, 7])
def test_full_sync_mirrors_every_repository(db_url: str, build: Build, sim: GitHubSimulator,
                                            page_size: int | None) -> None:
    app = build(db_url, page_size=page_size)
    assert [c.key for c in app.connectors] == [f"github:{r}" for r in REPOS]
    assert all(r.ok and r.caught_up for r in app.tick_all())
    for repo in REPOS:
        assert mirrored(app, repo) == expected_rows(sim, repo)

    sim.advance(60)  # live changes: creates, edits, closes, reopens, some in one second
    touched: dict[str, set[int]] = {}
    for repo in REPOS:
        made = sim.mutate(repo, 9)
        sim.advance(1)
        touched[repo] = {m["id"] for m in made + sim.mutate(repo, 4)}
    assert all(r.ok for r in app.tick_all())
    for repo in REPOS:
        assert mirrored(app, repo) == expected_rows(sim, repo)
    with app.db.connect() as conn:  # one ledger row per version listed: every issue, then each one touched
        counts = {row[0]: row[1] for row in conn.execute(
            sa.select(ledger.c.stream, sa.func.count()).group_by(ledger.c.stream))}
    assert counts == {f"github:{r}": n + len(touched[r]) for r, n in REPOS.items()}


# ---- the same-second boundary -------------------------------------------------------------------


def test_same_second_boundary_split_across_polls_processes_each_version_once(
        db_url: str, build: Build, sim: GitHubSimulator) -> None:
    processed: list[str] = []
    registry = Registry()

    @registry.workflow("count", on=github.issues(repo="acme/web"))
    def count(event: Event, ctx: Context) -> None:
        processed.append(event.id)

    app = build(db_url, repos=("acme/web",), registry=registry, page_size=3)
    connector = app.connectors[0]
    emitted = sum(r.events for r in catch_up(app, connector))
    expected = versions(sim.issues("acme/web").values())
    boundary = sim.now
    cursors: list[Cursor] = []
    made: list[dict[str, Any]] = []
    # Batches in one second, a poll after each; the 11-issue batch is more than three pages of one second,
    # and with max_pages=1 every page is its own tick, so the pending next link sits in the database.
    for n, max_pages in ((4, None), (2, None), (11, 1), (1, None), (5, 1)):
        made += sim.mutate("acme/web", n, at=boundary)
        for result in catch_up(app, connector, max_pages=max_pages):
            cursors.append(Cursor.loads(result.cursor_after))
            emitted += result.events
    sim.advance(1)
    made += sim.mutate("acme/web", 3)
    emitted += sum(r.events for r in catch_up(app, connector))

    assert len({(m["id"], m["updated_at"]) for m in made}) == len(made), "precondition: distinct versions"
    expected |= versions(made)
    assert Counter(processed) == Counter(expected)  # every version, each exactly once
    assert emitted == len(expected)  # and the connector itself never hands the engine a version twice
    assert mirrored(app, "acme/web") == expected_rows(sim, "acme/web")
    second = boundary.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert any(c.since == second and c.seen and c.next_url is None for c in cursors), "boundary held in seen"
    assert any(c.since == second and c.next_url for c in cursors), "crowded second paged through its link"
    assert any(path.startswith("/repositories/") for path, _, _ in sim.requests)  # the link, as given


# ---- conditional polls --------------------------------------------------------------------------


def test_idle_tick_is_one_conditional_request_per_repository(sqlite_url: str, build: Build,
                                                            sim: GitHubSimulator) -> None:
    app = build(sqlite_url)
    app.tick_all()
    spent = (source_row(app, "github:octo/tools").meta or {})["ratelimit_remaining"]
    before = len(sim.requests)
    results = app.tick_all()
    idle = sim.requests[before:]
    assert [path.split("?")[0] for path, _, _ in idle] == [f"/repos/{r}/issues" for r in REPOS]
    assert all(status == 304 and headers.get("if-none-match") for _, status, headers in idle)
    assert all(r.ok and r.pages == 1 and r.events == 0 for r in results)
    remaining = {(source_row(app, f"github:{r}").meta or {})["ratelimit_remaining"] for r in REPOS}
    assert remaining == {spent}  # 304s cost nothing

    sim.mutate("acme/api", 2)  # one repository changes: only it gets a 200, then it is idle again
    before = len(sim.requests)
    assert sum(r.new_events for r in app.tick_all()) == 2
    assert [s for _, s, _ in sim.requests[before:]].count(304) == len(REPOS) - 1
    before = len(sim.requests)
    app.tick_all()
    assert [s for _, s, _ in sim.requests[before:]] == [304] * len(REPOS)


# ---- rate limits --------------------------------------------------------------------------------


def test_rate_limit_403_and_429_pause_only_that_source_until_reset(db_url: str, build: Build,
                                                                  sim: GitHubSimulator) -> None:
    clock = FakeClock(datetime.now(UTC))
    app = build(db_url, clock=clock)
    web, api, _ = app.connectors
    app.tick_all()

    # Primary limit: 403 with remaining 0 and reset in 60 s, on the first request of the tick (acme/web).
    for repo in REPOS:
        sim.mutate(repo, 2)
    sim.rate_limit_next(1, status=403, reset_in=60)
    first = app.tick_all()
    assert not first[0].ok and "rate limited" in str(first[0].error)
    assert [r.new_events for r in first[1:]] == [2, 2]  # the others keep running
    assert source_row(app, web.key).paused_until == clock.now() + timedelta(seconds=61)  # reset, +1 s
    assert source_row(app, api.key).paused_until is None

    restarted = build(db_url, clock=clock)  # the pause is stored: a new process honours it too
    assert str(restarted.tick(restarted.connectors[0]).skipped_reason).startswith("paused until")
    before = len(sim.requests)
    clock.advance(30)
    second = app.tick_all()
    assert second[0].skipped_reason and second[0].skipped_reason.startswith("paused until")
    assert all(not path.startswith("/repos/acme/web/") for path, _, _ in sim.requests[before:])
    assert second[1].ok and second[2].ok

    clock.advance(35)  # past the reset: it resumes by itself, nothing lost
    third = app.tick_all()
    assert third[0].ok and third[0].new_events == 2
    assert source_row(app, web.key).paused_until is None

    # Secondary limit: 429 with retry-after 30 on acme/api's request.
    sim.mutate("acme/api", 1)
    sim.rate_limit_next(1, status=429, retry_after=30)
    assert not app.tick(api).ok
    paused = source_row(app, api.key).paused_until
    assert paused == clock.now() + timedelta(seconds=30)
    skipped = app.tick_all()
    assert skipped[1].skipped_reason and skipped[0].ok and skipped[2].ok
    clock.advance(31)
    assert app.tick(api).new_events == 1
    assert all(m == expected_rows(sim, r) for r, m in ((r, mirrored(app, r)) for r in REPOS))


def test_secondary_limit_without_headers_waits_at_least_a_minute_then_backs_off() -> None:
    replies = iter([429, 429, 403, 200, 429])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(replies)
        if status == 200:
            return httpx.Response(200, json=[], headers={"x-ratelimit-remaining": "10"})
        return httpx.Response(status, json={"message": "You have exceeded a secondary rate limit."})

    connector = GitHubConnector(repo="acme/web", base_url="https://api.github.com", token=Secret(TOKEN),
                                transport=httpx.MockTransport(handler))
    waits = []
    for _ in range(5):
        try:
            connector.fetch_page(None)
            waits.append(0.0)
        except RetryableError as exc:
            waits.append(exc.retry_after or -1)
    assert waits == [60.0, 120.0, 240.0, 0.0, 60.0]  # a success resets the backoff


# ---- status -------------------------------------------------------------------------------------


def test_status_shows_cursor_rate_limit_and_pause_per_repository(
        sqlite_url: str, build: Build, sim: GitHubSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    app = build(sqlite_url)
    app.tick_all()
    sim.rate_limit_next(1, status=429, retry_after=600)
    app.tick_all()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli.main(["status", "--json"], environ={"DATABASE_URL": sqlite_url}) == 0
    report = json.loads(capsys.readouterr().out)
    by_key = {s["key"]: s for s in report["sources"]}
    for repo in REPOS:
        item = by_key[f"github:{repo}"]
        cursor = json.loads(item["cursor"])
        assert "since" in cursor and cursor["seen"] and cursor["etag"]  # since is null for a one-page repo
        assert item["meta"]["ratelimit_limit"] == 5000
        assert 0 < item["meta"]["ratelimit_remaining"] < 5000
        assert parse_time(item["meta"]["ratelimit_reset"]) > datetime.now(UTC)
    web = by_key["github:acme/web"]
    assert web["paused_until"] and "rate limited" in web["pause_reason"]
    assert by_key["github:acme/api"]["paused_until"] is None

    assert cli.main(["status"], environ={"DATABASE_URL": sqlite_url}) == 0
    text = capsys.readouterr().out
    assert "PAUSED until" in text and "ratelimit remaining:" in text and TOKEN not in text


def test_anonymous_polling_says_60_an_hour(sqlite_url: str, build: Build) -> None:
    app = build(sqlite_url, repos=("octo/tools",), token=None)
    assert app.tick_all()[0].ok
    meta = source_row(app, "github:octo/tools").meta
    assert meta is not None and meta["ratelimit_limit"] == 60
    assert meta["ratelimit_note"] == "60/hour without GITHUB_TOKEN"


# ---- user workflows -----------------------------------------------------------------------------


def test_user_workflow_gets_only_its_repository_issues_with_actions(db_url: str, build: Build,
                                                                    sim: GitHubSimulator) -> None:
    got: list[Event] = []
    closed: list[Event] = []
    registry = Registry()

    @registry.workflow("web-issues", on=github.issues(repo="acme/web", pull_requests=False), version="1")
    def web_issues(event: Event, ctx: Context) -> None:
        got.append(event)

    @registry.workflow("closed-prs", on=github.issues(pull_requests=True, actions={"closed"}))
    def closed_prs(event: Event, ctx: Context) -> None:
        closed.append(event)

    app = build(db_url, registry=registry)
    app.tick_all()
    plain = [i for i in sim.issues("acme/web").values() if "pull_request" not in i]
    assert sorted(e.id for e in got) == sorted(versions(plain))
    assert all(e.stream == "github:acme/web" and "pull_request" not in e.data for e in got)
    assert all((e.action == "opened") == (e.data["created_at"] == e.data["updated_at"]) for e in got)
    assert {e.action for e in got} <= ACTIONS

    before = {i["id"]: i for i in sim.issues("acme/web").values()}
    sim.advance(10)
    made = sim.mutate("acme/web", 25) + sim.mutate("acme/api", 5)
    got.clear()
    app.tick_all()
    wanted = {}
    for m in made[:25]:
        if "pull_request" in m:
            continue
        old = before.get(m["id"])
        wanted[f"{m['id']}@{m['updated_at']}"] = (
            "opened" if old is None else
            "closed" if (old["state"], m["state"]) == ("open", "closed") else
            "reopened" if (old["state"], m["state"]) == ("closed", "open") else "edited")
    assert {e.id: e.action for e in got} == wanted
    assert {"opened", "edited"} <= set(wanted.values())
    assert closed and all(e.action == "closed" and "pull_request" in e.data for e in closed)


# ---- windows (backfills) ------------------------------------------------------------------------


def test_window_fetch_returns_only_versions_inside_it(sim: GitHubSimulator) -> None:
    connector = GitHubConnector(repo="acme/web", base_url=sim.url, token=Secret(TOKEN), page_size=5)
    stamps = sorted(parse_time(i["updated_at"]) for i in sim.issues("acme/web").values())
    window = Window(stamps[20], stamps[70])
    got: list[str] = []
    cursor = None
    for _ in range(100):
        page = connector.fetch_page(cursor, window)
        got += [e.id for e in page.events]
        cursor = page.next_cursor or cursor
        if not page.has_more:
            break
    connector.close()
    inside = [i for i in sim.issues("acme/web").values() if window.contains(parse_time(i["updated_at"]))]
    assert Counter(got) == Counter(versions(inside))


# ---- errors and secrets -------------------------------------------------------------------------


def test_unknown_repo_is_fatal_for_that_source_only(sqlite_url: str, build: Build) -> None:
    app = build(sqlite_url, repos=("acme/web", "acme/missing"))
    ok, missing = app.tick_all()
    assert ok.ok and not missing.ok
    assert "acme/missing" in str(missing.error) and "GITHUB_REPOS" in str(missing.error)


def test_bad_token_is_an_auth_error_that_never_shows_the_token(
        sqlite_url: str, build: Build, sim: GitHubSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "ghp_wrong_secret_0a9b8c"
    app = build(sqlite_url, repos=("acme/web",), token=wrong)
    result = app.tick_all()[0]
    assert not result.ok and "GITHUB_TOKEN rejected" in str(result.error)
    row = source_row(app, "github:acme/web")
    for text in (result.error, row.last_error, caplog.text, repr(app.connectors), repr(app.settings),
                 json.dumps([list(r) for r in sim.requests])):
        assert wrong not in str(text) and TOKEN not in str(text)
    assert sim.requests[-1][2]["authorization"] == "Bearer ***"


def test_a_stored_link_to_another_host_is_dropped_not_followed() -> None:
    """A cursor stored with a link off GITHUB_BASE_URL (before links were checked on arrival) is never
    followed: the walk of its second starts again from our own base, so the source recovers."""
    asked: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        return httpx.Response(200, json=[])

    connector = GitHubConnector(repo="acme/web", base_url="https://api.github.com", token=Secret(TOKEN),
                                transport=httpx.MockTransport(handler))
    cursor = Cursor(since="2026-01-01T00:00:00Z", next_url="https://evil.example/x?page=2").dumps()
    page = connector.fetch_page(cursor)
    assert [url.host for url in asked] == ["api.github.com"]
    assert asked[0].params["since"] == "2026-01-01T00:00:00Z"
    assert "evil.example" not in str(page.next_cursor)


# ---- pure decisions -----------------------------------------------------------------------------

S0, S1, S2 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"


@pytest.mark.parametrize(("cursor", "listed", "next_url", "via_link", "expected", "more"), [
    # a last page of a since request keeps since, grows seen and keeps the ETag
    (Cursor(S0, frozenset({(1, S0)})), [(1, S0), (2, S1)], None, False,
     Cursor(S0, frozenset({(1, S0), (2, S1)}), etag="E"), False),
    # more pages reaching a later second: ask again from that second, keeping what was seen there
    (Cursor(S0, frozenset({(1, S0)})), [(1, S0), (2, S1), (3, S2)], "L", False,
     Cursor(S2, frozenset({(3, S2)})), True),
    # a whole page in the since second (a crowded second): follow the link, keep every id of that second
    (Cursor(S1, frozenset({(2, S1)})), [(2, S1), (3, S1)], "L", False,
     Cursor(S1, frozenset({(2, S1), (3, S1)}), next_url="L", walk=frozenset({2, 3})), True),
    # the first walk through a crowded second ends in it: walk it again, to catch an issue that slid back
    # onto a page already read (an edit between two pages)
    (Cursor(S1, frozenset({(2, S1)}), next_url="L", walk=frozenset({2})), [(4, S1)], None, True,
     Cursor(S1, frozenset({(2, S1), (4, S1)}), last=frozenset({2, 4})), True),
    # a walk that lists what the walk before it listed: the second is complete; no ETag for a multi-page
    # listing, nothing more now
    (Cursor(S1, frozenset({(2, S1), (4, S1)}), next_url="L", walk=frozenset({2}), last=frozenset({2, 4})),
     [(4, S1)], None, True, Cursor(S1, frozenset({(2, S1), (4, S1)}), last=frozenset({2, 4})), False),
    # a walk that differs from the one before (issue 2 was edited away, 3 slid back and is new): again
    (Cursor(S1, frozenset({(2, S1), (4, S1)}), next_url="L", walk=frozenset({3}), last=frozenset({2, 4})),
     [(4, S1)], None, True,
     Cursor(S1, frozenset({(2, S1), (4, S1)}), last=frozenset({3, 4})), True),
    # a verified walk ends past that second: compact and ask once more, to earn an ETag
    (Cursor(S1, frozenset({(2, S1)}), next_url="L", walk=frozenset({2}), last=frozenset({2, 4})),
     [(4, S1), (5, S2)], None, True, Cursor(S2, frozenset({(5, S2)})), True),
    # a verified walk reaches a later second with more pages to come: ask from that second
    (Cursor(S1, frozenset({(2, S1)}), next_url="L", walk=frozenset({2}), last=frozenset({2, 4})),
     [(4, S1), (5, S2)], "L2", True, Cursor(S2, frozenset({(5, S2)})), True),
    # an updated_at beyond the horizon (the future) never becomes since
    (Cursor(S0), [(1, S0), (9, "2999-01-01T00:00:00Z")], None, False,
     Cursor(S0, frozenset({(1, S0), (9, "2999-01-01T00:00:00Z")}), etag="E"), False),
    (Cursor(S0), [(1, S0), (2, S1), (9, "2999-01-01T00:00:00Z")], "L", False, Cursor(S1, frozenset({(2, S1)})),
     True),
    # the first poll of an empty repository
    (Cursor(), [], None, False, Cursor(etag="E"), False),
])
def test_advance_table(cursor: Cursor, listed: list[tuple[int, str]], next_url: str | None, via_link: bool,
                       expected: Cursor, more: bool) -> None:
    assert advance(cursor, listed, next_url=next_url, etag="E", via_link=via_link,
                   horizon="2026-06-01T00:00:00Z") == (expected, more)
    assert Cursor.loads(expected.dumps()) == expected


def test_advance_compacts_a_large_seen_set_and_refetches_once() -> None:
    listed = [(i, S0 if i < SEEN_LIMIT else S1) for i in range(SEEN_LIMIT + 3)]
    compacted, more = advance(Cursor(), listed, next_url=None, etag="E", via_link=False)
    assert (compacted.since, len(compacted.seen), compacted.etag, more) == (S1, 3, None, True)
    crowded = [(i, S1) for i in range(SEEN_LIMIT + 3)]  # nothing to drop: keep the ETag, no loop
    kept, more = advance(Cursor(S1), crowded, next_url=None, etag="E", via_link=False)
    assert (kept.etag, more, len(kept.seen)) == ("E", False, SEEN_LIMIT + 3)


REOPENED = {"created_at": S0, "state": "open", "state_reason": "reopened", "closed_at": None}


@pytest.mark.parametrize(("issue", "previous", "action"), [
    ({"created_at": S1, "state": "open"}, None, "opened"),  # created in this very second
    ({"created_at": S1, "state": "closed", "closed_at": S1}, None, "opened"),  # created closed: first version
    ({"created_at": S0, "state": "closed", "closed_at": S1}, None, "closed"),  # the close is this change
    ({"created_at": S0, "state": "closed", "closed_at": S0}, ("open", None), "closed"),  # seen open before
    ({"created_at": S0, "state": "closed", "closed_at": S0}, None, "edited"),  # an edit of a closed issue
    (REOPENED, ("closed", "completed"), "reopened"),
    (REOPENED, None, "reopened"),  # nothing seen before: never report a reopen as an edit
    (REOPENED, ("open", None), "reopened"),  # closed and reopened between two polls
    (REOPENED, ("open", "reopened"), "edited"),  # an edit after a reopen already reported
    ({"created_at": S0, "state": "open", "state_reason": None}, None, "edited"),
    ({"created_at": S0, "state": "open", "state_reason": None}, ("open", None), "edited"),
])
def test_derive_action_table(issue: dict[str, Any], previous: tuple[str, str | None] | None,
                             action: str) -> None:
    assert derive_action(issue, S1, previous) == action


def _response(status: int, headers: dict[str, str] | None = None, message: str = "") -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, json={"message": message},
                          request=httpx.Request("GET", "https://api.github.com/repos/a/b/issues"))


@pytest.mark.parametrize(("response", "wait"), [
    (_response(429, {"retry-after": "30"}), 30.0),
    (_response(403, {"retry-after": "7", "x-ratelimit-remaining": "12"}), 7.0),
    (_response(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000120"}), 121.0),
    (_response(429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "999000"}), 1.0),
    (_response(429), 60.0),
    (_response(403, {}, "You have exceeded a secondary rate limit"), 60.0),
    (_response(403, {}, "Resource not accessible by integration"), None),
    (_response(404), None),
])
def test_throttle_wait_table(response: httpx.Response, wait: float | None) -> None:
    assert throttle_wait(response, now=1_000_000.0) == wait


def test_secondary_wait_doubles_from_a_minute_up_to_an_hour() -> None:
    assert [secondary_wait(n) for n in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


@pytest.mark.parametrize(("status", "error", "text"), [
    (401, AuthError, "GITHUB_TOKEN"), (403, AuthError, "acme/web"), (404, FatalError, "acme/web not found"),
    (301, FatalError, "GITHUB_REPOS"), (502, RetryableError, "HTTP 502"), (422, FatalError, "HTTP 422"),
])
def test_status_policy_table(status: int, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        status_policy("github:acme/web", "acme/web", _response(status), now=0.0)


def test_trigger_filters_by_repository_pull_requests_and_action() -> None:
    def event(stream: str, action: str, pr: bool) -> Event:
        data: dict[str, Any] = {"id": 1, "pull_request": {"url": "u"}} if pr else {"id": 1}
        return Event(stream=stream, id="1@x", type="github.issue", occurred_at=datetime.now(UTC), data=data,
                     action=action)

    only_web = github.issues(repo="Acme/Web", pull_requests=False)
    assert only_web.streams == frozenset({"github:acme/web"})
    assert only_web.types == frozenset({"github.issue"})
    assert only_web.matches(event("github:acme/web", "opened", False))
    assert not only_web.matches(event("github:acme/web", "opened", True))
    assert not only_web.matches(event("github:acme/api", "opened", False))
    closes = github.issues(actions=["closed", "reopened"])
    assert closes.streams is None and closes.matches(event("github:x/y", "reopened", True))
    assert not closes.matches(event("github:x/y", "edited", True))
    assert github.issues().where is None
    bad_arguments: list[dict[str, Any]] = [{"repo": "acme"}, {"repo": []}, {"actions": ["merged"]}]
    for bad in bad_arguments:
        with pytest.raises(ValueError):
            github.issues(**bad)


def test_sources_from_the_environment() -> None:
    registry = Registry()
    assert github.provider.sources({}, registry) == []
    found = github.provider.sources({"GITHUB_REPOS": " Acme/Web, acme/web ,calcom/cal.com"}, registry)
    assert [c.key for c in found] == ["github:acme/web", "github:calcom/cal.com"]
    assert all(isinstance(c, GitHubConnector) and c.anonymous for c in found)
    assert "api.github.com" in repr(found[0])
    for c in found:
        c.close()
    for bad in ("acme", "acme/web/issues", "-acme/web", "acme/..", "acme/we b"):
        with pytest.raises(ConfigError) as info:
            github.provider.sources({"GITHUB_REPOS": bad}, registry)
        assert info.value.variable == "GITHUB_REPOS"
    with pytest.raises(ConfigError) as info:
        github.provider.sources({"GITHUB_REPOS": "a/b", "GITHUB_BASE_URL": "api.github.com"}, registry)
    assert info.value.variable == "GITHUB_BASE_URL"
    secret = github.provider.sources({"GITHUB_REPOS": "a/b", "GITHUB_TOKEN": TOKEN}, registry)[0]
    assert not secret.anonymous and TOKEN not in repr(secret)  # type: ignore[attr-defined]
    secret.close()


def test_builtin_mirror_is_registered() -> None:
    registry = Registry()
    github.provider.builtin_workflows(registry)
    wf = registry.get("github.mirror.issues")
    assert wf is not None and wf.builtin and wf.trigger.provider == "github"


def test_cursor_rejects_foreign_text() -> None:
    for text in ("event_01ABC", "{}", '{"v": 1, "seen": [1]}', '{"v": 1, "seen": {"x": [1]}}'):
        with pytest.raises(ValueError):
            Cursor.loads(text)
