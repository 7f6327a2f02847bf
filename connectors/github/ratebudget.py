"""One request budget per GitHub credential, shared by its repositories and by every replica.

GitHub counts a token's requests together (``x-ratelimit-limit``/``remaining``/``reset`` on every answer,
an hour-long window). Each repository polling on its own interval as if alone spends 30,000 requests an
hour for 500 repositories polled every minute, against 5,000. So the polls of one credential are paced
together (``syncd.ops.scheduler`` asks :meth:`CredentialBudget.allow` how many may start now):

- the usable budget is ``remaining`` minus a reserve of ``RESERVE`` of the limit, which routine polls
  never spend (a person's manual re-run, a backfill still can); it is spread evenly until the reset:
  ``rate = usable / (reset - now)`` requests a second;
- a poll costs ``cost`` requests: measured in the window as the fall of ``remaining`` since syncd's
  first answer of the window over syncd's requests since (all replicas; other users of the token count
  too, which only makes syncd more careful) (a 304
  to a conditional request is free on GitHub when authorised, so an idle token costs little), at least
  ``MIN_COST`` (secondary limits count every request), and 1 until ``MIN_SAMPLE`` requests are seen;
- every source of the credential then polls every ``interval = max(base, sources * cost / rate)``
  seconds: when the budget runs low, all of them slow down together (no single one hits a 403);
  with nothing usable left, none polls until the reset; an interval is never longer than waiting for
  the reset and then pacing a full window (near the reset, a ratio of small numbers would stretch it);
- polls take slots ``interval / sources`` apart (GCRA slots on the shared row, ``syncd.store.budget``),
  whichever replica takes them, so replicas together never poll faster than one would. A small group
  whose interval is not stretched asks for a whole interval's slots at once (``Walker.gather`` in
  ``syncd.ops.scheduler``): its polls then start together, at the same rate over an interval.

Worst case between two polls of one repository, with the token used only by syncd: ``interval`` plus
two of the scheduler's walk periods (``WALK_SECONDS``: a poll starts at a walk, on a slot), where
``interval <= max(base, sources * 3600 / (limit * (1 - RESERVE)))`` (cost 1); with k replicas polling
in different orders, k times that at most. If
something else drains the token below the reserve, no routine poll starts until GitHub's reset.

The planner (:func:`plan`) is pure and tested by tables; :class:`CredentialBudget` keeps the headers
seen by this process and runs the planner on the shared row.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

from syncd.store.budget import Budget, SqlBudgets

RESERVE = 0.05
#: Reconciliation (``connectors.github.reconcile``) stops while less than this share of the limit is left:
#: between it and ``RESERVE`` only routine polls spend, so a reconciliation never delays them.
RECONCILE_RESERVE = 0.10
MIN_COST = 0.02
MIN_SAMPLE = 20
#: GitHub's primary window; a new window is taken as full until its first answer says otherwise.
WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class Observation:
    """The rate-limit headers of one answer (``limit`` 0: the answer had none)."""

    limit: int
    remaining: int
    reset_at: float

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Observation | None:
        try:
            limit = int(headers["x-ratelimit-limit"])
            remaining = int(headers["x-ratelimit-remaining"])
            reset_at = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return None
        if limit <= 0 or remaining < 0 or not math.isfinite(reset_at):
            return None
        return cls(limit, min(remaining, limit), reset_at)


@dataclass(frozen=True)
class Plan:
    """What the planner granted now: ``polls`` may start; each source polls every ``interval`` seconds."""

    polls: int
    interval: float


def merge(row: Budget, seen: Observation | None, requests: int, now: float) -> Budget:
    """``row`` with this replica's latest headers and its ``requests`` since the last merge folded in."""
    if seen is not None and seen.reset_at <= now:  # an answer from a window that is over says nothing now
        seen = None
    if seen is not None and seen.reset_at > row.reset_at + 1:  # a new window (GitHub moves reset only then)
        return replace(row, limit=seen.limit, remaining=seen.remaining, reset_at=seen.reset_at,
                       requests=requests, opening=seen.remaining + 1, window_start=now, observed_at=now)
    if seen is not None:  # the same window: the lowest remaining any replica saw is the latest
        return replace(row, limit=seen.limit, remaining=min(row.remaining, seen.remaining),
                       requests=row.requests + requests, observed_at=now)
    if row.limit and now >= row.reset_at:  # the window is over: full again until an answer says otherwise
        return replace(row, remaining=row.limit, reset_at=now + WINDOW_SECONDS, requests=requests,
                       opening=row.limit, window_start=now, observed_at=now)
    return replace(row, requests=row.requests + requests, observed_at=now)


