"""The contracts between syncd's parts, in one place: records, enums and the interfaces that plug in.

Records are frozen: ``Event``, ``Page``, ``Window`` pass between connectors, the engine and workflows;
``SourceRow``, ``RunRecord``, ``DueRun``, ``TickRecord`` and ``Skip`` between the engine and the store.
Interfaces are ``Protocol``s whose docstrings state ordering, fencing and what each method raises:
``Connector`` and ``Provider`` (connectors/), ``Clock``, and ``Store`` with its handles ``Lease``,
``PageTxn`` and ``RunTxn`` (syncd/store/ holds the one implementation, ``SqlStore``).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from syncd.workflows import Registry


@dataclass(frozen=True, slots=True)
class Event:
    """One provider event.

    ``stream`` is the source key it came from (``workos``, ``github:owner/repo``); ``(stream, id)`` is unique.
    ``data`` is the provider's object snapshot. ``action`` is an optional sub-type (GitHub: opened/edited/closed…).
    """

    stream: str
    id: str
    type: str
    occurred_at: datetime
    data: Mapping[str, Any]
    action: str | None = None

    @property
    def provider(self) -> str:
        return self.stream.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Page:
    """One page fetched from a provider.

    ``next_cursor`` is the opaque cursor to store once this page is committed (None: unchanged).
    ``has_more`` says another page is available right now. ``skipped`` counts malformed events that
    were dropped with an error logged. ``meta`` carries provider state worth showing in ``syncd status``
    (rate-limit remaining, reset time…); it is stored with the cursor.
    """

    events: tuple[Event, ...]
    next_cursor: str | None
    has_more: bool
    skipped: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    """A backfill window [start, end) over event time, both UTC-aware."""

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@runtime_checkable
class Connector(Protocol):
    """Fetches one page of events for one source. The engine owns the loop, the cursor and the store.

    Contract:
    - ``key`` is the source key and the ``stream`` of every event it returns (``workos``, ``github:o/r``).
    - ``fetch_page(cursor, window)`` returns the events strictly after ``cursor`` (None: from the start,
      or from ``window.start``), oldest first, at most one provider page. It never sleeps and never
      retries on its own beyond the HTTP retry policy; it raises ``RetryableError`` (with ``retry_after``
      when the provider said), ``AuthError`` or ``FatalError``. Malformed single events are dropped and
      counted in ``Page.skipped``, never raised.
    - With a ``window`` it returns only events whose time lies in [start, end), and ``has_more`` is False
      once the window is exhausted.
    - Replaying from an older cursor returns the same events again: dedupe is the engine's job.
    - ``Page.next_cursor`` must move whenever ``has_more`` is True (the engine stops with
      ``CursorStuckError`` otherwise).
    """

    key: str

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page: ...

    def close(self) -> None: ...


class Provider(Protocol):
    """A provider package (``connectors.workos``…) as the app sees it.

    ``sources`` builds one connector per configured source from the environment; it returns [] when the
    provider has no credentials/config, and raises ``ConfigError`` naming the variable when a value is bad.
    ``builtin_workflows`` registers the provider's built-in mirror workflows into ``registry``.
    A provider is found through the ``syncd.connectors`` entry-point group (``syncd.plugins``).

    Optional member, looked up with ``getattr``: ``listen(connectors, wake) -> list[Listener]``, for sources
    that can say when new data is there (PostgreSQL tables' NOTIFY): it starts listeners for those of
    ``connectors`` that are its own, each calling ``wake(source_key)`` to tick that source now. The daemon
    stops them on shutdown. Polling stays the guarantee; a listener only shortens the wait.
    """

    name: str

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]: ...

    def builtin_workflows(self, registry: Registry) -> None: ...


class Listener(Protocol):
    """A background listener started by a provider's ``listen``; ``stop`` ends it within ``timeout``."""

    def stop(self, timeout: float = ...) -> None: ...


class Clock(Protocol):
    """Where syncd reads the time; tests pass a fake one. Always UTC-aware."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A settable clock for tests and simulations of long waits (sleeps, lease expiry, backoff)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        self._now = moment


# ---- the store's records --------------------------------------------------------------------------


class RunStatus(enum.StrEnum):
    """A run's state, as ``syncd_runs.status`` stores it."""

    PENDING = "pending"  # durable, mid-steps: due again at once
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retried at ``next_attempt_at``
    DEAD = "dead"  # out of attempts; ``syncd replay`` runs it again
    SLEEPING = "sleeping"  # ``ctx.sleep``: due at its wake time

    @property
    def suspended(self) -> bool:
        """Left to go on later (mid-steps or asleep): neither a success nor a failure yet."""
        return self in (RunStatus.PENDING, RunStatus.SLEEPING)


#: The statuses a tick resumes when due (failed: retry; pending: next step; sleeping: woken).
DUE_STATUSES = (RunStatus.FAILED, RunStatus.PENDING, RunStatus.SLEEPING)


class SkipReason(enum.StrEnum):
    """Why a tick did nothing. The values are what ``TickResult.skipped_reason`` shows (a pause adds its
    detail: ``paused until …: why``)."""

    DONE = "done"  # a backfill window already covered
    PAUSED = "paused"  # the provider asked to wait (Retry-After), until ``paused_until``
    LEASE_HELD = "lease held by another replica"


@dataclass(frozen=True, slots=True)
class Skip:
    """A claim that was refused: the reason, and for a pause its detail (``until <time>: <why>``)."""

    reason: SkipReason
    detail: str | None = None

    def __str__(self) -> str:
        return f"{self.reason.value} {self.detail}" if self.detail else self.reason.value


@dataclass(frozen=True, slots=True)
class CursorSpec:
    """Which cursor a claim is for: its key, the connector it belongs to and, for a backfill, its window."""

    key: str
    source: str
    window: Window | None = None
    workflow: str | None = None  # a backfill restricted to one workflow


@dataclass(frozen=True)
class SourceRow:
    """One row of ``syncd_sources``: a cursor (live source or backfill window) and its lease."""

    key: str
    source: str
    kind: str
    state: str
    cursor: str | None
    meta: dict[str, Any] | None
    window_start: datetime | None
    window_end: datetime | None
    window_workflow: str | None
    progress: float | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_token: int
    paused_until: datetime | None
    pause_reason: str | None
    events_seen: int
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    def skip(self, now: datetime) -> Skip | None:
        """Why a tick at ``now`` must not claim this cursor (None: it may): done, or paused."""
        if self.state == "done":
            return Skip(SkipReason.DONE)
        if self.paused_until is not None and self.paused_until > now:
            return Skip(SkipReason.PAUSED, f"until {self.paused_until.isoformat()}: {self.pause_reason}")
        return None


@dataclass(frozen=True, slots=True)
class RunKey:
    """A run's identity (and its idempotency key's): one workflow on one event of one stream."""

    workflow: str
    stream: str
    event_id: str

    def idempotency_key(self, step: str) -> str:
        raw = f"{self.workflow}\x00{self.stream}\x00{self.event_id}\x00{step}"
        return hashlib.sha256(raw.encode()).hexdigest()[:40]


class RunRecord(NamedTuple):
    """A run's state after an attempt: the row ``syncd_runs`` keeps for ``(workflow, stream, event_id)``.

    Immutable like the other records, but a ``NamedTuple``: one is built for every run on the ingest path,
    at a fraction of a frozen dataclass's cost.
    """

    workflow: str
    stream: str
    event_id: str
    workflow_version: str | None
    status: RunStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    trace_id: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None

    @property
    def key(self) -> RunKey:
        return RunKey(self.workflow, self.stream, self.event_id)


@dataclass(frozen=True, slots=True)
class DueRun:
    """A run due again (failed, pending or sleeping), as read, with its event from the ledger."""

    workflow: str
    event: Event
    status: RunStatus
    attempts: int

    @property
    def next_attempt(self) -> int:
        """The attempt number of the next execution: a failed run tries again, a suspended one goes on."""
        return self.attempts + 1 if self.status is RunStatus.FAILED else self.attempts


@dataclass(frozen=True, slots=True)
class TickRecord:
    """One row of ``syncd_ticks``: what a tick of one cursor did."""

    source: str
    replica: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    pages: int
    events: int
    new_events: int
    runs_ok: int
    runs_failed: int
    skipped: int
    lag_seconds: float | None
    error: str | None


# ---- the store --------------------------------------------------------------------------------------


class RunTxn(Protocol):
    """One open transaction that workflow runs execute in; it commits when its context manager exits.

    ``conn`` is the connection the runs' SAVEPOINTs and ``ctx.db`` sessions use: whatever a workflow
    writes through it commits or rolls back with the transaction.
    """

    conn: Connection

    def step_results(self, key: RunKey) -> dict[str, Any]:
        """The stored results of ``key``'s completed steps, by step name (empty if none)."""
        ...

    def store_steps(self, key: RunKey, results: Mapping[str, Any], now: datetime) -> None:
        """Store completed steps' results; a step already stored keeps its first result."""
        ...

    def save_run(self, record: RunRecord) -> None:
        """Overwrite the stored state of ``record``'s run (which exists) with ``record``."""
        ...


class PageTxn(RunTxn, Protocol):
    """The transaction of one page (or a group of pages) of one lease's cursor.

    Order within it: ``record_events`` → ``existing_runs`` → the workflows' writes → ``write_runs`` /
    ``write_batch_runs`` → ``advance`` last. Nothing is visible to others before the context manager
    exits; an exception rolls everything back, cursor included (no event lost, none applied twice).
    """

    def record_events(self, events: Sequence[Event], now: datetime) -> set[str]:
        """Add ``events`` (one stream, ids unique) to the ledger; return the ids that were not in it."""
        ...

    def existing_runs(self, workflows: Iterable[str], event_ids: Iterable[str]) -> set[tuple[str, str]]:
        """The (workflow, event id) pairs among these that already have a run on this stream."""
        ...

    def write_runs(self, records: Sequence[RunRecord]) -> None:
        """Insert these runs; a run that exists already is left as it is."""
        ...

    def write_batch_runs(self, template: RunRecord, event_ids: Sequence[str]) -> None:
        """``write_runs`` of one run per id of ``event_ids``: ``template`` with that ``event_id``."""
        ...

    def advance(self, cursor: str | None, *, meta: Mapping[str, Any] | None, new_events: int,
                progress: float | None = None) -> None:
        """Move the cursor to ``cursor`` (None: unchanged), store ``meta``, count ``new_events``, renew the
        lease. The last statement of the page. Raises ``LeaseLostError`` if another owner claimed the cursor
        since (fenced out on the token): the transaction then rolls back and commits nothing."""
        ...


class Lease(Protocol):
    """A claimed cursor: its ``key``, fencing ``token``, ``owner`` and the ``cursor`` read under the lease.

    Every write made through it is fenced on ``token``: once another owner has claimed the cursor (after
    this lease expired), ``PageTxn.advance`` and a run transaction raise ``LeaseLostError`` and commit
    nothing. The handle carries owner, lease length and clock, so no call passes them again.
    """

    key: str
    token: int
    owner: str
    cursor: str | None
    lease_seconds: float
    clock: Clock

    def renew(self) -> bool:
        """Push the expiry to now + ``lease_seconds`` if the lease is still ours; False if taken over."""
        ...

    def release(self) -> None:
        """Free the cursor for any owner at once. Raises what the database raises (it expires anyway)."""
        ...

    def page(self, stream: str) -> AbstractContextManager[PageTxn]:
        """A page transaction on the cursor, which creates runs for ``stream``'s events.

        Transactions that create runs for one stream are serialised (a backfill window and the live cursor
        meeting on an event run it once); on PostgreSQL an idle transaction is ended by the server after
        two lease lengths, so a paused holder cannot keep row locks a takeover would wait on.
        """
        ...

    def run(self, due: DueRun) -> AbstractContextManager[RunTxn | None]:
        """A transaction for one more attempt of ``due``, or None if it is no longer due as read (another
        cursor of the stream ran it). On exit the lease is renewed, fenced: ``LeaseLostError`` if lost."""
        ...

    def mark_done(self) -> None:
        """Mark a backfill window's cursor done (progress 1.0): later claims skip it."""
        ...


class Store(Protocol):
    """syncd's state: cursors and their leases, the ledger, runs and ticks.

    ``db`` is the SQLAlchemy engine of the database, which workflows' own tables share. Every method (and
    every method of the handles it gives out) raises the database's own errors when it cannot reach it;
    none retries: the next tick does.
    """

    db: Engine

    @property
    def concurrent_writers(self) -> bool:
        """True if write transactions run concurrently (PostgreSQL); False if one at a time holds the whole
        database (SQLite), so a lease cannot be taken mid-page and a writer should leave gaps for others."""
        ...

    def claim(self, spec: CursorSpec, *, owner: str, lease_seconds: float, clock: Clock) -> Lease | Skip:
        """Create the cursor's row if new, then take its lease unless the row says to skip it.

        Returns ``Skip(DONE)`` or ``Skip(PAUSED, detail)`` without claiming, ``Skip(LEASE_HELD)`` if another
        live lease holds it (even the same owner's: the same replica id on two processes must not share
        it), else a ``Lease`` whose token is greater than every earlier token of the cursor. An expired
        lease is taken over; on PostgreSQL the claim waits for a page commit of the old holder in flight.
        """
        ...

    def source(self, key: str) -> SourceRow | None:
        """The cursor's row, or None if never synced."""
        ...

    def due_runs(self, stream: str, now: datetime, limit: int = 200) -> list[DueRun]:
        """Runs of ``stream`` due at ``now`` (failed, pending, sleeping), by due time then event id."""
        ...

    def record_failure(self, key: str, now: datetime, error: str, *, pause_until: datetime | None = None,
                       pause_reason: str | None = None) -> None:
        """Store a tick's error on the cursor, and the pause the provider asked for, if any."""
        ...

    def record_tick(self, tick: TickRecord, *, succeeded: bool) -> None:
        """Append ``tick`` to the history; ``succeeded`` also marks the cursor's success and ends its pause."""
        ...

    def dead_runs(self, *, workflow: str | None = None, source: str | None = None,
                  event_id: str | None = None) -> list[RunKey]:
        """Keys of the dead runs picked (each field given narrows the choice; ``source`` is a stream key or
        a provider name, for all its streams), in event order."""
        ...

    def dead_letters(self, keys: Sequence[RunKey]) -> AbstractContextManager[
            tuple[RunTxn, dict[RunKey, tuple[int, Event | None]]]]:
        """A transaction holding those of ``keys`` still dead, each with its attempts and event (None if gone
        from the ledger), locked until it ends, so two replays never run one dead letter twice; runs no
        longer dead, or locked by another replay, are left out."""
        ...


# ---- Reads: what status, health, metrics, backfill progress and the dashboard read -----------------

@dataclass(frozen=True, slots=True)
class TickStats:
    """Totals of one cursor's recorded ticks (``syncd_ticks``), over the history kept."""

    ticks: int
    ok: int
    pages: int
    runs_ok: int
    runs_failed: int

    @property
    def failed(self) -> int:
        return self.ticks - self.ok


@dataclass(frozen=True, slots=True)
class TickRow:
    """One recorded tick of a cursor: when it ran, whether it succeeded, and how far behind it was."""

    started_at: datetime
    finished_at: datetime
    ok: bool
    error: str | None
    lag_seconds: float | None


@dataclass(frozen=True, slots=True)
class FailedRun:
    """A workflow run that failed (to be retried at ``next_attempt_at``) or is dead (dead-lettered).
    ``event_type`` is None when the event has left the ledger."""

    workflow: str
    stream: str
    event_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    error: str | None
    trace_id: str | None
    event_type: str | None


class Reads(Protocol):
    """Read-only answers about syncd's own state (cursors, ledger, runs, ticks) for ``syncd status``, the
    health rule and ``/metrics``, backfill progress, the demo's summary and the dashboard.

    Contract:
    - Reads never write and never wait for a writer: on SQLite they run outside the write lock, so
      they answer at once in the middle of a catch-up. Each call sees committed data only.
    - Each call is its own read, unless made on the ``Reads`` that :meth:`snapshot` yields: those share
      one connection and one transaction (on SQLite one consistent snapshot).
    - Records are frozen and typed; lists are in the order each method states.
    - A database that cannot be read raises ``sqlalchemy.exc.SQLAlchemyError``; nothing else is raised.
    """

    def snapshot(self) -> AbstractContextManager[Reads]:
        """A ``Reads`` whose calls share one read transaction, for a report made of several reads."""
        ...

    def source(self, key: str) -> SourceRow | None:
        """The cursor row ``key`` (a live source or a backfill window), or None before its first sync."""
        ...

    def sources(self, keys: Iterable[str] | None = None) -> list[SourceRow]:
        """Every cursor row (only ``keys`` when given): live sources first, then by key."""
        ...

    def run_counts(self, statuses: Iterable[str] | None = None) -> dict[tuple[str, str], int]:
        """Number of runs per (stream, status), only ``statuses`` when given (cheap for failed, dead and
        sleeping: an index covers them). Pairs without runs are absent."""
        ...

    def recent_failures(self, limit: int = 20) -> list[FailedRun]:
        """Up to ``limit`` failed and dead runs: failed before dead, each newest finished first."""
        ...

    def event_count(self) -> int:
        """Events in the ledger."""
        ...

    def event_counts_by_type(self) -> list[tuple[str, int]]:
        """(event type, events in the ledger), most frequent first."""
        ...

    def tick_stats(self) -> dict[str, TickStats]:
        """Totals of the recorded ticks per cursor key; cursors without a recorded tick are absent."""
        ...

    def last_tick(self, key: str) -> TickRow | None:
        """The cursor's tick that started last (of equal starts, the one recorded last), or None."""
        ...
