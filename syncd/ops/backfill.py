"""Backfills: re-sync a time window [start, end) of a source beside live sync.

Contract (what the engine already guarantees for a ``Target`` with a window, gathered here):

- A window has its own cursor row in ``syncd_sources`` (kind ``backfill``), keyed by source, window and
  workflow (``engine.cursor_key``), so it never moves the live cursor and live ticks keep running.
- Its events go through the same ledger and run table: every (workflow, event) run that is missing for an
  event in the window is created — also for events already in the ledger, e.g. for a workflow added since —
  and an existing run is never repeated. Page transactions of one stream are serialized
  (``store.lock_stream``), so a live tick and a backfill meeting on the same event run it once per workflow.
- A window that reaches its end is recorded ``done``, with the workflows it ran for, and is not re-run;
  once a workflow of its source is registered that it did not run for, running it again re-opens it from
  its start (the new workflow's runs are created, existing runs are not repeated). An interrupted window
  resumes from its cursor (the last committed page) on the next start.

Entry points: ``syncd backfill`` (``run_command``: drive every window to done), ``syncd once`` with
``EVENTS_RANGE_START/END`` (``drive_settings_windows`` after the live tick), and ``syncd run`` (one
scheduler job per window: ``WindowJob``). Progress: a ``rich`` bar on a terminal, a log line every
``LOG_EVERY_PAGES`` pages elsewhere; ``syncd status`` shows each window's progress and state.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING

from opentelemetry import trace

from syncd.contracts import Connector, Page, SkipReason, Window
from syncd.engine import SyncEngine, Target, TickResult
from syncd.errors import ConfigError
from syncd.ops.progress import LogProgress, Progress, RichProgress, label, make_progress
from syncd.settings import Settings, parse_window
from syncd.store.reads import SqlReads
from syncd.workflows import Registry

if TYPE_CHECKING:
    from syncd.ops.app import App

log = logging.getLogger("syncd.backfill")
tracer = trace.get_tracer("syncd")

#: ``drive`` gives up after this many failed syncs in a row; running it again resumes from the cursor.
MAX_FAILURES = 3
#: How often ``drive`` looks again at a lease held by another process (a live replica or a dead one).
LEASE_POLL_SECONDS = 1.0


# ---- which windows -------------------------------------------------------------------------------


def targets_for(connectors: Sequence[Connector], registry: Registry, window: Window, *,
                source: str | None = None, workflow: str | None = None) -> list[Target]:
    """One window target per connector, optionally narrowed to a source and to one workflow.

    ``source`` is a source key (``github:o/r``) or a provider name (``workos``). With ``workflow``, only
    sources that workflow listens to get a window. Raises ``ConfigError`` naming ``--source`` or
    ``--workflow`` when nothing configured matches.
    """
    chosen = list(connectors)
    if source is not None:
        chosen = [c for c in chosen if source in (c.key, provider_of(c.key))]
        if not chosen:
            known = ", ".join(c.key for c in connectors) or "none"
            raise ConfigError("--source", f"no configured source {source!r} (configured: {known})")
    if workflow is not None:
        wf = registry.get(workflow)
        if wf is None:
            known = ", ".join(sorted(w.name for w in registry.all())) or "none"
            raise ConfigError("--workflow", f"unknown workflow {workflow!r} (known: {known})")
        chosen = [c for c in chosen if wf.trigger.provider == provider_of(c.key)
                  and (wf.trigger.streams is None or c.key in wf.trigger.streams)]
        if not chosen:
            matching = f" matching {source!r}" if source else ""
            raise ConfigError("--workflow", f"{workflow!r} listens to {wf.trigger.provider} events, "
                              f"but no such source is configured{matching}")
    return [Target(c, window, workflow) for c in chosen]


def settings_window(settings: Settings) -> Window | None:
    """The window of ``EVENTS_RANGE_START/END`` (already validated by ``Settings``), or None."""
    if settings.range_start is None or settings.range_end is None:
        return None
    return Window(settings.range_start, settings.range_end)


def parse_flags(start: str, end: str, *, now: datetime | None = None) -> Window:
    """``--start``/``--end`` (unix ms or ISO-8601) → a window; ``ConfigError`` names the flag at fault."""
    flags = {"--start": start, "--end": end}
    first, last = parse_window(flags, now=now, start_name="--start", end_name="--end")
    assert first is not None and last is not None  # both flags are required by the parser
    return Window(first, last)


def provider_of(source_key: str) -> str:
    return source_key.split(":", 1)[0]


def retention_warnings(targets: Sequence[Target], now: datetime | None = None) -> list[str]:
    """Warnings from connectors that know their provider's retention (an optional ``retention_warning``
    method: ``(window, now) -> str | None``), one per source."""
    out = []
    for target in targets:
        check: Callable[[Window, datetime | None], str | None] | None = getattr(
            target.connector, "retention_warning", None)
        if check is None or target.window is None:
            continue
        message = check(target.window, now)
        if message:
            out.append(f"backfill {target.key}: {message}")
    return out


def pruned_history(horizons: Mapping[str, datetime], targets: Sequence[Target]) -> tuple[list[Target], list[str]]:
    """The targets whose window is not entirely at or before its stream's retention horizon (the newest pruned
    event's time), and a message for each of the others (their events were pruned and would all be skipped,
    never run again). A window across the horizon is kept, with a warning logged: its events up to the
    horizon are skipped."""
    kept, refused = [], []
    for target in targets:
        limit, window = horizons.get(target.connector.key), target.window
        if limit is None or window is None or window.start > limit:
            kept.append(target)
        elif window.end <= limit:
            refused.append(f"backfill {target.key}: the window ends by {limit.isoformat()}, the retention "
                           f"horizon of {target.connector.key}: that history was pruned (SYNCD_RETENTION_DAYS), "
                           "and events up to the horizon are skipped, never run again; choose a later window")
        else:
            log.warning("backfill %s: events up to %s, the retention horizon of %s, are skipped (that history "
                        "was pruned; SYNCD_RETENTION_DAYS)", target.key, limit.isoformat(), target.connector.key)
            kept.append(target)
    return kept, refused


def unpruned(app: App, targets: Sequence[Target]) -> list[Target]:
    """``pruned_history`` for the windows of ``EVENTS_RANGE_*`` (``syncd once``, ``syncd run``): a window
    entirely before the horizon is left out with a warning, so a setting left in place never stops syncd."""
    kept, refused = pruned_history(app.reads.horizons(), targets)
    for message in refused:
        log.warning("%s (EVENTS_RANGE_START/END); skipped", message)
    return kept


# ---- driving a window ----------------------------------------------------------------------------


@dataclass
class BackfillResult:
    """What driving one window did in this process. ``state``: done, failed or stopped (resumable)."""

    key: str
    state: str = "running"
    pages: int = 0
    events: int = 0
    new_events: int = 0
    runs_ok: int = 0
    runs_failed: int = 0
    syncs: int = 0
    error: str | None = None

    def add(self, tick: TickResult) -> None:
        self.syncs += 1
        self.pages += tick.pages
        self.events += tick.events
        self.new_events += tick.new_events
        self.runs_ok += tick.runs_ok
        self.runs_failed += tick.runs_failed


def window_engine(app: App, on_page: Callable[[Target, Page], None] | None) -> SyncEngine:
    """An engine like the app's (same database, registry, clock, replica id, stop event) reporting pages."""
    base = app.engine
    return SyncEngine(base.store, app.registry, clock=base.clock, replica_id=base.replica_id,
                      lease_seconds=base.lease_seconds, max_attempts=base.max_attempts, stop=app.stop,
                      on_page=on_page, integrations=base.integrations, prefetch_pages=base.prefetch_pages,
                      outbound=base.outbound, drain_workers=base.drain_workers)


