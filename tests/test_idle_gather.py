"""A small group's sources fall due together (``Walker.gather``, issue 28): at 10 sources and a 10 s interval,
one walk in ten starts all ten (one batch, one question to the budget) instead of one source a walk.

Driven walk by walk on a simulated clock with the real GitHub budget (``CredentialBudget``, its row kept in
memory, fed the headers a poll's answer carries), as ``tests/test_github_budget.py`` drives it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from connectors.github.ratebudget import CredentialBudget
from syncd.ops.scheduler import GATHER_BELOW, WALK_SECONDS, Walker

T0 = 1_000_000.0


class Counted(CredentialBudget):
    """The real budget, counting the walker's questions."""

    def __init__(self) -> None:
        super().__init__("github:gather")
        self.asked = 0

    def allow(self, **kwargs: Any) -> Any:
        self.asked += 1
        return super().allow(**kwargs)


def drive(walker: Walker, budget: Counted, walks: int, limit: int = 5000,
          cost: int = 1) -> tuple[list[int], dict[str, list[float]]]:
    """Each walk's count of started sources, and each source's poll times (a poll costs ``cost`` requests:
    0 for a 304)."""
    sizes: list[int] = []
    spent = 0
    polled: dict[str, list[float]] = defaultdict(list)
    for n in range(walks):
        now = T0 + n * WALK_SECONDS
        started = walker.due(now)
        for key in started:
            spent += cost
            budget.seen({"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(limit - spent),
                         "x-ratelimit-reset": str(T0 + 3600)})
            polled[key].append(now)
            walker.done(key)
        sizes.append(len(started))
    return sizes, polled


def gaps(polled: dict[str, list[float]]) -> list[float]:
    return [b - a for times in polled.values() for a, b in itertools.pairwise(times)]


def test_a_small_groups_sources_fall_due_together_and_keep_their_interval() -> None:
    budget = Counted()
    walker = Walker([f"github:o/r{n}" for n in range(10)], 10.0, budget)
    sizes, polled = drive(walker, budget, 80)
    # After the first interval (the budget's first answer allows one poll, then the rest join), every walk
    # starts all ten or none.
    assert set(sizes[10:]) == {0, 10} and sizes[10:].count(10) == 7
    assert sum(sizes) == 80  # as many polls as one every interval per source
    every = gaps(polled)
    assert min(every) >= 10.0 / 2 and max(every) <= 10.0 + WALK_SECONDS
    assert all(gap == 10.0 for times in polled.values() for gap in gaps({"x": times[2:]}))  # then exactly
    assert budget.asked <= 12  # a question a batch (and every REPLAN_SECONDS), not one a walk (72 without)


def test_without_gathering_the_same_group_starts_one_source_a_walk() -> None:
    budget = Counted()
    walker = Walker([f"github:o/r{n}" for n in range(10)], 10.0, budget, gather=False)
    sizes, polled = drive(walker, budget, 80)
    assert max(sizes[10:]) <= 2 and sum(sizes) == 80
    assert set(gaps(polled)) == {10.0}
    assert budget.asked >= 70


def test_a_large_group_is_not_gathered() -> None:
    count = 10 * GATHER_BELOW  # GATHER_BELOW due per walk already: they batch without being gathered
    budget = Counted()
    walker = Walker([f"github:o/r{n}" for n in range(count)], 10.0, budget)
    sizes, polled = drive(walker, budget, 40, cost=0)
    assert max(sizes[12:]) <= GATHER_BELOW + 1
    assert min(gaps(polled)) >= 10.0 - WALK_SECONDS


def test_a_stretched_budget_gathers_nothing() -> None:
    # 10 sources on a token with 600 requests an hour: the budget stretches the interval to about a minute.
    budget = Counted()
    walker = Walker([f"github:o/r{n}" for n in range(10)], 10.0, budget)
    sizes, polled = drive(walker, budget, 400, limit=600)
    assert walker.interval > 10.0 and max(sizes[20:]) <= 1
    assert min(gaps(polled)) >= walker.interval - 2 * WALK_SECONDS
