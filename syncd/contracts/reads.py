"""``Reads``: what status, health, metrics, backfill progress and the dashboard read of syncd's tables."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from syncd.contracts.records import SourceRow

if TYPE_CHECKING:

    pass


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
class QueueStats:
    """The run queue at one moment: runs due now and not yet claimed (``depth``), the time the one waiting
    longest fell due, and the runs in flight per workflow (claimed by a worker)."""

    depth: int
    oldest_due_at: datetime | None
    in_flight: dict[str, int]
    later: int  # queued, pending, sleeping or failed runs due later

    def oldest_age(self, now: datetime) -> float:
        """Seconds the oldest due run has waited (0 when none is waiting)."""
        return max(0.0, (now - self.oldest_due_at).total_seconds()) if self.oldest_due_at else 0.0


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


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed or dead runs of one workflow that share one error: how many, and the newest as an example."""

    workflow: str
    status: str
    error: str | None
    runs: int
    example: FailedRun


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """A quarantined event (``syncd_quarantine``): its stream, its id (its safe printable form; None when
    it had no usable id), why, when it happened (if known) and when syncd saw it. ``raw`` is the safe
    form of what the provider sent (printable ASCII, bounded)."""

    stream: str
    event_id: str | None
    reason: str
    raw: str
    occurred_at: datetime | None
    first_seen_at: datetime
    last_seen_at: datetime
    times_seen: int


@dataclass(frozen=True, slots=True)
class StreamRetention:
    """What retention keeps of one stream: its horizon (the newest pruned event's time; None: nothing pruned
    yet), its events in the ledger and the oldest one's time."""

    stream: str
    horizon: datetime | None
    events: int
    oldest: datetime | None


@dataclass(frozen=True, slots=True)
class RetentionState:
    """What retention keeps (``syncd status``): per stream, the size of syncd's data (SQLite: the file;
    ``free_bytes`` of it unused pages), whether freed space goes back to the file system, and the prunes'
    schedule (``last_prune`` holds the last one's counts)."""

    streams: tuple[StreamRetention, ...]
    used_bytes: int
    free_bytes: int
    returns_space: bool
    last_prune_at: datetime | None
    next_prune_at: datetime | None
    last_prune: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RunRow:
    """One workflow run, as the dashboard lists it. ``event_type`` is None when the event has left the ledger.
    ``claim_owner``: the worker that claimed it last (running: the one running it, until ``claimed_until``)."""

    workflow: str
    stream: str
    event_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    error: str | None
    trace_id: str | None
    started_at: datetime
    finished_at: datetime | None
    event_type: str | None
    claim_owner: str | None = None
    claimed_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class StepRow:
    """A durable step's stored result (``syncd_steps``) in one run."""

    workflow: str
    step: str
    result: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EventHistory:
    """One event of the ledger with its runs (by workflow) and their stored steps (by workflow, then step)."""

    stream: str
    event_id: str
    type: str
    occurred_at: datetime
    payload: Any
    runs: tuple[RunRow, ...]
    steps: tuple[StepRow, ...]


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

    def run_counts(self, statuses: Iterable[str] | None = None, *,
                   workflow: str | None = None) -> dict[tuple[str, str], int]:
        """Number of runs per (stream, status), only ``statuses`` (and of ``workflow``) when given (cheap for
        failed, dead and sleeping: an index covers them). Pairs without runs are absent."""
        ...

    def failure_groups(self, limit: int = 20, *, workflow: str | None = None,
                       streams: Iterable[str] | None = None, status: str | None = None) -> list[FailureGroup]:
        """Failed and dead runs grouped by (workflow, status, error), largest group first, at most ``limit``
        groups; each with its newest run. ``workflow``, ``streams`` and ``status`` (failed or dead) narrow
        the runs counted."""
        ...

    def recent_failures(self, limit: int = 20) -> list[FailedRun]:
        """Up to ``limit`` failed and dead runs: failed before dead, each newest finished first."""
        ...

    def event_count(self) -> int:
        """Events in the ledger."""
        ...

    def queue(self, now: datetime) -> QueueStats:
        """The run queue at ``now`` (what ``syncd status``, ``/metrics`` and the dashboard show of it)."""
        ...

    def quarantined(self, limit: int = 20, *, streams: Iterable[str] | None = None) -> tuple[int, list[QuarantineRow]]:
        """How many events are quarantined (of ``streams`` when given), and up to ``limit`` of them, the
        most recently seen first (then by stream and event time)."""
        ...

    def event_counts_by_type(self) -> list[tuple[str, int]]:
        """(event type, events in the ledger), most frequent first."""
        ...

    def tick_stats(self) -> dict[str, TickStats]:
        """Totals of the recorded ticks per cursor key; cursors without a recorded tick are absent."""
        ...

    def horizons(self) -> dict[str, datetime]:
        """Per stream, the time up to which its history was pruned (streams never pruned are absent)."""
        ...

    def retention(self) -> RetentionState:
        """What retention keeps: streams in name order (those with events or a horizon)."""
        ...

    def last_tick(self, key: str, *, succeeded: bool = False) -> TickRow | None:
        """The cursor's tick that started last (of equal starts, the one recorded last), or None.
        ``succeeded``: the last of its successful ticks."""
        ...

    def runs(self, *, statuses: Iterable[str] | None = None, workflow: str | None = None,
             streams: Iterable[str] | None = None, limit: int = 50, offset: int = 0) -> list[RunRow]:
        """A page of runs (only of ``statuses``, ``workflow`` and ``streams`` when given), by (workflow,
        stream, event id)."""
        ...

    def workflow_run_counts(self, statuses: Iterable[str]) -> dict[tuple[str, str, str], int]:
        """Number of runs per (workflow, stream, status) among ``statuses``, found by the status index (cheap
        for the open statuses and dead; not for succeeded). Triples without runs are absent."""
        ...

    def event_history(self, needle: str, limit: int = 100) -> list[EventHistory]:
        """Every event whose id is ``needle`` or whose object id is ``needle`` (``syncd.store.objects``: the
        user or customer it concerns, else the issue number, else the object's own id, else the row key). At
        most ``limit`` events, oldest first, each with its runs and their steps. Found by index (never a scan
        of the ledger): the cost does not grow with the ledger."""
        ...