def stored_fraction(engine: SyncEngine, target: Target) -> tuple[str | None, float]:
    """(state, progress) of the window's cursor row; (None, 0.0) before its first sync. A window finished
    before one of its source's workflows was registered is ("reopen", 0.0): it runs again, for that one."""
    row = SqlReads(engine.db).source(target.key)
    if row is None:
        return None, 0.0
    workflows = engine.window_workflows(target)
    if row.state == "done" and not row.covers(workflows):
        why = ("before syncd recorded a window's workflows" if row.window_workflows is None else
               "without " + ", ".join(sorted(workflows - set(row.window_workflows))))
        log.info("backfill %s was completed %s; running it again (existing runs are not repeated)",
                 label(target), why, extra={"source": target.key})
        return "reopen", 0.0
    return row.state, float(row.progress or 0.0)


def drive(engine: SyncEngine, target: Target, *, progress: Progress | None = None,
          max_failures: int = MAX_FAILURES, wait: Callable[[float], bool] | None = None) -> BackfillResult:
    """Sync ``target`` until its window is done, the engine's stop event is set, or ``max_failures``
    syncs in a row failed. A lease held elsewhere is waited for (it is released or expires); a paused
    source (rate limit) is waited out. Never raises for a provider or database failure."""
    wait = wait or engine.stop.wait
    result = BackfillResult(target.key)
    state, fraction = stored_fraction(engine, target)
    if state == "done":
        result.state = "done"
        log.info("backfill %s was already completed; nothing to do", label(target),
                 extra={"source": target.key})
        return result
    if progress is not None:
        progress.start(target, fraction)
    failures, waiting_logged = 0, False
    while True:
        with tracer.start_as_current_span("syncd.backfill", attributes={"syncd.source": target.key}):
            tick = engine.sync(target)
        result.add(tick)
        delay = _next_delay(engine, target, tick, result, failures)
        if tick.caught_up:
            result.state = "done"
        elif engine.stop.is_set():
            result.state = "stopped"
        elif not tick.ok:
            failures += 1
            result.error = tick.error
            if failures >= max_failures:
                result.state = "failed"
        else:
            failures = 0
        if _skipped(tick, SkipReason.LEASE_HELD) and not waiting_logged:
            log.info("backfill %s: another process holds its lease; waiting for it to finish or expire",
                     label(target), extra={"source": target.key})
            waiting_logged = True
        if result.state != "running" or (delay > 0 and wait(delay)):
            result.state = "stopped" if result.state == "running" else result.state
            break
    if progress is not None:
        progress.finish(target, result)
    return result


