"""One request budget per credential for providers that only say ``Retry-After`` (WorkOS, Stripe).

WorkOS and Stripe send no remaining-budget headers; what they say is a 429 with ``Retry-After`` once a
credential's limit is reached. The limit is the credential's, not a source's: the live source, its backfill
windows and every replica spend it together. So a 429 anywhere holds them all off, not only the source
that got it:

- the client that got the 429 calls :meth:`RetryAfterBudget.throttled`: the credential is held until
  ``now + Retry-After`` (``DEFAULT_WAIT_SECONDS`` without a readable one), here at once and in the shared
  row (``syncd_budgets``: ``reset_at`` is the end of the hold, ``limit`` stays 0) for other replicas;
- before every request the client asks :meth:`RetryAfterBudget.wait_seconds` (this process's hold, and the
  shared row read at most every ``REFRESH_SECONDS``); while the credential is held it sends nothing and
  raises ``RetryableError`` with the wait, as if the provider had answered 429: short waits are slept by
  the retry policy, longer ones pause the source until then (``syncd.engine.decisions.pause_of``), in a
  daemon's tick, a ``syncd once`` or a backfill window alike;
- the daemon's scheduler also asks :meth:`RetryAfterBudget.allow` (a ``Pacer``) and starts no poll of the
  credential's sources before the hold ends, so they do not each fail on it;
- ``syncd status`` shows the hold with the credential's budget line.

``credential_id`` names a credential by a hash of its base URL and key, never the key.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from syncd.errors import RetryableError
from syncd.http import parse_retry_after
from syncd.settings import Secret
from syncd.store.budget import Budget, SqlBudgets

#: The hold after a 429 without a readable Retry-After.
DEFAULT_WAIT_SECONDS = 1.0
#: How often a process reads the shared row (another replica's 429) before a request.
REFRESH_SECONDS = 5.0


def credential_id(provider: str, base_url: str, key: Secret) -> str:
    """``<provider>:<12 hex>``: stable for one base URL and key, reveals neither."""
    digest = hashlib.sha256(f"{base_url.rstrip('/')}\n{key.reveal()}".encode()).hexdigest()
    return f"{provider}:{digest[:12]}"


@dataclass(frozen=True)
class Plan:
    """What the budget grants now: ``polls`` may start; each source polls every ``interval`` seconds."""

    polls: int
    interval: float


def hold(row: Budget, until: float, now: float) -> Budget:
    """``row`` held until ``until`` at least (a later hold another replica wrote stays)."""
    return replace(row, reset_at=max(row.reset_at, until), next_at=max(row.next_at, until), observed_at=now,
                   requests=row.requests + 1)


def plan(row: Budget, *, now: float, base: float, sources: int, wanted: int) -> tuple[Budget, Plan]:
    """Every wanted poll once the hold is over; none before, and the interval stretched to its end."""
    held = max(0.0, row.reset_at - now)
    every = max(base, held)
    granted = wanted if held <= 0 else 0
    return replace(row, interval=every, sources=sources, observed_at=now), Plan(granted, every)


class RetryAfterBudget:
    """This process's view of one credential's hold (see the module docstring). Thread-safe. Without a
    store (``bind`` not called: a connector alone) the hold lives in this object only."""

    def __init__(self, credential: str, *, clock: Callable[[], float] = time.time,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.credential = credential
        self._clock = clock
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._until = 0.0  # unix seconds: no request before
        self._holder: str | None = None  # whose 429 set it (see Gate)
        self._read_at = float("-inf")
        self._store: SqlBudgets | None = None

    def bind(self, store: SqlBudgets) -> None:
        """Share the hold through ``store`` (``SqlBudgets``) from now on."""
        self._store = store
        self._read_at = float("-inf")

    def throttled(self, retry_after: float | None, *, holder: str | None = None) -> float:
        """The provider answered 429 (``Retry-After`` in seconds, None if absent) to ``holder``'s request:
        hold every source of the credential. Returns the end of this hold (unix seconds)."""
        now = self._clock()
        until = now + (retry_after if retry_after is not None and retry_after > 0 else DEFAULT_WAIT_SECONDS)
        with self._lock:
            if until >= self._until:
                self._until, self._holder = until, holder
        if self._store is not None:
            self._store.update(self.credential, now, lambda row: (hold(row, until, now), None))
        return until

    def held_until(self) -> float:
        """The end of the hold as this process last knew it (unix seconds; 0: never held)."""
        with self._lock:
            return self._until

    def holder(self) -> str | None:
        """Whose 429 set the current hold (None: another process's, or none)."""
        with self._lock:
            return self._holder

    def wait_seconds(self) -> float:
        """Seconds before this credential may send a request (0: now). Reads the shared row now and then."""
        now = self._clock()
        store = self._store
        if store is not None and now - self._read_at >= self._refresh:
            self._read_at = now
            row = store.get(self.credential)
            if row is not None:
                self._merge(row.reset_at)
        with self._lock:
            return max(0.0, self._until - now)

    def allow(self, *, now: float, base: float, sources: int, wanted: int, horizon: float) -> Plan:
        """The scheduler's question (``syncd.ops.scheduler.Pacer``): no poll before the hold ends."""
        with self._lock:
            local = self._until

        def planner(row: Budget) -> tuple[Budget, Plan]:
            if local > row.reset_at:
                row = replace(row, reset_at=local, next_at=max(row.next_at, local))
            return plan(row, now=now, base=base, sources=sources, wanted=wanted)

        if self._store is None:
            return planner(Budget.new(self.credential, now))[1]
        row, granted = self._store.update(self.credential, now, planner)
        self._merge(row.reset_at)
        self._read_at = now
        return granted

    def _merge(self, until: float) -> None:
        """A hold read from the shared row: another process's when it ends later than ours."""
        with self._lock:
            if until > self._until + 0.001:
                self._until, self._holder = until, None


class Gate:
    """One request's retry loop under ``budget``, for the cursor ``holder`` (a source's live cursor, or one
    of its backfill windows): ``before`` each attempt, ``after`` each answer.

    ``before`` raises ``RetryableError`` with the wait while the credential is held by a 429 that another
    cursor got (another source, a window of this one, another replica). A cursor's own 429 does not hold
    the cursor itself: its retry policy waits a short Retry-After out, and the engine pauses it for a long
    one (``paused_until`` on its row, on the engine's clock), as before budgets existed."""

    __slots__ = ("budget", "holder", "source")

    def __init__(self, budget: RetryAfterBudget, source: str, window: object | None = None) -> None:
        self.budget, self.source = budget, source
        self.holder = source if window is None else f"{source} {window}"

    def before(self) -> None:
        wait = self.budget.wait_seconds()
        if wait > 0 and self.budget.holder() != self.holder:
            raise RetryableError(self.source, f"the provider rate-limited this credential (429 on another of its "
                                              f"sources, windows or replicas); no request for {wait:.1f}s", wait)

    def after(self, status: int, retry_after: str | None) -> None:
        if status == 429:
            self.budget.throttled(parse_retry_after(retry_after), holder=self.holder)
