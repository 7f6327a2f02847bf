"""The contracts between syncd's parts, in one place: records, enums and the interfaces that plug in.

Records are frozen: ``Event``, ``Page``, ``Window`` pass between connectors, the engine and workflows.
Interfaces are ``Protocol``s whose docstrings state ordering, fencing and what each method raises:
``Connector`` and ``Provider`` (connectors/), ``Clock``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
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
    """

    name: str

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]: ...

    def builtin_workflows(self, registry: Registry) -> None: ...


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


# ---- Reads: what status, health, metrics, backfill progress and the dashboard read -----------------

if TYPE_CHECKING:  # syncd.store's record until it moves into this module (then drop this import)
    from syncd.store import SourceRow


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
