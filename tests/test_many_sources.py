"""Many sources at a flat cost each (issue 28), over real HTTP to the GitHub simulator.

- the repositories of one token share one HTTP client (one TLS set-up, one pool) → ``test_*_share_*``
- the daemon ticks hundreds of sources from one scheduler job on a few threads → ``test_daemon_*``
- the walker's choices (oldest first, paced, woken) → ``test_walker_*``
- a repository added or removed between two starts: only the new one is listed from the beginning, the
  others go on from their cursors with one conditional request, the removed one is left as it was
  → ``test_a_repository_added_or_removed_*`` (both databases)
- ``syncd status`` shows each credential's budget → ``test_status_shows_*``
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from connectors import github
from connectors.github.pool import clients, credential_id
from simulators.github import GitHubSimulator
from syncd.ops.app import App
from syncd.ops.once import run_once
from syncd.ops.scheduler import TICK_THREADS, Daemon, Walker
from syncd.settings import Secret
from syncd.workflows import Registry
from tests.conftest import settings_for

TOKEN = "ghp_many_sources_2b7e11"
OTHER = "ghp_many_sources_other_9d04"


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    repos = {"acme/a": 12, "acme/b": 7, "acme/c": 5}
    with GitHubSimulator(repos=repos, seed=8, tokens=(TOKEN, OTHER)) as simulator:
        yield simulator


def test_repositories_of_one_token_share_one_http_client() -> None:
    repos = ",".join(f"org/r{n}" for n in range(200))
    env = {"GITHUB_REPOS": repos, "GITHUB_TOKEN": TOKEN, "GITHUB_BASE_URL": "http://127.0.0.1:9"}
    before = len(clients)
    connectors = github.provider.sources(env, Registry())
    others = github.provider.sources({**env, "GITHUB_TOKEN": OTHER, "GITHUB_REPOS": "org/x"}, Registry())
    try:
        shared = {id(c._client) for c in connectors}  # type: ignore[attr-defined]
        assert len(shared) == 1 and len(clients) == before + 2  # one per token, not one per repository
        assert {c.credential for c in connectors} == {credential_id("http://127.0.0.1:9", Secret(TOKEN))}  # type: ignore[attr-defined]
        assert TOKEN not in connectors[0].credential  # type: ignore[attr-defined]
        assert {id(c.budget) for c in connectors} == {id(connectors[0].budget)}  # type: ignore[attr-defined]
    finally:
        client = connectors[0]._client  # type: ignore[attr-defined]
        for connector in connectors[:-1]:
            connector.close()
        connectors[0].close()  # closing twice lets go once
        assert not client.is_closed  # the last repository still uses it
        connectors[-1].close()
        assert client.is_closed
        for connector in others:
            connector.close()
    assert len(clients) == before


def test_daemon_ticks_hundreds_of_sources_on_a_few_threads() -> None:
    ticked: dict[str, str] = {}
    lock = threading.Lock()

    def job(name: str) -> Callable[[], None]:
        def tick() -> None:
            with lock:
                ticked[name] = threading.current_thread().name

        return tick

    stop = threading.Event()
    jobs = [(f"github:org/r{n}", job(f"github:org/r{n}")) for n in range(300)]
    daemon = Daemon(jobs, interval=3600, stop=stop)
    daemon.start()
    try:
        # One walk thread for the group, not a job per source (and no APScheduler job: no chores here).
        assert len(daemon.walk_threads) == 1 and not daemon.scheduler.get_jobs()
        deadline = time.monotonic() + 30
        while len(ticked) < len(jobs):
            assert time.monotonic() < deadline, f"{len(ticked)} of {len(jobs)} ticked"
            time.sleep(0.05)
    finally:
        stop.set()
        daemon.wait()
    assert len(set(ticked.values())) <= TICK_THREADS
    assert not daemon.walk_threads[0].is_alive()  # a stop ends the walks


@dataclass
class Grant:
    polls: int
    interval: float


class CountingPacer:
    def __init__(self, polls: int, interval: float) -> None:
        self.grant = Grant(polls, interval)
        self.asked: list[int] = []

    def allow(self, *, now: float, base: float, sources: int, wanted: int, horizon: float) -> Grant:
        self.asked.append(wanted)
        return Grant(min(wanted, self.grant.polls), self.grant.interval)


def test_walker_polls_oldest_first_as_far_as_the_pacer_allows() -> None:
    pacer = CountingPacer(polls=2, interval=100)
    walker = Walker(["a", "b", "c"], 10, pacer)
    assert walker.due(0) == ["a", "b"]  # the pacer allows two
    assert walker.due(1) == ["c"]  # a and b are running; c is still due
    for key in ("a", "b", "c"):
        walker.done(key)
    assert walker.due(50) == [] and pacer.asked[-1] == 0  # the pacer's interval (100 s), not the base 10 s
    assert walker.due(100) == ["a", "b"]  # the oldest polls first; c's turn comes at the next walk
    assert walker.due(101) == ["c"]


def test_walker_without_a_pacer() -> None:
    walker = Walker(["a", "b"], 10)
    assert walker.due(0) == ["a", "b"]
    walker.done("a")
    walker.done("b")
    assert walker.due(5) == []
    assert walker.due(10) == ["a", "b"]
    walker.done("a")
    walker.done("b")
    assert walker.wake("b") and not walker.wake("z")
    assert walker.due(11) == ["b"]  # woken: due at once


def test_a_repository_added_or_removed_on_restart_is_handled_without_rescanning(
        db_url: str, sim: GitHubSimulator) -> None:
    def start(repos: str) -> App:
        return App.build(settings_for(db_url, GITHUB_REPOS=repos, GITHUB_TOKEN=TOKEN, GITHUB_BASE_URL=sim.url,
                                      SYNCD_BUILTINS="none"), registry=Registry())

    def once(repos: str) -> list[tuple[str, int, dict[str, str]]]:
        app = start(repos)
        try:
            before = len(sim.requests)
            assert run_once(app).exit_code == 0
            return sim.requests[before:]
        finally:
            app.close()

    def listing(requests: list[tuple[str, int, dict[str, str]]], repo: str) -> list[tuple[int, bool]]:
        return [(status, "if-none-match" in headers) for path, status, headers in requests
                if path.startswith(f"/repos/{repo}/issues")]

    once("acme/a,acme/b")
    added = once("acme/a,acme/b,acme/c")
    assert listing(added, "acme/a") == [(304, True)] and listing(added, "acme/b") == [(304, True)]
    assert listing(added, "acme/c") == [(200, False)]  # only the new one is listed from the start
    removed = once("acme/a,acme/c")
    assert listing(removed, "acme/a") == [(304, True)] and listing(removed, "acme/c") == [(304, True)]
    assert listing(removed, "acme/b") == []
    back = once("acme/a,acme/b,acme/c")  # and back again: from its cursor, not from the beginning
    assert listing(back, "acme/b") == [(304, True)]


def test_status_shows_each_credentials_budget(sqlite_url: str, sim: GitHubSimulator,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.cli import main

    env = {"DATABASE_URL": sqlite_url, "GITHUB_REPOS": "acme/a,acme/b", "GITHUB_TOKEN": TOKEN,
           "GITHUB_BASE_URL": sim.url, "SYNCD_HTTP_PORT": "0"}
    app = App.build(settings_for(sqlite_url, **{k: v for k, v in env.items() if k != "DATABASE_URL"}),
                    registry=Registry())
    try:
        pacers = app.pacers()
        assert set(pacers) == {"github:acme/a", "github:acme/b"}
        walker = Walker(list(pacers), 60, next(iter(pacers.values())))
        for key in walker.due(sim.now.timestamp()):  # what the daemon's walk does
            app.tick(next(c for c in app.connectors if c.key == key))
        walker.due(sim.now.timestamp() + 1)  # the next walk brings the headers seen to the shared row
    finally:
        app.close()
    assert main(["status", "--json"], environ=env) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    [budget] = report["budgets"]
    assert budget["credential"].startswith("github:") and TOKEN not in json.dumps(report)
    assert budget["limit"] == 5000 and 0 < budget["remaining"] < 5000 and budget["sources"] == 2
    assert budget["poll_interval_seconds"] == 60
    assert main(["status"], environ=env) == 0
    text = capsys.readouterr().out
    assert f"budget {budget['credential']}: {budget['remaining']:,} of 5,000 requests left" in text
    assert "each of its 2 sources polled every 60s" in text


def test_table_sources_on_one_database_share_one_pool(sqlite_url: str) -> None:
    import sqlalchemy as sa

    from connectors import sql

    names = [f"t{n}" for n in range(30)]
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        for name in names:
            conn.execute(sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)"))
    engine.dispose()
    registry = Registry()
    for name in names:
        registry.workflow(f"on-{name}", on=sql.table(name))(lambda event, ctx: None)
    connectors = sql.provider.sources({"DATABASE_URL": sqlite_url}, registry)
    try:
        assert len(connectors) == len(names)
        assert len({id(c._engine) for c in connectors}) == 1  # type: ignore[attr-defined]
    finally:
        for connector in connectors:
            connector.close()
