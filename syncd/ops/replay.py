"""``syncd replay``: re-run dead-lettered workflow runs from the payload kept in the ledger.

A run is ``dead`` once its workflow failed on every allowed attempt. After the workflow is fixed (or the
data it needed arrived), replay runs it again on the event exactly as it was received — no provider is
asked, and no cursor moves. Contract:

- Only ``dead`` runs are picked; ``failed`` runs are still being retried by the engine on its own.
- Runs are replayed in event order, in batches; each batch is one transaction, each run a SAVEPOINT in
  it (like a page): a replay that fails again rolls back its own writes only and stays ``dead`` with
  ``attempts`` + 1 and the new error; one that succeeds is ``succeeded``.
- On PostgreSQL the batch's run rows are locked (``FOR UPDATE SKIP LOCKED``), so two replays started at
  once never run the same dead letter twice; SQLite's single writer gives the same.
- A run whose workflow is no longer registered, or whose event is gone from the ledger, is left as it is
  and reported as not replayed.
- A replay joins its event's trace (the one stored on the run, which keeps it): an ``event.replay`` span
  under the event's ``event.process`` root, linked to this command's ``syncd.replay`` span, holds the
  replayed ``workflow.run``, and the replay's log line carries the event's trace id.

A ``failed`` run is not replayed here: it is still the queue's, waiting for its next attempt. ``retry_now``
brings that attempt forward instead (the dashboard's Replay button on a failed run): the run is due at once and
the next worker to claim it runs it, fenced like any run — never two executions of one attempt, and nothing run
outside the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace

from syncd import telemetry_spans
from syncd.contracts import Event, RunKey, RunStatus, RunTxn
from syncd.engine import SyncEngine
from syncd.engine.tracing import attempt_context

log = logging.getLogger("syncd.replay")
tracer = trace.get_tracer("syncd")

BATCH_SIZE = 100


@dataclass(frozen=True)
class Selection:
    """Which dead runs to replay; every field given narrows the choice (all None: every dead run).

    ``source`` is a stream key (``workos``, ``github:o/r``) or a provider name (``github``: all its streams).
    """

    workflow: str | None = None
    source: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class ReplayedRun:
    """The outcome of one dead run's replay. ``status`` is ``succeeded``, ``dead`` (it failed again) or
    ``skipped`` (not run: ``error`` says why)."""

    workflow: str
    stream: str
    event_id: str
    status: str
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class ReplayReport:
    runs: tuple[ReplayedRun, ...]

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.runs if r.status == RunStatus.SUCCEEDED)

    @property
    def still_failing(self) -> tuple[ReplayedRun, ...]:
        """Runs that failed again or could not be replayed (a durable run now sleeping is not failing)."""
        return tuple(r for r in self.runs if r.status in (RunStatus.DEAD, RunStatus.FAILED, "skipped"))

    @property
    def ok(self) -> bool:
        return not self.still_failing


def replay_dead(engine: SyncEngine, selection: Selection = Selection(), *,
                batch_size: int = BATCH_SIZE) -> ReplayReport:
    """Replay the dead runs ``selection`` picks, one transaction per batch. Never raises for a workflow."""
    outcomes: list[ReplayedRun] = []
    with tracer.start_as_current_span("syncd.replay", attributes={
        k: v for k, v in (("syncd.workflow", selection.workflow), ("syncd.source", selection.source),
                          ("messaging.message.id", selection.event_id)) if v is not None
    }) as span:
        keys = dead_run_keys(engine, selection)
        command = span.get_span_context()
        links = [trace.Link(command)] if command.is_valid and command.trace_flags.sampled else []
        for batch in _chunks(keys, batch_size):
            with engine.store.dead_letters(batch) as (txn, dead):
                # Runs missing from ``dead`` were replayed by someone else meanwhile (no longer dead, or
                # locked by another replay).
                outcomes.extend(_in_event_trace(engine, txn, key, *dead[key], links=links)
                                for key in batch if key in dead)
        report = ReplayReport(tuple(outcomes))
        span.set_attribute("syncd.replayed", len(report.runs))
        span.set_attribute("syncd.runs_failed", len(report.still_failing))
    return report


def retry_now(engine: SyncEngine, key: RunKey) -> bool:
    """Make the failed run ``key`` due now and wake this process's workers, if it has any (``Store.retry_now``);
    False, nothing changed, if the run is not failed (running, finished, dead or gone)."""
    due = engine.store.retry_now(key, engine.clock.now())
    if due:
        log.info("retry of %s on %s %s brought forward: due now", key.workflow, key.stream, key.event_id,
                 extra={"workflow": key.workflow, "event_id": key.event_id})
        if engine.workers is not None:
            engine.workers.wake()
    return due


def dead_run_keys(engine: SyncEngine, selection: Selection) -> list[RunKey]:
    """Keys of the dead runs ``selection`` picks, in event order."""
    return engine.store.dead_runs(workflow=selection.workflow, source=selection.source,
                                    event_id=selection.event_id)


def _in_event_trace(engine: SyncEngine, txn: RunTxn, key: RunKey, attempts: int, event: Event | None,
                    trace_id: str | None, *, links: list[trace.Link]) -> ReplayedRun:
    """``_replay_one`` inside the event's trace ``trace_id`` (a new one when none was stored: its run was
    queued while tracing was off), under an ``event.replay`` span linked to the replay command's."""
    if event is None:
        return _replay_one(engine, txn, key, attempts, event)
    parent, late_root = attempt_context(event, trace_id)
    token = telemetry_spans.attach(parent)
    try:
        with tracer.start_as_current_span("event.replay", links=links, attributes={
                "messaging.message.id": event.id, "syncd.stream": event.stream, "syncd.workflow": key.workflow}):
            return _replay_one(engine, txn, key, attempts, event)
    finally:
        telemetry_spans.detach(token)
        if late_root is not None:
            late_root.end()


def _replay_one(engine: SyncEngine, txn: RunTxn, key: RunKey, attempts: int, event: Event | None) -> ReplayedRun:
    name, stream, event_id = key.workflow, key.stream, key.event_id
    wf = engine.registry.get(name)
    if wf is None:
        return ReplayedRun(name, stream, event_id, "skipped", attempts,
                           f"workflow {name!r} is not registered (check SYNCD_WORKFLOWS)")
    if event is None:
        return ReplayedRun(name, stream, event_id, "skipped", attempts, "the event is gone from the ledger")
    outcome = engine.run_again(txn, wf, event, attempt=attempts + 1, parent=otel_context.get_current())
    txn.save_run(outcome)
    log.info("replayed %s on %s %s: %s", name, stream, event_id, outcome.status,
             extra={"workflow": name, "event_id": event_id})
    return ReplayedRun(name, stream, event_id, outcome.status.value, outcome.attempts, outcome.last_error)


def render(report: ReplayReport) -> str:
    """Human summary for ``syncd replay``."""
    if not report.runs:
        return "No dead runs match."
    lines = [f"{len(report.runs)} dead run(s): {report.succeeded} succeeded, "
             f"{len(report.still_failing)} still failing"]
    for r in report.runs:
        detail = f": {r.error}" if r.error else ""
        lines.append(f"  {r.status:<9} {r.workflow} ← {r.stream} {r.event_id} (attempt {r.attempts}){detail}")
    return "\n".join(lines)


def _chunks(items: Sequence[RunKey], size: int) -> Iterator[Sequence[RunKey]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
