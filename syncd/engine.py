"""The sync engine: for one source, fetch pages from its cursor and dispatch events to workflows.

Per page, one transaction: ledger insert (ON CONFLICT DO NOTHING) → every matching workflow without a run
for the event, each in a SAVEPOINT → run rows → cursor move fenced on the lease token → commit. So the
cursor moves only with the page's effects (no event lost), and the run table makes effects exactly-once.
Decisions are pure functions at the bottom of this module.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from syncd import store
from syncd.errors import CursorStuckError, FatalError, LeaseLostError, RetryableError
from syncd.models import Event, Page, Window
from syncd.protocols import Clock, Connector, SystemClock
from syncd.workflows import Context, Registry, Workflow

log = logging.getLogger("syncd.engine")
tracer = trace.get_tracer("syncd")

#: Waits longer than this pause the source (stored) instead of being slept inside a tick.
PAUSE_THRESHOLD_SECONDS = 5.0
#: Backoff of failed workflow runs: base × 2^(attempt-1), capped.
RUN_BACKOFF_BASE = timedelta(seconds=30)
RUN_BACKOFF_CAP = timedelta(hours=1)
MAX_ERROR_LENGTH = 2000


@dataclass
class TickResult:
    """What one sync of one source did; also what ``syncd_ticks`` records."""

    source: str
    ok: bool = True
    skipped_reason: str | None = None  # paused, lease held elsewhere, stopped, done
    pages: int = 0
    events: int = 0
    new_events: int = 0
    runs_ok: int = 0
    runs_failed: int = 0
    skipped: int = 0
    lag_seconds: float | None = None
    error: str | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    caught_up: bool = False
    failed_runs: list[tuple[str, str, str]] = field(default_factory=list)  # (workflow, event id, error)


@dataclass(frozen=True)
class Target:
    """Which cursor a sync drives: the live one of a source, or a backfill window of it."""

    connector: Connector
    window: Window | None = None
    workflow: str | None = None  # backfills may be restricted to one workflow

    @property
    def key(self) -> str:
        return cursor_key(self.connector.key, self.window, self.workflow)


class SyncEngine:
    def __init__(self, db: Engine, registry: Registry, *, clock: Clock | None = None, replica_id: str | None = None,
                 lease_seconds: float = 180, max_attempts: int = 5, stop: threading.Event | None = None,
                 max_pages: int | None = None, on_page: Callable[[Target, Page], None] | None = None) -> None:
        self.db = db
        self.registry = registry
        self.clock = clock or SystemClock()
        self.replica_id = replica_id or default_replica_id()
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.stop = stop or threading.Event()
        self.max_pages = max_pages  # tests: stop after N pages, as a crash would
        self.on_page = on_page

    # ---- one source, one tick ------------------------------------------------------------------

    def sync(self, target: Target | Connector) -> TickResult:
        if not isinstance(target, Target):
            target = Target(target)
        key = target.key
        result = TickResult(source=key)
        started = self.clock.now()
        with tracer.start_as_current_span("source.sync", attributes={
            "syncd.source": key, "messaging.system": target.connector.key.split(":", 1)[0],
            "messaging.operation.type": "receive",
        }) as span:
            try:
                self._sync(target, result)
            except Exception as exc:  # recorded on the source and the tick; never escapes a tick
                result.ok = False
                result.error = error_text(exc)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, result.error))
                self._record_failure(target, exc)
                log.error("sync of %s failed: %s", key, result.error, extra={"source": key})
            span.set_attributes(_tick_attributes(result))
            if result.skipped_reason != "lease held by another replica":
                self._record_tick(result, started)
        return result

    def _sync(self, target: Target, result: TickResult) -> None:
        key = target.key
        now = self.clock.now()
        with self.db.begin() as conn:
            store.ensure_source(
                conn, key, source=target.connector.key, now=now, kind="backfill" if target.window else "live",
                window_start=target.window.start if target.window else None,
                window_end=target.window.end if target.window else None, window_workflow=target.workflow,
            )
            row = store.get_source(conn, key)
            assert row is not None
            if row.state == "done":
                result.skipped_reason = "done"
                result.caught_up = True
                return
            if row.paused_until is not None and row.paused_until > now:
                result.skipped_reason = f"paused until {row.paused_until.isoformat()}: {row.pause_reason}"
                return
            token = store.acquire_lease(conn, key, owner=self.replica_id, now=now, seconds=self.lease_seconds)
        if token is None:
            result.skipped_reason = "lease held by another replica"
            return
        result.cursor_before = row.cursor
        try:
            self._page_loop(target, token, row.cursor, result)
            self._retry_due_runs(target, token, result)
        finally:
            with self.db.begin() as conn:
                store.release_lease(conn, key, token=token, now=self.clock.now())

    def _page_loop(self, target: Target, token: int, cursor: str | None, result: TickResult) -> None:
        connector = target.connector
        while not self.stop.is_set():
            if self.max_pages is not None and result.pages >= self.max_pages:
                return
            with tracer.start_as_current_span("page.fetch", attributes={"syncd.source": target.key}) as span:
                page = self._fetch(connector, cursor, target.window)
                span.set_attribute("messaging.batch.message_count", len(page.events))
                span.set_attribute("syncd.has_more", page.has_more)
            check_progress(target.key, cursor, page)
            self._commit_page(target, token, page, result)
            if page.next_cursor is not None:
                cursor = page.next_cursor
            result.cursor_after = cursor
            result.pages += 1
            if self.on_page is not None:
                self.on_page(target, page)
            if not page.has_more:
                result.caught_up = True
                if target.window is not None:
                    with self.db.begin() as conn:
                        store.set_source_fields(conn, target.key, now=self.clock.now(), state="done", progress=1.0)
                return

    def _fetch(self, connector: Connector, cursor: str | None, window: Window | None) -> Page:
        return connector.fetch_page(cursor, window)

    # ---- one page, one transaction --------------------------------------------------------------

    def _commit_page(self, target: Target, token: int, page: Page, result: TickResult) -> None:
        now = self.clock.now()
        stream = target.connector.key
        batch = unique_events(page.events)
        with self.db.connect() as conn, conn.begin():
            new_ids = self._record_ledger(conn, batch, now)
            done = store.existing_runs(conn, stream, (e.id for e in batch))
            run_rows = []
            for event in batch:
                for wf in self._workflows_for(event, target):
                    if (wf.name, event.id) in done:
                        continue
                    run_rows.append(self._run(conn, wf, event, attempt=1, result=result, now=now))
            store.insert_runs(conn, run_rows)
            progress = window_progress(target.window, batch[-1].occurred_at) if target.window and batch else None
            if not store.commit_cursor(conn, target.key, token=token, owner=self.replica_id, cursor=page.next_cursor,
                                       meta=dict(page.meta) or None, new_events=len(new_ids), now=self.clock.now(),
                                       lease_seconds=self.lease_seconds, progress=progress):
                raise LeaseLostError(target.key)
        result.events += len(batch)
        result.new_events += len(new_ids)
        result.skipped += page.skipped
        if batch:
            result.lag_seconds = max(0.0, (now - batch[-1].occurred_at).total_seconds())

    def _record_ledger(self, conn: Connection, batch: Sequence[Event], now: datetime) -> set[str]:
        if not batch:
            return set()
        stream = batch[0].stream
        seen = store.existing_event_ids(conn, stream, [e.id for e in batch])
        rows = [ledger_row(e, now) for e in batch if e.id not in seen]
        store.record_events(conn, rows)
        return {r["event_id"] for r in rows}

    def _workflows_for(self, event: Event, target: Target) -> list[Workflow]:
        matching = self.registry.matching(event)
        if target.workflow is not None:
            matching = [wf for wf in matching if wf.name == target.workflow]
        return matching

    def _run(self, conn: Connection, wf: Workflow, event: Event, *, attempt: int, result: TickResult,
             now: datetime) -> dict[str, Any]:
        """Run one workflow on one event in a SAVEPOINT; return its run row (never raises for the handler)."""
        started = time.perf_counter()
        with tracer.start_as_current_span("event.process", attributes={
            "messaging.message.id": event.id, "messaging.operation.type": "process",
            "syncd.event.type": event.type, "syncd.stream": event.stream,
        }), tracer.start_as_current_span("workflow.run", attributes={
            "syncd.workflow": wf.name, "syncd.workflow.version": wf.version, "syncd.attempt": attempt,
        }) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            session = Session(bind=conn, join_transaction_mode="create_savepoint")
            try:
                wf(event, Context(db=session, event=event, workflow=wf, span=span, attempt=attempt))
                session.commit()  # releases the SAVEPOINT; the page's transaction commits later
                error = None
            except Exception as exc:  # the handler's failure is data: recorded, retried, dead-lettered
                session.rollback()
                error = error_text(exc)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, error))
            finally:
                session.close()
            status, next_at = run_outcome(error, attempt, wf.retries or self.max_attempts, now)
            span.set_attribute("syncd.outcome", status)
        if error is None:
            result.runs_ok += 1
        else:
            result.runs_failed += 1
            result.failed_runs.append((wf.name, event.id, error))
            log.warning("workflow %s failed on %s (attempt %d, now %s): %s", wf.name, event.id, attempt, status,
                        error, extra={"workflow": wf.name, "event_id": event.id})
        return {
            "workflow": wf.name, "stream": event.stream, "event_id": event.id, "workflow_version": wf.version,
            "status": status, "attempts": attempt, "next_attempt_at": next_at, "last_error": error,
            "trace_id": trace_id, "started_at": now, "finished_at": self.clock.now(),
            "duration_ms": (time.perf_counter() - started) * 1000,
        }

    # ---- retries of failed runs, independent of the cursor ---------------------------------------

    def _retry_due_runs(self, target: Target, token: int, result: TickResult) -> None:
        if target.window is not None or self.stop.is_set():
            return
        stream = target.connector.key
        now = self.clock.now()
        with self.db.connect() as conn, conn.begin():
            due = store.due_runs(conn, stream, now)
            for row in due:
                wf = self.registry.get(row["workflow"])
                if wf is None:
                    continue  # the workflow was removed; its failed runs stay for `syncd status`
                event = event_from_ledger(stream, row)
                outcome = self._run(conn, wf, event, attempt=row["attempts"] + 1, result=result, now=now)
                store.update_run(conn, wf.name, stream, event.id, **{
                    k: outcome[k] for k in ("status", "attempts", "next_attempt_at", "last_error", "trace_id",
                                            "finished_at", "duration_ms", "workflow_version")})
            if due and not store.commit_cursor(conn, target.key, token=token, owner=self.replica_id, cursor=None,
                                               meta=None, new_events=0, now=self.clock.now(),
                                               lease_seconds=self.lease_seconds):
                raise LeaseLostError(target.key)

    # ---- bookkeeping --------------------------------------------------------------------------

    def _record_failure(self, target: Target, exc: Exception) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {"last_error": error_text(exc), "last_error_at": now}
        if isinstance(exc, RetryableError) and exc.retry_after is not None and exc.retry_after > 0:
            values["paused_until"] = now + timedelta(seconds=exc.retry_after)
            values["pause_reason"] = str(exc)
        try:
            with self.db.begin() as conn:
                store.set_source_fields(conn, target.key, now=now, **values)
        except Exception as db_exc:  # the database itself may be what failed
            log.error("could not record the failure of %s: %s", target.key, error_text(db_exc))

    def _record_tick(self, result: TickResult, started: datetime) -> None:
        now = self.clock.now()
        try:
            with self.db.begin() as conn:
                if result.ok and result.skipped_reason is None:
                    store.set_source_fields(conn, result.source, now=now, last_success_at=now, last_error=None,
                                            paused_until=None, pause_reason=None)
                store.record_tick(conn, {
                    "source": result.source, "replica": self.replica_id, "started_at": started, "finished_at": now,
                    "ok": result.ok, "pages": result.pages, "events": result.events,
                    "new_events": result.new_events, "runs_ok": result.runs_ok, "runs_failed": result.runs_failed,
                    "skipped": result.skipped, "lag_seconds": result.lag_seconds, "error": result.error,
                })
        except Exception as exc:
            log.error("could not record the tick of %s: %s", result.source, error_text(exc))


# ---- pure decisions ------------------------------------------------------------------------------


def cursor_key(source: str, window: Window | None, workflow: str | None = None) -> str:
    if window is None:
        return source
    key = f"{source}@{int(window.start.timestamp() * 1000)}-{int(window.end.timestamp() * 1000)}"
    return f"{key}/{workflow}" if workflow else key


def check_progress(source: str, cursor: str | None, page: Page) -> None:
    """The loop guard: a page that promises more must move the cursor."""
    if page.has_more and (page.next_cursor is None or page.next_cursor == cursor):
        raise CursorStuckError(source, cursor)


def unique_events(events: Iterable[Event]) -> list[Event]:
    """Drop repeats of an event id within one page, keeping the first."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            out.append(event)
    return out


