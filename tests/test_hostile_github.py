"""GitHub misbehaving (issue #17, items 6 and 7): rate-limit resets years away or beyond any date, an
``updated_at`` in the future, ``Link`` headers to another host or relative, and the crowded second (more
issues in one second than fit on a page, one edited between two pages). Over real loopback HTTP against
the GitHub simulator's fault knobs; the WorkOS and engine classes are in ``test_hostile_providers.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connectors import github
from connectors.github.client import GitHubConnector
from connectors.github.cursor import Cursor
from connectors.github.policy import MAX_WAIT_SECONDS, throttle_wait
from simulators.github import GitHubSimulator
from syncd.contracts import Page
from syncd.engine.decisions import MAX_PAUSE
from syncd.ops.app import App
from syncd.settings import Secret
from syncd.workflows import Registry
from tests.conftest import settings_for
from tests.test_github_sync import catch_up
from tests.test_hostile_providers import counting_registry, ledger_ids, source_row

GH_TOKEN = "ghp_hostile_test_token_7c2"

Build = Callable[..., App]



@pytest.fixture
def gsim() -> Iterator[GitHubSimulator]:
    with GitHubSimulator(repos={"acme/web": 40, "acme/api": 20}, seed=9, tokens=(GH_TOKEN,)) as simulator:
        yield simulator


@pytest.fixture
def gbuild(gsim: GitHubSimulator, apps: list[App]) -> Build:
    def make(db_url: str, *, repos: tuple[str, ...] = ("acme/web", "acme/api"), page_size: int = 100,
             registry: Registry | None = None) -> App:
        connectors = [GitHubConnector(repo=r, base_url=gsim.url, token=Secret(GH_TOKEN), page_size=page_size,
                                      clock=lambda: gsim.now.timestamp()) for r in repos]
        env = {"GITHUB_REPOS": ",".join(repos), "GITHUB_BASE_URL": gsim.url, "GITHUB_TOKEN": GH_TOKEN}
        app = App.build(settings_for(db_url, **env), registry=registry or Registry(),
                        connectors=connectors)  # type: ignore[arg-type]
        apps.append(app)
        return app

    return make


@pytest.mark.parametrize("reset_in", [100 * 365 * 86400, 10**30])
def test_a_rate_limit_reset_far_away_or_out_of_range_pauses_an_hour_and_others_go_on(
        sqlite_url: str, gbuild: Build, gsim: GitHubSimulator, reset_in: int) -> None:
    app = gbuild(sqlite_url)
    gsim.rate_limit_next(1, status=403, reset_in=reset_in)  # a long wait is not retried in the tick: one
    web, api = app.tick_all()
    assert not web.ok and "rate limited" in str(web.error)
    assert api.ok and api.caught_up, "the next source is ticked as usual"
    row = source_row(app, "github:acme/web")
    assert row.paused_until is not None
    paused_for = row.paused_until.replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(0) < paused_for <= MAX_PAUSE + timedelta(minutes=2)
    assert "capped" in row.pause_reason and "further than an hour" in row.pause_reason


def test_throttle_wait_caps_a_reset_years_away() -> None:
    far = httpx.Response(403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(10**12)},
                         json={"message": "API rate limit exceeded"})
    assert throttle_wait(far, now=1e9) == MAX_WAIT_SECONDS


# ---- item 6: an updated_at far in the future ----------------------------------------------------


def test_an_issue_dated_in_the_future_never_moves_since_past_now(db_url: str, gbuild: Build,
                                                                 gsim: GitHubSimulator) -> None:
    processed: list[str] = []
    app = gbuild(db_url, repos=("acme/web",), registry=counting_registry(processed, github.issues()),
                 page_size=5)
    connector = app.connectors[0]
    catch_up(app, connector)
    gsim.advance(10)
    future = gsim.edit("acme/web", 3, at=datetime(2999, 1, 1, tzinfo=UTC), listed_now=True)
    catch_up(app, connector)
    row = source_row(app, "github:acme/web")
    since = Cursor.loads(row.cursor).since
    assert since is not None and since <= (gsim.now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "2999-01-01T00:00:00Z" in row.meta["note_future_updated_at"]
    gsim.advance(10)
    later = gsim.mutate("acme/web", 3)  # real changes after the bogus one are still seen
    catch_up(app, connector)
    ids = set(ledger_ids(app, "github:acme/web"))
    assert {f"{m['id']}@{m['updated_at']}" for m in later} <= ids
    assert f"{future['id']}@2999-01-01T00:00:00Z" in ids
    assert Counter(processed).most_common(1)[0][1] == 1, "the future version is listed often, run once"


# ---- item 6: a Link header to another host, or relative -----------------------------------------


@pytest.mark.parametrize("link_base", ["http://elsewhere.invalid", ""])
def test_a_link_elsewhere_is_never_stored_and_the_walk_goes_on_from_our_base(
        sqlite_url: str, gbuild: Build, gsim: GitHubSimulator, link_base: str) -> None:
    gsim.link_base = link_base
    app = gbuild(sqlite_url, repos=("acme/web",), page_size=3)  # history bursts of up to 8 in one second
    connector = app.connectors[0]
    cursors: list[str] = []
    app.engine.on_page = lambda target, page: cursors.append(str(page.next_cursor))
    catch_up(app, connector)
    assert not any("elsewhere" in c or '"next":"/' in c for c in cursors)
    assert any('"next":"http://127.0.0.1' in c for c in cursors), "crowded seconds paged from our own base"
    expected = {f"{i['id']}@{i['updated_at']}" for i in gsim.issues("acme/web").values()}
    assert expected <= set(ledger_ids(app, "github:acme/web"))
    assert "following our own page URL" in source_row(app, "github:acme/web").meta["note_link"]
    gsim.link_base = None  # the provider is fixed: its links are followed again, the note goes
    gsim.advance(5)
    gsim.mutate("acme/web", 8)
    catch_up(app, connector)
    assert "note_link" not in source_row(app, "github:acme/web").meta
    assert any(path.startswith("/repositories/") for path, _, _ in gsim.requests)


# ---- item 7: GitHub's crowded second -------------------------------------------------------------


def test_crowded_second_edit_between_pages_loses_no_version(sqlite_url: str, gbuild: Build,
                                                             gsim: GitHubSimulator) -> None:
    """More than a page of issues share one updated_at second; one of the first page is edited while the walk
    is between pages, so the first issue of the next page slides onto the page already read."""
    processed: list[str] = []
    app = gbuild(sqlite_url, repos=("acme/web",), page_size=5,
                 registry=counting_registry(processed, github.issues()))
    connector = app.connectors[0]
    catch_up(app, connector)
    gsim.advance(60)
    crowded = gsim.mutate("acme/web", 14)  # 14 versions in one second: three pages of 5
    second = crowded[0]["updated_at"]
    assert {m["updated_at"] for m in crowded} == {second}
    pages: list[Page] = []
    app.engine.on_page = lambda target, page: pages.append(page)
    while not any(Cursor.loads(str(p.next_cursor)).next_url for p in pages):  # until the walk is between pages
        assert app.tick(connector, max_pages=1).ok
    first_page = sorted(crowded, key=lambda m: m["number"])[:5]
    gsim.advance(1)
    edited = gsim.edit("acme/web", first_page[0]["number"])
    results = catch_up(app, connector)
    assert all(r.ok for r in results)
    expected = {f"{m['id']}@{m['updated_at']}" for m in [*crowded, edited]}
    assert expected <= set(ledger_ids(app, "github:acme/web")), "every version of the crowded second"
    assert Counter(processed).most_common(1)[0][1] == 1
    assert set(processed) >= expected
