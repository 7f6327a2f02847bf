"""One request budget per GitHub credential (issue 28), over real HTTP to the simulator, on both databases.

- 500 repositories on one token, a limit of 5,000 an hour that counts every request (304s too): over an
  hour and more of simulated time the token never exceeds its limit, never touches the 5% reserve, gets
  no 403, and no repository waits longer than the documented worst case → ``test_500_repositories_*``
- two replicas (two budgets, two walkers) share one token's budget through one database → ``test_two_*``
- the planner's decisions, as tables → ``test_plan_*``

Time is simulated: the walkers are driven at the simulator's clock (``advance``), never the wall clock.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from connectors.github.client import GitHubConnector
from connectors.github.ratebudget import (
    RESERVE,
    CredentialBudget,
    Observation,
    cost,
    interval,
    plan,
)
from simulators.github import GitHubSimulator
from syncd.ops.scheduler import WALK_SECONDS, Walker
from syncd.settings import Secret
from syncd.store import SqlStore
from syncd.store.budget import Budget

TOKEN = "ghp_budget_test_7c1f0a"
BASE = 60.0  # SYNC_INTERVAL_SECONDS' default


def worst_gap(sources: int, limit: int, base: float = BASE) -> float:
    """The README's worst case between two polls of one repository (one replica, the token syncd's alone)."""
    return max(base, sources * 3600 / (limit * (1 - RESERVE))) + 2 * WALK_SECONDS


class Replica:
    """One replica's side: its budget bound to the shared store, its connectors, its walker."""

    def __init__(self, sim: GitHubSimulator, repos: list[str], store: SqlStore) -> None:
        self.budget = CredentialBudget("github:test")
        self.budget.bind(store.budgets)
        self.connectors = {r: GitHubConnector(repo=r, base_url=sim.url, token=Secret(TOKEN), budget=self.budget,
                                              clock=lambda: sim.now.timestamp()) for r in repos}
        self.cursors: dict[str, str | None] = dict.fromkeys(repos)
        self.walker = Walker([f"github:{r}" for r in repos], BASE, self.budget)

    def walk(self, now: float, polled: dict[str, list[float]]) -> None:
        for key in self.walker.due(now):
            repo = key.removeprefix("github:")
            page = self.connectors[repo].fetch_page(self.cursors[repo])
            if page.next_cursor is not None:
                self.cursors[repo] = page.next_cursor
            polled[repo].append(now)
            self.walker.done(key)

    def close(self) -> None:
        for connector in self.connectors.values():
            connector.close()


def drive(sim: GitHubSimulator, replicas: list[Replica], seconds: int) -> tuple[dict[str, list[float]], int]:
    """Walk every replica each simulated second; returns each repository's poll times and the lowest
    ``remaining`` the token ever had."""
    polled: dict[str, list[float]] = defaultdict(list)
    lowest = sim.token_limit
    start = sim.now.timestamp()
    for _ in range(seconds):
        now = sim.now.timestamp()
        for replica in replicas:
            replica.walk(now, polled)
        limit, used, _ = sim.used(TOKEN)
        lowest = min(lowest, limit - used)
        sim.advance(WALK_SECONDS)
    assert sim.now.timestamp() - start == seconds
    return polled, lowest


def gaps(polled: dict[str, list[float]], end: float) -> dict[str, float]:
    """Each repository's longest wait between polls (and from its last poll to ``end``)."""
    return {repo: max(b - a for a, b in zip(times, [*times[1:], end], strict=True))
            for repo, times in polled.items()}


def test_500_repositories_on_one_token_never_exceed_its_limit_nor_starve(store: SqlStore) -> None:
    repos = [f"org/r{n:03d}" for n in range(500)]
    with GitHubSimulator(repos=dict.fromkeys(repos, 1), seed=3, tokens=(TOKEN,), token_limit=5000,
                         count_not_modified=True) as sim:
        replica = Replica(sim, repos, store)
        try:
            polled, lowest = drive(sim, [replica], 4500)  # the first window and most of the next
        finally:
            replica.close()
        statuses = [status for _, status, _ in sim.requests]
        assert 403 not in statuses and 429 not in statuses
        assert lowest >= math.ceil(5000 * RESERVE)  # routine polls never spent the reserve
        assert set(polled) == set(repos)  # every repository was polled
        worst = max(gaps(polled, sim.now.timestamp()).values())
        assert worst <= worst_gap(500, 5000), worst
        # And the budget was used, not hoarded: most of the usable budget of the first window went to polls.
        first_window = sum(1 for times in polled.values() for t in times if t < min(polled[repos[0]]) + 3600)
        assert first_window >= 0.8 * 5000 * (1 - RESERVE), first_window
        [row] = store.budgets.all()
        assert row.limit == 5000 and row.sources == 500
        assert row.interval == pytest.approx(500 * 3600 / (5000 * (1 - RESERVE)), rel=0.15)


