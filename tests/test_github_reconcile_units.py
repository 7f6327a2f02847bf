"""GitHub reconciliation's parts on their own: the state kept in the cursor and what an answer means (tables),
the 404 guard (a connector over ``httpx.MockTransport`` and a real SQLite mirror), and the simulator's
answers for one issue. The end-to-end tests are in ``test_github_reconcile.py``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors import github
from connectors.github.client import GitHubConnector
from connectors.github.mirrorindex import SqlMirrorIndex
from connectors.github.reconcile import answer
from connectors.github.recstate import NumberSet, Rec, missing, page_of, page_text
from connectors.github.tables import issues as issues_table
from simulators.github import GitHubSimulator
from syncd.contracts import Event

TOKEN = "ghp_test_secret_reconcile_units"
HOUR = 3600.0
REPOS = {"acme/web": 12, "acme/api": 4}


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    with GitHubSimulator(repos=REPOS, seed=24, tokens=(TOKEN,)) as simulator:
        yield simulator


# ---- pure parts ---------------------------------------------------------------------------------------------


def test_rec_moves_through_a_walk_and_its_checks() -> None:
    rec = Rec(at=100.0)
    assert not rec.due(3699.0, HOUR) and rec.due(3700.0, HOUR)
    rec = rec.begin(3700.0)
    assert rec.active and rec.page == 1 and not rec.due(99999.0, HOUR)
    rec = rec.listed(page_text('W/"a"', (1, 2, 3)), more=True)
    assert rec.page == 2 and rec.walk == ('W/"a"\t1-3',)
    rec = rec.listed(page_text(None, (5, 4)), more=False)
    assert rec.page == 0 and rec.last == ('W/"a"\t1-3', "\t5,4") and rec.previous(2) == (None, (5, 4))
    assert rec.checking([]).active is False and rec.checking([]).at == 3700.0
    rec = rec.checking([6, 9])
    assert rec.active and rec.check == (6, 9)
    rec = rec.checked().checked()
    assert not rec.active and rec.at == 3700.0 and rec.last  # the walk's ETags stay for the next one
    assert Rec.from_json(rec.to_json()) == rec
    with pytest.raises(ValueError, match="reconciliation state"):
        Rec.from_json({"at": "soon"})
    with pytest.raises(ValueError, match="reconciliation state"):
        Rec.from_json({"at": 1, "last": "not a list"})


@pytest.mark.parametrize("page", [(None, ()), ('W/"x"', (3, 1, 2, 200000)), ('W/"y"', tuple(range(1, 101))),
                                  ('W/"z"', (1, 2, 4, 5, 6, 9))])
def test_page_records_round_trip_their_text(page: tuple[Any, ...]) -> None:
    assert page_of(page_text(*page)) == page
    assert len(page_text('W/"' + "f" * 64 + '"', range(1, 101))) < 80  # a full page of consecutive numbers


def test_missing_compares_against_every_page_in_batches() -> None:
    pages = [page_text(None, (1, 2, 3)), page_text(None, (5, 8))]
    assert missing(pages, [[1, 2], [4, 5], [6, 8, 9]]) == [4, 6, 9]
    numbers = NumberSet(range(0, 50_000, 2))
    assert 49_998 in numbers and 49_999 not in numbers and -1 not in numbers and 10**9 not in numbers


@pytest.mark.parametrize(("status", "history", "expected"), [
    (200, [], None), (410, [], "deleted"), (404, [], "deleted"), (301, [], "transferred"),
    (308, [], "transferred"),
    (200, [301], "transferred"),  # a client that follows the redirect still reports the transfer
    (404, [301], "transferred"),  # moved to a repository the token cannot read
])
def test_what_an_answer_about_one_issue_means(status: int, history: list[int], expected: str | None) -> None:
    request = httpx.Request("GET", "https://api.github.com/repos/o/r/issues/1")
    response = httpx.Response(status, request=request,
                              history=[httpx.Response(code, request=request) for code in history])
    assert answer(response) == expected


def test_removal_actions_are_valid_trigger_actions() -> None:
    trigger = github.issues(actions={"deleted"})
    gone = Event("github:o/r", "1:deleted@x", "github.issue", datetime(2026, 1, 1, tzinfo=UTC), {"id": 1},
                 action="deleted")
    assert trigger.where is not None and trigger.where(gone)
    with pytest.raises(ValueError, match="did you mean 'deleted'"):
        github.issues(actions={"delted"})



@pytest.mark.parametrize(("repo_status", "removed"), [(200, True), (404, False)])
def test_a_404_is_a_deletion_only_while_the_repository_still_answers(sqlite_url: str, repo_status: int,
                                                                     removed: bool) -> None:
    from syncd.errors import FatalError
    from syncd.store.db import create_engine
    from syncd.store.schema import migrate

    engine = create_engine(sqlite_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(issues_table.insert().values(id=77, repo="o/r", number=5, is_pull_request=False, title="t",
                                                  updated_at=datetime(2026, 1, 1, tzinfo=UTC)))
    engine.dispose()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/repos/o/r/issues":
            return httpx.Response(200, json=[], headers={"etag": 'W/"empty"'})
        if request.url.path == "/repos/o/r/issues/5":
            return httpx.Response(404, json={"message": "Not Found"})
        assert request.url.path == "/repos/o/r"
        return httpx.Response(repo_status, json={"full_name": "o/r"} if repo_status == 200 else {"message": "x"})

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")
    clock = [1000.0]
    connector = GitHubConnector(repo="o/r", base_url="https://api.github.test", transport=httpx.MockTransport(handler),
                                clock=lambda: clock[0], reconcile_seconds=HOUR, mirror=SqlMirrorIndex(sqlite_url))
    try:
        page = connector.fetch_page(None)  # the first listing (empty) starts the clock
        clock[0] += HOUR
        page = connector.fetch_page(page.next_cursor)  # a 200 again (no ETag sent on a first poll): due now
        assert page.has_more
        page = connector.fetch_page(page.next_cursor)  # the walk: one empty page, so number 5 is missing
        assert page.has_more and not page.events
        if not removed:
            with pytest.raises(FatalError, match="repository o/r not found"):
                connector.fetch_page(page.next_cursor)
            return
        with tracer.start_as_current_span("page.fetch") as span:  # the engine's span around each page
            page = connector.fetch_page(page.next_cursor)
        assert [(e.id, e.action, e.data["number"]) for e in page.events] == [
            ("77:deleted@2026-01-01T00:00:00Z", "deleted", 5)]
        assert not page.has_more
        recorded = span.attributes if isinstance(span, ReadableSpan) else None
        assert dict(recorded or {}) == {"syncd.github.reconcile": "check", "syncd.github.reconcile.left": 1}
    finally:
        connector.close()


def test_the_simulator_answers_for_one_issue_as_github_does(sim: GitHubSimulator) -> None:
    first, second, third = list(sim.issues("acme/web").values())[:3]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=sim.url, headers=headers) as client:
        found = client.get(f"/repos/acme/web/issues/{first['number']}")
        assert found.status_code == 200 and found.json() == first
        assert client.get(f"/repos/acme/web/issues/{first['number']}",
                          headers={"If-None-Match": found.headers["etag"]}).status_code == 304
        assert client.get("/repos/acme/web/issues/99999").status_code == 404
        assert client.get("/repos/acme/web").json()["full_name"] == "acme/web"
        sim.delete("acme/web", second["number"])
        sim.transfer("acme/web", third["number"], "acme/api")
        assert client.get(f"/repos/acme/web/issues/{second['number']}").status_code == 410
        moved = client.get(f"/repos/acme/web/issues/{third['number']}")
        assert moved.status_code == 301
        followed = client.get(moved.headers["location"])  # the new URL serves the issue in its new home
        assert followed.status_code == 200 and followed.json()["title"] == third["title"]
        assert followed.json()["number"] == REPOS["acme/api"] + 1
    listed = {i["number"] for i in sim.issues("acme/web").values()}
    assert second["number"] not in listed and third["number"] not in listed