def cost(row: Budget) -> float:
    """Requests a poll costs, as measured in this window (see the module docstring)."""
    if row.requests < MIN_SAMPLE:
        return 1.0
    return min(1.0, max(MIN_COST, (row.opening - row.remaining) / row.requests))


def interval(row: Budget, *, base: float, sources: int, now: float) -> float:
    """Seconds between two polls of each of ``sources`` so that ``row``'s budget lasts until its reset."""
    if not row.limit:
        return base
    usable = row.remaining - math.ceil(row.limit * RESERVE)
    left = max(0.0, row.reset_at - now)
    # Never longer than waiting for the reset and then pacing a full window: near the reset, what is left
    # of a window is small and a ratio of small numbers would stretch every source's interval for nothing.
    after_reset = left + sources * cost(row) * WINDOW_SECONDS / (row.limit * (1 - RESERVE))
    within = sources * cost(row) * max(1.0, left) / usable if usable > 0 else after_reset
    return max(base, min(within, after_reset))


def plan(row: Budget, *, seen: Observation | None, requests: int, now: float, base: float, sources: int,
         wanted: int, horizon: float) -> tuple[Budget, Plan]:
    """Merge what this replica saw, then grant up to ``wanted`` poll slots starting by ``now + horizon``."""
    row = merge(row, seen, requests, now)
    if not row.limit and row.requests:  # answers without rate-limit headers: no budget to keep
        return replace(row, interval=base, sources=sources), Plan(wanted, base)
    if not row.limit:  # nothing known yet: one poll, whose answer tells the budget
        return replace(row, interval=base, sources=sources), Plan(min(1, wanted), base)
    every = interval(row, base=base, sources=sources, now=now)
    spacing = every / max(1, sources)
    usable = row.remaining - math.ceil(row.limit * RESERVE)
    start, granted = max(row.next_at, now), 0
    while granted < wanted and start <= now + horizon and (granted + 1) * cost(row) <= max(0, usable):
        granted += 1
        start += spacing
    return replace(row, next_at=start, interval=every, sources=sources), Plan(granted, every)


class CredentialBudget:
    """This process's view of one credential: the headers its answers carried, and the shared row.

    ``seen`` is called by the client after every answer (any thread); ``allow`` by the scheduler's walk.
    Without a store (``bind`` not called: tests of a connector alone) the row lives in this object.
    """

    def __init__(self, credential: str) -> None:
        self.credential = credential
        self._lock = threading.Lock()
        self._seen: Observation | None = None
        self._latest: Observation | None = None  # the newest headers seen, kept across ``allow``
        self._requests = 0
        self._store: SqlBudgets | None = None
        self._row: Budget | None = None

    def bind(self, store: SqlBudgets) -> None:
        """Share the row through ``store`` (``SqlBudgets``) from now on."""
        self._store = store

    def seen(self, headers: Mapping[str, str]) -> None:
        observed = Observation.of(headers)
        with self._lock:
            self._requests += 1
            if observed is not None and (self._seen is None or observed.reset_at > self._seen.reset_at + 1
                                         or observed.remaining < self._seen.remaining):
                self._seen = observed
            if observed is not None and (self._latest is None or observed.reset_at > self._latest.reset_at + 1
                                         or observed.remaining < self._latest.remaining):
                self._latest = observed

    def spare(self, now: float, share: float = RECONCILE_RESERVE) -> bool:
        """Whether more than ``share`` of the limit is left, as the newest answer of this process said (its
        window over, or no answer yet: True). GitHub counts the token's requests from every replica, so
        the headers already include theirs."""
        with self._lock:
            latest = self._latest
        if latest is None or latest.reset_at <= now:
            return True
        return latest.remaining > math.ceil(latest.limit * share)

    def allow(self, *, now: float, base: float, sources: int, wanted: int, horizon: float) -> Plan:
        """How many of ``wanted`` polls may start by ``now + horizon``, and the sources' poll interval."""
        with self._lock:
            seen, requests, self._seen, self._requests = self._seen, self._requests, None, 0

        def planner(row: Budget) -> tuple[Budget, Plan]:
            return plan(row, seen=seen, requests=requests, now=now, base=base, sources=sources, wanted=wanted,
                        horizon=horizon)

        if self._store is not None:
            return self._store.update(self.credential, now, planner)[1]
        with self._lock:
            self._row, granted = planner(self._row or Budget.new(self.credential, now))
        return granted


_budgets: dict[str, CredentialBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(credential: str) -> CredentialBudget:
    """The process's one ``CredentialBudget`` of ``credential``."""
    with _budgets_lock:
        found = _budgets.get(credential)
        if found is None:
            found = _budgets[credential] = CredentialBudget(credential)
        return found