def test_two_replicas_share_one_tokens_budget(store: SqlStore) -> None:
    repos = [f"org/r{n:03d}" for n in range(100)]
    limit = 500
    with GitHubSimulator(repos=dict.fromkeys(repos, 1), seed=4, tokens=(TOKEN,), token_limit=limit,
                         count_not_modified=True) as sim:
        replicas = [Replica(sim, repos, store), Replica(sim, repos, store)]
        try:
            polled, lowest = drive(sim, replicas, 3000)
        finally:
            for replica in replicas:
                replica.close()
        assert 403 not in [status for _, status, _ in sim.requests]
        assert lowest >= math.ceil(limit * RESERVE)
        # Together they polled at the pace one replica would: the shared row spaced their polls.
        total = sum(len(times) for times in polled.values())
        assert total <= limit * (1 - RESERVE) * 3000 / 3600 + 2, total
        # Both took part, and with two replicas no repository waited more than twice one replica's worst case.
        assert all(replica.walker.last for replica in replicas)
        assert max(gaps(polled, sim.now.timestamp()).values()) <= 2 * worst_gap(100, limit)


# ---- the planner, as tables --------------------------------------------------------------------------

NOW = 1_000_000.0


def row(limit: int = 5000, remaining: int = 5000, reset_in: float = 3600, requests: int = 0,
        next_at: float = NOW) -> Budget:
    return Budget("github:x", limit, remaining, NOW + reset_in, requests, limit, NOW - 1, next_at, 0.0, 0, NOW)


@pytest.mark.parametrize(("budget", "sources", "expected"), [
    (row(), 10, BASE),  # plenty: the base interval
    (row(), 500, 500 * 3600 / 4750),  # 500 polls must fit 4,750 usable requests in the hour
    (row(remaining=250 + 475, reset_in=360), 500, 500 * 360 / 475),  # low and late: slower together
    (row(remaining=250), 500, 3600 + 500 * 3600 / 4750),  # the reserve is left: the reset, then a full window
    (row(remaining=251, reset_in=1), 500, 1 + 500 * 3600 / 4750),  # the reset is near: not 500 s for 1 request
    (row(remaining=5000 - 100, requests=1000), 500, BASE),  # 304s mostly free: cost 0.1 a poll
    (Budget.new("github:x", NOW), 500, BASE),  # nothing known yet
])
def test_plan_interval(budget: Budget, sources: int, expected: float) -> None:
    assert interval(budget, base=BASE, sources=sources, now=NOW) == pytest.approx(max(BASE, expected))


@pytest.mark.parametrize(("requests", "spent", "expected"), [
    (0, 0, 1.0), (19, 0, 1.0), (100, 100, 1.0), (1000, 100, 0.1), (1000, 0, 0.02), (10, 50, 1.0),
])
def test_plan_cost(requests: int, spent: int, expected: float) -> None:
    assert cost(row(remaining=5000 - spent, requests=requests)) == pytest.approx(expected)


def test_plan_grants_spaced_slots_and_never_the_reserve() -> None:
    # 500 sources on a full window: slots 0.758 s apart, so a 1 s walk grants 2 (now and now + 0.758).
    new, granted = plan(row(), seen=None, requests=0, now=NOW, base=BASE, sources=500, wanted=50, horizon=1.0)
    assert granted.polls == 2 and new.next_at == pytest.approx(NOW + 2 * 500 * 3600 / 4750 / 500)
    # The reserve reached: nothing, whatever is wanted.
    _, granted = plan(row(remaining=250), seen=None, requests=0, now=NOW, base=BASE, sources=5, wanted=5,
                      horizon=1.0)
    assert granted.polls == 0
    # Nothing known: one probe at a time.
    _, granted = plan(Budget.new("github:x", NOW), seen=None, requests=0, now=NOW, base=BASE, sources=500,
                      wanted=500, horizon=1.0)
    assert granted.polls == 1


def test_plan_merges_replicas_and_windows() -> None:
    seen = Observation(5000, 4000, NOW + 3600)
    new, _ = plan(row(remaining=3900, requests=10), seen=seen, requests=5, now=NOW, base=BASE, sources=1,
                  wanted=0, horizon=1)
    assert (new.remaining, new.requests) == (3900, 15)  # the same window: the lowest remaining wins
    later = Observation(5000, 4999, NOW + 7200)
    new, _ = plan(row(remaining=10, requests=900), seen=later, requests=1, now=NOW + 3600, base=BASE, sources=1,
                  wanted=0, horizon=1)
    assert (new.remaining, new.requests, new.reset_at) == (4999, 1, NOW + 7200)  # a new window


@pytest.mark.parametrize("headers", [
    {}, {"x-ratelimit-limit": "x", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "1"},
    {"x-ratelimit-limit": "0", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"},
    {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "-1", "x-ratelimit-reset": "1"},
    {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "inf"},
])
def test_plan_ignores_unreadable_headers(headers: dict[str, str]) -> None:
    assert Observation.of(headers) is None
