"""The store's records and enums: what the engine and the store pass each other, typed."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from syncd.contracts.providers import Event, Window

if TYPE_CHECKING:

    pass


class RunStatus(enum.StrEnum):
    """A run's state, as ``syncd_runs.status`` stores it."""

    QUEUED = "queued"  # created by a page, not started yet: due at ``next_attempt_at`` (attempts 0)
    RUNNING = "running"  # claimed by a worker (``claim_owner``, fenced on ``claim_token``)
    PENDING = "pending"  # durable, mid-steps, or deferred by an integration: due at ``next_attempt_at``
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retried at ``next_attempt_at``
    DEAD = "dead"  # out of attempts; ``syncd replay`` runs it again
    SLEEPING = "sleeping"  # ``ctx.sleep``: due at its wake time

    @property
    def suspended(self) -> bool:
        """Left to go on later (mid-steps or asleep): neither a success nor a failure yet."""
        return self in (RunStatus.PENDING, RunStatus.SLEEPING)

    @property
    def open(self) -> bool:
        """Still to be done (not succeeded, not dead): what holds back later runs of the same key."""
        return self not in (RunStatus.SUCCEEDED, RunStatus.DEAD)


#: The statuses a worker claims when due (queued: first attempt; failed: retry; pending: next step;
#: sleeping: woken). A ``running`` run is claimed again only when its claim is dead (owner gone, expired).
DUE_STATUSES = (RunStatus.QUEUED, RunStatus.FAILED, RunStatus.PENDING, RunStatus.SLEEPING)
#: Not finished: due, asleep or in flight.
OPEN_STATUSES = (*DUE_STATUSES, RunStatus.RUNNING)


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
    #: A backfill window: the workflows its events go to now. A window completed for fewer is re-opened.
    workflows: frozenset[str] = frozenset()


#: How long a finished backfill window stays in /metrics and the default `syncd status` view.
FINISHED_WINDOWS_SHOWN = timedelta(days=1)


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
    updated_at: datetime | None = None  # its last claim, page commit, failure or release (health reads it)
    window_workflows: list[str] | None = None  # a finished window: the workflows it ran for (None: unknown)

    def covers(self, workflows: frozenset[str]) -> bool:
        """A finished window that ran for every one of ``workflows`` (one finished before syncd recorded
        them is assumed not to, so it runs again: nothing is repeated, missing runs are created)."""
        return self.state == "done" and self.window_workflows is not None and workflows <= set(self.window_workflows)

    def retired(self, now: datetime) -> bool:
        """A backfill window finished more than ``FINISHED_WINDOWS_SHOWN`` ago: it leaves ``/metrics`` and the
        default ``syncd status`` view (``--all`` and ``--source KEY`` still show it; its row stays)."""
        return (self.kind == "backfill" and self.state == "done" and self.updated_at is not None
                and now - self.updated_at > FINISHED_WINDOWS_SHOWN)

    def skip(self, now: datetime, workflows: frozenset[str] = frozenset()) -> Skip | None:
        """Why a tick at ``now`` must not claim this cursor (None: it may): done for all of ``workflows``
        (a live cursor is never done), or paused."""
        if self.state == "done" and (self.kind != "backfill" or self.covers(workflows)):
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
    #: The workflow's ``key=`` value (runs with one key run one at a time, in ``seq`` order), set on insert.
    run_key: str | None = None
    #: Insertion order of queued runs (event order within a stream), set on insert.
    seq: int | None = None

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
        """The attempt number of the next execution: a queued run starts its first, a failed one tries again
        and so does one whose worker died in it (a crash counts, so a run that kills its worker every time
        ends dead instead of looping); a suspended one goes on."""
        return self.attempts + 1 if self.status in _NEW_ATTEMPT else self.attempts


_NEW_ATTEMPT = frozenset((RunStatus.QUEUED, RunStatus.FAILED, RunStatus.RUNNING))


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run a worker claimed: ``due`` as it was read, the claim's fencing ``token`` and the time the run
    became due (its wait in the queue is the claim time minus that)."""

    due: DueRun
    token: int
    due_at: datetime | None
    run_key: str | None = None
    #: The event trace its attempts join (``syncd.telemetry_spans.continue_trace``); None: tracing was off.
    trace_id: str | None = None

    @property
    def key(self) -> RunKey:
        return RunKey(self.due.workflow, self.due.event.stream, self.due.event.id)


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


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``PageTxn.record_events`` did with a batch: the ids ``new`` to the ledger, and the ids it
    ``quarantined`` instead of storing (values the database cannot hold; see ``PageTxn.record_events``), and
    the ids ``expired``: older than the stream's retention horizon, skipped (their history was pruned)."""

    new: set[str]
    quarantined: frozenset[str] = frozenset()
    expired: frozenset[str] = frozenset()