def run_outcome(error: str | None, attempt: int, max_attempts: int, now: datetime) -> tuple[str, datetime | None]:
    """(status, next attempt time) after an attempt: succeeded, failed (retry later) or dead."""
    if error is None:
        return "succeeded", None
    if attempt >= max_attempts:
        return "dead", None
    return "failed", now + run_backoff(attempt)


def run_backoff(attempt: int) -> timedelta:
    return min(RUN_BACKOFF_BASE * (2 ** (attempt - 1)), RUN_BACKOFF_CAP)


def window_progress(window: Window, reached: datetime) -> float:
    span = (window.end - window.start).total_seconds()
    return min(1.0, max(0.0, (reached - window.start).total_seconds() / span)) if span > 0 else 1.0


def ledger_row(event: Event, now: datetime) -> dict[str, Any]:
    return {"stream": event.stream, "event_id": event.id, "type": event.type, "action": event.action,
            "occurred_at": event.occurred_at, "payload": dict(event.data), "recorded_at": now}


def event_from_ledger(stream: str, row: dict[str, Any]) -> Event:
    return Event(stream=stream, id=row["event_id"], type=row["type"], occurred_at=row["occurred_at"],
                 data=row["payload"], action=row.get("action"))


def error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, (RetryableError, FatalError, CursorStuckError, LeaseLostError)):
        text = f"{type(exc).__name__}: {text}"
    return text[:MAX_ERROR_LENGTH]


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _tick_attributes(result: TickResult) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "syncd.pages": result.pages, "syncd.events": result.events, "syncd.new_events": result.new_events,
        "syncd.runs_failed": result.runs_failed, "syncd.ok": result.ok,
    }
    if result.cursor_before is not None:
        attrs["syncd.cursor.before"] = result.cursor_before
    if result.cursor_after is not None:
        attrs["syncd.cursor.after"] = result.cursor_after
    if result.lag_seconds is not None:
        attrs["syncd.lag_seconds"] = result.lag_seconds
    if result.skipped_reason:
        attrs["syncd.skipped_reason"] = result.skipped_reason
    return attrs
