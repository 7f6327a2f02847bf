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
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from sqlalchemy.engine import Connection

from syncd import store
from syncd.engine import SyncEngine, event_from_ledger
from syncd.store.db import reading
from syncd.store.tables import events, runs

log = logging.getLogger("syncd.replay")
tracer = trace.get_tracer("syncd")

BATCH_SIZE = 100
RunKey = tuple[str, str, str]  # (workflow, stream, event_id)
_RUN_FIELDS = ("status", "attempts", "next_attempt_at", "last_error", "trace_id", "finished_at",
               "duration_ms", "workflow_version")


@dataclass(frozen=True)
class Selection:
    """Which dead runs to replay; every field given narrows the choice (all None: every dead run).

    ``source`` is a stream key (``workos``, ``github:o/r``) or a provider name (``github``: all its streams).
    """

    workflow: str | None = None
    source: str | None = None
    event_id: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = [runs.c.status == "dead"]
        if self.workflow is not None:
            clauses.append(runs.c.workflow == self.workflow)
        if self.source is not None:
            clauses.append(sa.or_(runs.c.stream == self.source, runs.c.stream.startswith(f"{self.source}:",
                                                                                         autoescape=True)))
        if self.event_id is not None:
            clauses.append(runs.c.event_id == self.event_id)
        return clauses


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
        return sum(1 for r in self.runs if r.status == "succeeded")

    @property
    def still_failing(self) -> tuple[ReplayedRun, ...]:
        """Runs that failed again or could not be replayed (a durable run now sleeping is not failing)."""
        return tuple(r for r in self.runs if r.status in ("dead", "failed", "skipped"))

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
        for batch in _chunks(keys, batch_size):
            with engine.db.connect() as conn, conn.begin():
                outcomes.extend(_replay_batch(engine, conn, batch))
        report = ReplayReport(tuple(outcomes))
        span.set_attribute("syncd.replayed", len(report.runs))
        span.set_attribute("syncd.runs_failed", len(report.still_failing))
    return report


def dead_run_keys(engine: SyncEngine, selection: Selection) -> list[RunKey]:
    """Keys of the dead runs ``selection`` picks, in event order."""
    query = (
        sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id)
        .join(events, sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id),
              isouter=True)
        .where(*selection.where())
        .order_by(events.c.occurred_at, runs.c.stream, runs.c.event_id, runs.c.workflow)
    )
    with reading(engine.db) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(query)]


def _replay_batch(engine: SyncEngine, conn: Connection, batch: Sequence[RunKey]) -> list[ReplayedRun]:
    rows = {(r["workflow"], r["stream"], r["event_id"]): r for r in _lock_dead(conn, batch)}
    outcomes = []
    for key in batch:
        row = rows.get(key)
        if row is None:
            continue  # replayed by someone else meanwhile (no longer dead, or locked by another replay)
        outcomes.append(_replay_one(engine, conn, row))
    return outcomes


def _lock_dead(conn: Connection, batch: Sequence[RunKey]) -> list[dict[str, Any]]:
    """The batch's runs that are still dead, with their ledger payload, locked for this transaction."""
    wanted = sa.tuple_(runs.c.workflow, runs.c.stream, runs.c.event_id).in_(list(batch))
    query = (
        sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id, runs.c.attempts, events.c.type,
                  events.c.action, events.c.occurred_at, events.c.payload)
        .join(events, sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id),
              isouter=True)
        .where(wanted, runs.c.status == "dead")
        .with_for_update(of=runs, skip_locked=True)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def _replay_one(engine: SyncEngine, conn: Connection, row: dict[str, Any]) -> ReplayedRun:
    name, stream, event_id, attempts = row["workflow"], row["stream"], row["event_id"], int(row["attempts"])
    wf = engine.registry.get(name)
    if wf is None:
        return ReplayedRun(name, stream, event_id, "skipped", attempts,
                           f"workflow {name!r} is not registered (check SYNCD_WORKFLOWS)")
    if row["payload"] is None:
        return ReplayedRun(name, stream, event_id, "skipped", attempts, "the event is gone from the ledger")
    outcome = engine.run_again(conn, wf, event_from_ledger(stream, row), attempt=attempts + 1)
    store.update_run(conn, name, stream, event_id, **{k: outcome[k] for k in _RUN_FIELDS})
    log.info("replayed %s on %s %s: %s", name, stream, event_id, outcome["status"],
             extra={"workflow": name, "event_id": event_id})
    return ReplayedRun(name, stream, event_id, outcome["status"], outcome["attempts"], outcome["last_error"])


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