def _skipped(tick: TickResult, reason: SkipReason) -> bool:
    return tick.skip is not None and tick.skip.reason is reason


def _next_delay(engine: SyncEngine, target: Target, tick: TickResult, result: BackfillResult,
                failures: int) -> float:
    """Seconds to wait before the next sync of an unfinished window."""
    if _skipped(tick, SkipReason.LEASE_HELD):
        return LEASE_POLL_SECONDS
    if _skipped(tick, SkipReason.PAUSED):
        row = SqlReads(engine.db).source(target.key)
        until = row.paused_until if row is not None else None
        left = (until - engine.clock.now()).total_seconds() if until is not None else 1.0
        return max(0.1, min(left, 60.0))
    if not tick.ok:
        return float(min(2 ** failures, 30))
    return 0.0


# ---- entry points --------------------------------------------------------------------------------


def run_command(settings: Settings, *, start: str, end: str, source: str | None = None,
                workflow: str | None = None, stream: IO[str] | None = None) -> int:
    """``syncd backfill``: drive each matching window to done. 0 all done, 1 failed or interrupted."""
    from syncd.ops.app import App
    from syncd.ops.scheduler import install_signal_handlers
    from syncd.telemetry import setup_telemetry

    window = parse_flags(start, end)
    telemetry = setup_telemetry(settings.telemetry)
    app = App.build(settings)
    try:
        targets, refused = pruned_history(app.reads.horizons(), targets_for(
            app.connectors, app.registry, window, source=source, workflow=workflow))
        if refused:
            raise ConfigError("--end", "; ".join(refused))
        install_signal_handlers(app.stop)
        app.pacers()  # the credentials' budgets (a 429's hold), shared with the replicas through the database
        results = drive_all(app, targets, make_progress(stream))
    finally:
        app.close()
        telemetry.shutdown()
    return report(results, out=sys.stdout)


