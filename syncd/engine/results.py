"""What a tick did: each page (group) and each round of due runs returns its part; the tick sums them."""

from __future__ import annotations

from dataclasses import dataclass, field

from syncd.contracts import RunRecord, RunStatus, Skip


@dataclass(frozen=True, slots=True)
class RunTally:
    """Outcomes of some runs: succeeded, failed (incl. dead), suspended (durable runs left pending or asleep)."""

    ok: int = 0
    failed: int = 0
    suspended: int = 0
    failed_runs: tuple[tuple[str, str, str], ...] = ()  # (workflow, event id, error)

    @staticmethod
    def of(records: list[RunRecord]) -> RunTally:
        ok = failed = suspended = 0
        failures = []
        for r in records:
            if r.status is RunStatus.QUEUED:
                continue  # handed to the workers: counted when they run it
            if r.status.suspended:
                suspended += 1
            elif r.last_error is None:
                ok += 1
            else:
                failed += 1
                failures.append((r.workflow, r.event_id, r.last_error))
        return RunTally(ok, failed, suspended, tuple(failures))

    def __add__(self, other: RunTally) -> RunTally:
        return RunTally(self.ok + other.ok, self.failed + other.failed, self.suspended + other.suspended,
                        self.failed_runs + other.failed_runs)


@dataclass(frozen=True, slots=True)
class PageResult:
    """One committed group of pages."""

    pages: int
    events: int
    new_events: int
    skipped: int
    lag_seconds: float | None
    runs: RunTally


@dataclass
class TickResult:
    """What one sync of one source did; also what ``syncd_ticks`` records."""

    source: str
    ok: bool = True
    skip: Skip | None = None  # done, paused (with its detail), lease held elsewhere
    pages: int = 0
    events: int = 0
    new_events: int = 0
    runs_ok: int = 0
    runs_failed: int = 0
    runs_suspended: int = 0  # durable runs left pending (mid-steps) or sleeping
    skipped: int = 0
    lag_seconds: float | None = None
    error: str | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    caught_up: bool = False
    failed_runs: list[tuple[str, str, str]] = field(default_factory=list)  # (workflow, event id, error)

    @property
    def skipped_reason(self) -> str | None:
        """Why the tick did nothing, as text (``done``, ``paused until …: why``, ``lease held by another
        replica``); ``skip`` has it typed."""
        return str(self.skip) if self.skip is not None else None

    def add_page(self, page: PageResult) -> None:
        self.pages += page.pages
        self.events += page.events
        self.new_events += page.new_events
        self.skipped += page.skipped
        if page.lag_seconds is not None:
            self.lag_seconds = page.lag_seconds
        self.add_runs(page.runs)

    def add_runs(self, runs: RunTally) -> None:
        self.runs_ok += runs.ok
        self.runs_failed += runs.failed
        self.runs_suspended += runs.suspended
        self.failed_runs.extend(runs.failed_runs)
