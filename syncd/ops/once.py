"""``syncd once``: one tick of every source, the runs it started finished, and an exit code a script can trust.

Exit codes (``OnceReport.exit_code``; the README's CLI section lists them):

- 0: every source ticked and caught up, no run failed, nothing skipped;
- 1: a source's tick failed, a run failed or went dead during it, or a backfill window did not finish;
- 3: nothing failed, but a source was skipped: its lease is held by a live process (another replica, a
  ``syncd run``), or the provider asked to wait (paused). Each skip is also one stable line on stderr,
  ``syncd once: skipped <source>: <reason>``.

The ticks only record events and queue their runs; then the process's worker pool (``SYNCD_WORKERS`` at
a time) executes every run due now — the new ones, durable runs between steps, retries whose time came
during the ``once`` — until none is due, so it does not return in the middle of work it started. Runs
left asleep (``ctx.sleep``) or waiting to go on are reported with the time they are due: the next
``syncd once`` or ``syncd run`` after that time resumes them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING

from syncd.contracts import SkipReason
from syncd.engine import TickResult
from syncd.engine.results import RunTally

if TYPE_CHECKING:
    from syncd.ops.app import App
    from syncd.ops.backfill import BackfillResult

EXIT_OK, EXIT_FAILED, EXIT_SKIPPED = 0, 1, 3

@dataclass
class SourceOutcome:
    """What the ``once`` did for one source: its first tick plus the resumes of its due runs."""

    tick: TickResult
    runs: RunTally = field(default_factory=RunTally)  # what the workers ran of its stream
    waiting: int = 0  # runs left pending or asleep
    next_due: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.tick.ok

    @property
    def runs_ok(self) -> int:
        return self.tick.runs_ok + self.runs.ok

    @property
    def runs_failed(self) -> int:
        return self.tick.runs_failed + self.runs.failed

    @property
    def error(self) -> str | None:
        return self.tick.error

    def line(self) -> str:
        t = self.tick
        state = "ok" if self.ok else "FAILED"
        extra = f" ({t.skipped_reason})" if t.skipped_reason else ""
        text = (f"{t.source}: {state}{extra} — {t.pages} pages, {t.events} events ({t.new_events} new), "
                f"{self.runs_ok} runs ok, {self.runs_failed} failed")
        if self.waiting:
            when = f" until {self.next_due.isoformat(timespec='seconds')}" if self.next_due else ""
            text += f"; {self.waiting} runs waiting{when} (the next once or run resumes them)"
        return text + (f"; error: {self.error}" if self.error else "")


@dataclass
class OnceReport:
    sources: list[SourceOutcome]
    windows: Sequence[BackfillResult] = ()
    stopped: bool = False  # SIGTERM/SIGINT: the page in hand was committed and the leases released

    @property
    def skipped(self) -> list[SourceOutcome]:
        return [s for s in self.sources if s.tick.skip is not None and s.tick.skip.reason is not SkipReason.DONE]

    @property
    def exit_code(self) -> int:
        if any(not s.ok or s.runs_failed for s in self.sources):
            return EXIT_FAILED
        if self.windows and any(w.state != "done" for w in self.windows):
            return EXIT_FAILED
        return EXIT_SKIPPED if self.skipped else EXIT_OK

    def print(self, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        """Write the report: a line per source to ``out``, skips and a stop to ``err`` (default: the process's
        streams as they are now, not as they were at import, so a redirected or captured stream gets it)."""
        out, err = out or sys.stdout, err or sys.stderr

        for outcome in self.sources:
            print(outcome.line(), file=out)
        if self.windows:
            from syncd.ops.backfill import report as backfill_report

            backfill_report(self.windows, out=out)
        for outcome in self.skipped:
            print(f"syncd once: skipped {outcome.tick.source}: {outcome.tick.skipped_reason}", file=err)
        if self.stopped:
            print("syncd once: stopped by a signal; leases released, the next run resumes from the cursors",
                  file=err)


def run_once(app: App) -> OnceReport:
    """Tick every source, run the runs due now with the worker pool, then drive ``EVENTS_RANGE_*`` windows
    (whose ticks run their own runs)."""
    app.pacers()  # the providers' credential budgets, shared with the replicas through the database
    pool = app.workers()
    app.engine.workers = pool  # the ticks only record and queue; the pool then runs them, many at once
    try:
        outcomes = [SourceOutcome(app.tick(c)) for c in app.connectors]
        drained = pool.drain()
    finally:
        app.engine.workers = None
    for connector, outcome in zip(app.connectors, outcomes, strict=True):
        outcome.runs = drained.by_stream.get(connector.key, RunTally())
    windows = settings_windows(app)
    for connector, outcome in zip(app.connectors, outcomes, strict=True):
        outcome.waiting, outcome.next_due = app.engine.store.waiting_runs(connector.key)
    return OnceReport(outcomes, windows, stopped=app.stop.is_set())


def settings_windows(app: App) -> Sequence[BackfillResult]:
    """``EVENTS_RANGE_START/END``: that window of every source, driven to done. Without them the backfill
    module (and rich's progress bars, which it imports: about 30 ms of CPU) is not imported at all."""
    if app.settings.range_start is None or app.settings.range_end is None:
        return ()
    from syncd.ops.backfill import drive_settings_windows

    return drive_settings_windows(app)