def drive_all(app: App, targets: Sequence[Target],
              progress: LogProgress | RichProgress) -> list[BackfillResult]:
    """Warn about retention, then drive the windows one after another (each shows its own bar)."""
    for warning in retention_warnings(targets):
        log.warning("%s", warning)
    engine = window_engine(app, progress)
    shown = progress.shown() if isinstance(progress, RichProgress) else contextlib.nullcontext()
    results = []
    with shown:
        for target in targets:
            if app.stop.is_set():
                break
            results.append(drive(engine, target, progress=progress))
    return results


def drive_settings_windows(app: App, stream: IO[str] | None = None) -> list[BackfillResult]:
    """``syncd once`` with ``EVENTS_RANGE_START/END``: drive that window of every source to done."""
    window = settings_window(app.settings)
    if window is None:
        return []
    return drive_all(app, unpruned(app, targets_for(app.connectors, app.registry, window)), make_progress(stream))


def report(results: Sequence[BackfillResult], *, out: IO[str]) -> int:
    """Print one line per window; 0 when every window is done, else 1."""
    for r in results:
        extra = f"; error: {r.error}" if r.error and r.state != "done" else ""
        hint = "; run the same command again to resume" if r.state in ("failed", "stopped") else ""
        print(f"{r.key}: backfill {r.state} — {r.pages} pages, {r.events} events ({r.new_events} new), "
              f"{r.runs_ok} runs ok, {r.runs_failed} failed{extra}{hint}", file=out)
    return 0 if results and all(r.state == "done" for r in results) else 1


class WindowJob:
    """``syncd run``: one scheduler job per window. Each call syncs the window from its cursor (a call
    may cover the whole window); once it is done the job does nothing more, so a finished window costs
    nothing on later intervals or restarts."""

    def __init__(self, engine: SyncEngine, target: Target, progress: LogProgress) -> None:
        self.engine = engine
        self.target = target
        self.progress = progress
        self.key = f"backfill:{target.key}"
        self.done = False
        self._started = False

    def __call__(self) -> None:
        if self.done:
            return
        if not self._started:
            state, fraction = stored_fraction(self.engine, self.target)
            if state == "done":
                self.done = True
                log.info("backfill %s was already completed", label(self.target),
                         extra={"source": self.target.key})
                return
            self.progress.start(self.target, fraction)
            self._started = True
        with tracer.start_as_current_span("syncd.backfill", attributes={"syncd.source": self.target.key}):
            tick = self.engine.sync(self.target)
        if tick.caught_up:
            self.done = True
            result = BackfillResult(self.target.key, state="done")
            result.add(tick)
            self.progress.finish(self.target, result)


def window_jobs(app: App) -> list[WindowJob]:
    """The jobs for ``EVENTS_RANGE_START/END`` in ``syncd run`` (none when unset); warns about retention."""
    window = settings_window(app.settings)
    if window is None:
        return []
    targets = unpruned(app, targets_for(app.connectors, app.registry, window))
    for warning in retention_warnings(targets):
        log.warning("%s", warning)
    progress = LogProgress()
    engine = window_engine(app, progress)
    return [WindowJob(engine, t, progress) for t in targets]


__all__ = [
    "BackfillResult", "LogProgress", "Progress", "RichProgress", "WindowJob", "drive", "drive_all",
    "drive_settings_windows", "make_progress", "parse_flags", "pruned_history", "retention_warnings", "run_command",
    "settings_window", "targets_for", "window_engine", "window_jobs",
]
