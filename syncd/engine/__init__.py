"""The sync engine: for one source, fetch pages from its cursor and dispatch events to workflows.

Per page (several pages while catching up), one transaction: ledger insert (ON CONFLICT DO NOTHING) →
each batch workflow on all its events in a SAVEPOINT, every other matching workflow without a run for the
event in its own SAVEPOINT → run rows → cursor move fenced on the lease token → commit. So the
cursor moves only with the page's effects (no event lost), and the run table makes effects exactly-once.
Decisions are pure functions at the bottom of this module.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from syncd import store
from syncd.contracts import Clock, Connector, Event, Page, SystemClock, Window
from syncd.errors import CursorStuckError, FatalError, LeaseLostError, RetryableError
from syncd.settings import PREFETCH_PAGES, Integrations
from syncd.store.db import reading
from syncd.workflows import BatchContext, Context, Registry, Workflow
from syncd.workflows.steps import Checkpoint, Interrupt, RunKey, Sleep, StepRuntime, store_results

log = logging.getLogger("syncd.engine")
tracer = trace.get_tracer("syncd")

#: Waits longer than this pause the source (stored) instead of being slept inside a tick.
PAUSE_THRESHOLD_SECONDS = 5.0
#: Backoff of failed workflow runs: base × 2^(attempt-1), capped.
RUN_BACKOFF_BASE = timedelta(seconds=30)
RUN_BACKOFF_CAP = timedelta(hours=1)
MAX_ERROR_LENGTH = 2000
#: A catch-up commits several pages in one transaction: up to this many events, or the pages that arrived
#: within GROUP_SECONDS (see SyncEngine._fetch_group). 3,000 rather than 1,000: the mirrors' random-key
#: pages dirtied by a transaction are shared by more events (bench/README.md, session 4).
GROUP_EVENTS = 3000
GROUP_SECONDS = 1.0
#: Prefetch the next page while one commits once a page takes this long to arrive (see _page_loop).
PREFETCH_AFTER_SECONDS = 0.01
#: Rounds of due-run processing per tick (each round is one transaction over up to 200 runs).
MAX_RESUME_ROUNDS = 50


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
    runs_suspended: int = 0  # durable runs left pending (mid-steps) or sleeping
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
                 max_pages: int | None = None, on_page: Callable[[Target, Page], None] | None = None,
                 integrations: Integrations | None = None, prefetch_pages: int = PREFETCH_PAGES) -> None:
        self.db = db
        self.integrations = integrations if integrations is not None else Integrations()  # workflows' only settings
        self.registry = registry
        self.clock = clock or SystemClock()
        self.replica_id = replica_id or default_replica_id()
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.stop = stop or threading.Event()
        self.max_pages = max_pages  # tests: stop after N pages, as a crash would
        self.group_events, self.group_seconds = GROUP_EVENTS, GROUP_SECONDS  # see _fetch_group
        self.prefetch_pages = prefetch_pages  # SYNCD_PREFETCH_PAGES; see _page_loop
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
            if token is not None:  # read the cursor again under the lease: a page may have committed since
                row = store.get_source(conn, key) or row
        if token is None:
            result.skipped_reason = "lease held by another replica"
            return
        result.cursor_before = row.cursor
        keeper = LeaseKeeper(self, key, token)
        try:
            keeper.start()
            self._page_loop(target, token, row.cursor, result, keeper)
            self._retry_due_runs(target, token, result)
        finally:
            keeper.stop()
            self._release(key, token)

    def _release(self, key: str, token: int) -> None:
        """Give the lease back. Best effort: if the database is down, the lease expires by itself, and the
        tick's own error (not this one) is what gets reported."""
        try:
            with self.db.begin() as conn:
                store.release_lease(conn, key, token=token, now=self.clock.now())
        except Exception as exc:
            log.warning("could not release the lease of %s (it expires by itself): %s", key, error_text(exc),
                        extra={"source": key})

    def _page_loop(self, target: Target, token: int, cursor: str | None, result: TickResult,
                   keeper: LeaseKeeper | None = None) -> None:
        connector = target.connector
        # While pages commit, the next one is already being fetched (connectors that allow it), once the
        # provider is slow enough for it to pay: a page that took PREFETCH_AFTER_SECONDS to arrive. On a
        # fast loopback the thread hand-offs would cost more CPU than they hide. A prefetched page is only a
        # read; it is committed in order, after the pages before it, or dropped if they fail.
        # PostgreSQL only: SQLite has one write lock for the whole file, and a page that is ready the moment
        # the last one commits takes it straight back, starving every other connection (a backfill or a
        # second process, `syncd status`); the fetch between commits is what lets them in.
        parent = otel_context.get_current()  # source.sync's: every page span is its child, prefetched or not
        prefetch = (Prefetcher(self, target, parent, ahead=self.prefetch_pages)
                    if self.prefetch_pages > 0 and getattr(connector, "prefetch", False)
                    and self.db.dialect.name == "postgresql" else None)
        try:
            while not self.stop.is_set():
                if self.max_pages is not None and result.pages >= self.max_pages:
                    return
                if keeper is not None:
                    keeper.check()
                started = time.monotonic()
                group, failure = self._fetch_group(target, cursor, result, prefetch, parent)
                last = group[-1][1]
                more = self.max_pages is None or result.pages + len(group) < self.max_pages
                if prefetch is not None and prefetch.pays() and last.has_more and failure is None and more:
                    prefetch.start(last_cursor(cursor, group))
                try:
                    self._commit_pages(target, token, group, result)
                finally:
                    for span, _ in group:
                        span.end()
                warn_slow_page(target.key, time.monotonic() - started, self.lease_seconds)
                for _, page in group:
                    if page.next_cursor is not None:
                        cursor = page.next_cursor
                    result.cursor_after = cursor
                    result.pages += 1
                    if self.on_page is not None:
                        self.on_page(target, page)
                if failure is not None:  # the pages before it are committed; the tick fails on it now
                    raise failure
                if not last.has_more:
                    result.caught_up = True
                    if target.window is not None:
                        with self.db.begin() as conn:
                            store.set_source_fields(conn, target.key, now=self.clock.now(), state="done",
                                                    progress=1.0)
                    return
        finally:
            if prefetch is not None:
                prefetch.close()

    def _fetch_group(self, target: Target, cursor: str | None, result: TickResult, prefetch: Prefetcher | None,
                     parent: otel_context.Context) -> tuple[list[tuple[trace.Span, Page]], Exception | None]:
        """The pages committed together: while catching up, as many as arrive within ``group_seconds``, up
        to ``group_events`` events; one page otherwise. A page's cost is mostly per transaction and per statement,
        not per event, so a backlog goes several times faster in bigger transactions; each still moves the
        cursor with all its events' effects. If a fetch fails after the first page, the pages already in
        hand are returned with the error, to be committed before it is raised."""
        group: list[tuple[trace.Span, Page]] = []
        started = time.monotonic()
        while True:
            try:
                span, page = self._next_page(target, cursor, prefetch, parent)
            except Exception as exc:
                if not group:
                    raise
                return group, exc
            group.append((span, page))
            cursor = page.next_cursor if page.next_cursor is not None else cursor
            if (not page.has_more or self.stop.is_set()
                    or (self.max_pages is not None and result.pages + len(group) >= self.max_pages)
                    or sum(len(p.events) for _, p in group) >= self.group_events
                    or time.monotonic() - started >= self.group_seconds):
                return group, None

    def _next_page(self, target: Target, cursor: str | None, prefetch: Prefetcher | None,
                   parent: otel_context.Context) -> tuple[trace.Span, Page]:
        """Fetch the page at ``cursor`` (or take it from the prefetcher) under its own ``page.fetch`` span,
        left open: the events of the page are processed under it, and it ends when the page commits."""
        span, page = prefetch.take(cursor) if prefetch is not None else (None, None)
        if span is None:
            span = self._page_span(target, parent)
        try:
            with trace.use_span(span, end_on_exit=False):
                if page is None:
                    fetch_started = time.monotonic()
                    page = self._fetch(target.connector, cursor, target.window)
                    if prefetch is not None:
                        prefetch.fetch_seconds = time.monotonic() - fetch_started
                span.set_attribute("messaging.batch.message_count", len(page.events))
                span.set_attribute("syncd.has_more", page.has_more)
                check_progress(target.key, cursor, page)
        except BaseException:
            span.end()  # use_span recorded the exception and the ERROR status
            raise
        return span, page

    def _page_span(self, target: Target, parent: otel_context.Context) -> trace.Span:
        connector = target.connector
        return tracer.start_span("page.fetch", context=parent, attributes={
            "syncd.source": target.key, "messaging.system": connector.key.split(":", 1)[0],
            "messaging.operation.type": "receive", "messaging.destination.name": connector.key,
        })

    def _fetch(self, connector: Connector, cursor: str | None, window: Window | None) -> Page:
        return connector.fetch_page(cursor, window)

    # ---- one page, one transaction --------------------------------------------------------------

    def _commit_pages(self, target: Target, token: int, group: Sequence[tuple[trace.Span, Page]],
                      result: TickResult) -> None:
        """One transaction for the pages of ``group``: ledger, runs, every workflow's effects, the cursor.

        SQL and batch spans go under the last page's span; each event's spans under its own page's.
        """
        with trace.use_span(group[-1][0], end_on_exit=False):
            self._commit_events(target, token, group, result)

    def _commit_events(self, target: Target, token: int, group: Sequence[tuple[trace.Span, Page]],
                       result: TickResult) -> None:
        now = self.clock.now()
        stream = target.connector.key
        batch = unique_events(event for _, page in group for event in page.events)
        span_of = {event.id: span for span, page in reversed(group) for event in page.events}
        pages = [page for _, page in group]
        with self.db.connect() as conn, conn.begin():
            bound_idle_time(conn, self.lease_seconds)
            store.lock_stream(conn, stream)  # a backfill and a live tick meeting on an event run it once
            new_ids = self._record_ledger(conn, batch, now)
            matching = [(event, self._workflows_for(event, target)) for event in batch]
            # Runs are only ever created in the transaction that records their event, or after it: an event
            # new to the ledger has none, so only the events seen before need looking up (none, catching up).
            done = store.existing_runs(conn, stream, {wf.name for _, wfs in matching for wf in wfs},
                                       [e.id for e in batch if e.id not in new_ids])
            batches: dict[str, tuple[Workflow, list[Event]]] = {}
            singles: list[tuple[Workflow, Event]] = []
            for event, workflows in matching:
                for wf in workflows:
                    if done and (wf.name, event.id) in done:
                        continue
                    if wf.batch is None:
                        singles.append((wf, event))
                    elif (entry := batches.get(wf.name)) is not None:
                        entry[1].append(event)
                    else:
                        batches[wf.name] = (wf, [event])
            run_rows: list[dict[str, Any]] = []
            # Batch workflows (the built-in mirrors) apply all the events first, so per-event workflows
            # that read the mirrors see every event of the transaction applied.
            for wf, events in batches.values():
                run_rows.extend(self._run_batch(conn, wf, events, result=result, now=now, span_of=span_of))
            for wf, event in singles:
                # A page's transaction spans many events: a step's side effect is not run inside it (its
                # stored result would only commit with the whole page). It is deferred to the run's own
                # short transaction right after the page commits.
                with trace.use_span(span_of[event.id], end_on_exit=False):
                    run_rows.append(self._run(conn, wf, event, attempt=1, result=result, now=now,
                                              defer_steps=True))
            store.insert_runs(conn, run_rows)
            progress = window_progress(target.window, batch[-1].occurred_at) if target.window and batch else None
            meta = next((dict(p.meta) for p in reversed(pages) if p.meta), None)
            cursor = next((p.next_cursor for p in reversed(pages) if p.next_cursor is not None), None)
            if not store.commit_cursor(conn, target.key, token=token, owner=self.replica_id, cursor=cursor,
                                       meta=meta, new_events=len(new_ids), now=self.clock.now(),
                                       lease_seconds=self.lease_seconds, progress=progress):
                raise LeaseLostError(target.key)
        result.events += len(batch)
        result.new_events += len(new_ids)
        result.skipped += sum(p.skipped for p in pages)
        if batch:
            result.lag_seconds = max(0.0, (now - batch[-1].occurred_at).total_seconds())

    def _record_ledger(self, conn: Connection, batch: Sequence[Event], now: datetime) -> set[str]:
        if not batch:
            return set()
        if conn.dialect.name == "postgresql":  # the insert itself says which events were new
            return store.record_new_events(conn, [ledger_row(e, now) for e in batch])
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
             now: datetime, max_attempts: int | None = None, defer_steps: bool = False) -> dict[str, Any]:
        """Run one workflow on one event in a SAVEPOINT; return its run row (never raises for the handler).

        ``max_attempts`` overrides the workflow's retries (a replay's failure is final: dead again).
        """
        started = time.perf_counter()
        with tracer.start_as_current_span("event.process", kind=SpanKind.CONSUMER, attributes={
            "messaging.message.id": event.id, "messaging.operation.type": "process",
            "messaging.system": event.provider, "messaging.destination.name": event.stream,
            "syncd.event.type": event.type, "syncd.stream": event.stream,
        }), tracer.start_as_current_span("workflow.run", attributes={
            "syncd.workflow": wf.name, "syncd.workflow.version": wf.version, "syncd.attempt": attempt,
        }) as span:
            span_context = span.get_span_context()  # invalid when tracing is off: no trace id to store
            trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
            scope = RunScope(conn)
            steps = StepRuntime(conn=conn, key=RunKey(wf.name, event.stream, event.id), now=self.clock.now,
                                defer_new=defer_steps)
            interrupt: Interrupt | None = None
            ctx = Context(db=scope.session, event=event, workflow=wf, span=span, attempt=attempt, steps=steps,
                          integrations=self.integrations, connection=conn)
            try:
                wf(event, ctx)
                scope.commit()  # the page's transaction commits later
                error = None
            except Interrupt as signal_:  # a step completed or a sleep began: store it, resume later
                scope.rollback()
                interrupt, error = signal_, None
            except Exception as exc:  # the handler's failure is data: recorded, retried, dead-lettered
                if conn.invalidated:  # unless the page's connection died (outage, server timeout): not the
                    raise  # handler's fault, and the page cannot commit; fail it now, it is fetched again
                scope.rollback()
                error = error_text(exc)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, error))
            finally:
                scope.close()
                ctx.close()
            limit = max_attempts or wf.retries or self.max_attempts
            if interrupt is None:
                status, next_at = run_outcome(error, attempt, limit, now)
            else:
                status, next_at, error = interrupted(conn, steps.key, interrupt, attempt, limit, now)
                if error is not None:
                    span.set_status(Status(StatusCode.ERROR, error))
            span.set_attribute("syncd.outcome", status)
        if status in ("pending", "sleeping"):
            result.runs_suspended += 1
        elif error is None:
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

    def _run_batch(self, conn: Connection, wf: Workflow, events: list[Event], *, result: TickResult,
                   now: datetime, span_of: Mapping[str, trace.Span]) -> list[dict[str, Any]]:
        """Run ``wf``'s batch handler on a page's new events for it, in one SAVEPOINT, and write their run
        rows; if it fell back to one event at a time, return those runs' rows instead, for the caller to write.

        If the batch raises, its writes roll back and every event goes through the per-event handler in
        its own SAVEPOINT, so a bad event fails alone and its neighbours still succeed, exactly as if
        there were no batch handler.
        """
        assert wf.batch is not None
        started, started_ns = time.perf_counter(), time.time_ns()
        with tracer.start_as_current_span("workflow.batch", attributes={
            "syncd.workflow": wf.name, "syncd.workflow.version": wf.version,
            "messaging.batch.message_count": len(events),
        }) as span:
            scope = RunScope(conn)
            ctx = BatchContext(db=scope.session, events=events, workflow=wf, span=span, connection=conn)
            failure: Exception | None = None
            try:
                wf.batch(events, ctx)
                scope.commit()
            except Exception as exc:
                if conn.invalidated:  # the connection died, not the batch: the page fails and is fetched again
                    raise
                scope.rollback()
                failure = exc
                span.record_exception(exc)
                span.set_attribute("syncd.batch.fallback", True)
            finally:
                scope.close()
            span_context = span.get_span_context()
        if failure is not None:
            log.info("batch of %s failed on a page (%s); running its %d events one by one", wf.name,
                     error_text(failure), len(events), extra={"workflow": wf.name})
            rows = []
            for event in events:
                with trace.use_span(span_of[event.id], end_on_exit=False):
                    rows.append(self._run(conn, wf, event, attempt=1, result=result, now=now, defer_steps=True))
            return rows
        finished = self.clock.now()
        share_ms = (time.perf_counter() - started) * 1000 / len(events)
        if span_context.is_valid and span_context.trace_flags.sampled:  # only when traces go somewhere
            _event_spans(wf, events, span_context, started_ns, time.time_ns(), span_of)
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
        result.runs_ok += len(events)
        by_stream: dict[str, list[str]] = {}
        for event in events:
            by_stream.setdefault(event.stream, []).append(event.id)
        for stream, event_ids in by_stream.items():  # one stream: a transaction is one target's pages
            store.insert_batch_runs(conn, {
                "workflow": wf.name, "stream": stream, "workflow_version": wf.version, "status": "succeeded",
                "attempts": 1, "next_attempt_at": None, "last_error": None, "trace_id": trace_id,
                "started_at": now, "finished_at": finished, "duration_ms": share_ms,
            }, event_ids)
        return []

    def run_again(self, conn: Connection, wf: Workflow, event: Event, *, attempt: int) -> dict[str, Any]:
        """Run ``wf`` on ``event`` once more in a SAVEPOINT of ``conn``'s transaction (``syncd replay``).

        Returns the run row: ``succeeded``, or ``dead`` again (a manual re-run never re-enters the automatic
        retries); the caller writes it and commits.
        """
        for _ in range(MAX_RESUME_ROUNDS):  # a durable run goes on step by step in this transaction
            outcome = self._run(conn, wf, event, attempt=attempt, result=TickResult(source=event.stream),
                                now=self.clock.now(), max_attempts=attempt)
            if outcome["status"] != "pending":
                break
        return outcome

    # ---- retries of failed runs, independent of the cursor ---------------------------------------

    def _retry_due_runs(self, target: Target, token: int, result: TickResult) -> None:
        if target.window is not None or self.stop.is_set():
            return
        # Durable runs advance one step per transaction (``pending`` right after a step), so keep going
        # while runs are due now; bounded so one tick cannot spin forever.
        for _ in range(MAX_RESUME_ROUNDS):
            if self.stop.is_set() or not self._retry_round(target, token, result):
                return

    def _retry_round(self, target: Target, token: int, result: TickResult) -> bool:
        """Run the due runs of the stream, each in its own transaction, so a durable step's result
        commits right after the step (the window in which a crash could repeat it stays milliseconds)."""
        stream = target.connector.key
        now = self.clock.now()
        with reading(self.db) as conn:
            due = store.due_runs(conn, stream, now)
        for row in due:
            if self.stop.is_set():
                break
            wf = self.registry.get(row["workflow"])
            if wf is None:
                continue  # the workflow was removed; its failed runs stay for `syncd status`
            with self.db.connect() as conn, conn.begin():
                bound_idle_time(conn, self.lease_seconds)
                store.lock_stream(conn, stream)
                if not store.still_due(conn, wf.name, stream, row["event_id"], row["status"], row["attempts"]):
                    continue  # another cursor of this stream (a backfill) got to it first
                event = event_from_ledger(stream, row)
                attempt = row["attempts"] + 1 if row["status"] == "failed" else row["attempts"]
                outcome = self._run(conn, wf, event, attempt=attempt, result=result, now=now)
                store.update_run(conn, wf.name, stream, event.id, **{
                    k: outcome[k] for k in ("status", "attempts", "next_attempt_at", "last_error", "trace_id",
                                            "finished_at", "duration_ms", "workflow_version")})
                if not store.commit_cursor(conn, target.key, token=token, owner=self.replica_id, cursor=None,
                                           meta=None, new_events=0, now=self.clock.now(),
                                           lease_seconds=self.lease_seconds):
                    raise LeaseLostError(target.key)
        return bool(due)

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


@dataclass
class _Ahead:
    """One page a Prefetcher fetches (or will): its cursor, its span and the page to come."""

    cursor: str | None
    span: trace.Span
    future: Future[Page] = field(default_factory=Future)


class Prefetcher:
    """Fetches pages ahead of the ones being committed, in a background (daemon) thread.

    ``start(cursor)`` starts a chain at ``cursor``: the thread fetches that page, then the next one from its
    cursor, and so on while the provider has more, keeping at most ``ahead`` pages not yet taken (it waits
    for room). Each page has its own ``page.fetch`` span, a sibling of the other pages'. ``take(cursor)``
    returns the next page of the chain if it is the one at ``cursor`` (raising what its fetch raised, as a
    direct fetch would have), else drops the chain and returns ``(None, None)``. Pages never taken (the
    stop signal, a failed commit) are dropped without waiting for their requests: their spans end when the
    requests do, their results are ignored, and the interpreter does not wait for the thread at exit.
    """

    def __init__(self, engine: SyncEngine, target: Target, parent: otel_context.Context, ahead: int) -> None:
        self.engine, self.target, self.parent, self.ahead = engine, target, parent, ahead
        self.fetch_seconds = 0.0  # how long the last page took to arrive
        self._lock = threading.Condition()
        self._queue: deque[_Ahead] = deque()  # pages of the running chain not taken yet, in order
        self._cancel: threading.Event | None = None  # the running chain's

    def pays(self) -> bool:
        return self.fetch_seconds >= PREFETCH_AFTER_SECONDS and not self.engine.stop.is_set()

    def start(self, cursor: str | None) -> None:
        with self._lock:
            if self._queue and self._queue[0].cursor == cursor:
                return  # the running chain is already there
        self._drop()
        cancel = threading.Event()
        first = self._entry(cursor)
        with self._lock:
            self._cancel = cancel
            self._queue.append(first)
        threading.Thread(target=self._chain, args=(first, cancel), name=f"prefetch:{self.target.key}",
                         daemon=True).start()

    def take(self, cursor: str | None) -> tuple[trace.Span | None, Page | None]:
        with self._lock:
            entry = self._queue.popleft() if self._queue and self._queue[0].cursor == cursor else None
            self._lock.notify_all()
        if entry is None:
            self._drop()
            return None, None
        try:
            return entry.span, entry.future.result()
        except BaseException as exc:
            entry.span.record_exception(exc)
            entry.span.set_status(Status(StatusCode.ERROR, error_text(exc)))
            entry.span.end()
            raise

    def close(self) -> None:
        """Drop the pages in flight and let the thread go; never waits for a request nobody will use."""
        self._drop()

    def _entry(self, cursor: str | None) -> _Ahead:
        span = self.engine._page_span(self.target, self.parent)
        span.set_attribute("syncd.prefetched", True)
        return _Ahead(cursor, span)

    def _chain(self, entry: _Ahead, cancel: threading.Event) -> None:
        while entry.future.set_running_or_notify_cancel():
            token = otel_context.attach(trace.set_span_in_context(entry.span, self.parent))
            started = time.monotonic()
            try:
                page = self.engine._fetch(self.target.connector, entry.cursor, self.target.window)
            except BaseException as exc:
                entry.future.set_exception(exc)
                return
            finally:
                self.fetch_seconds = time.monotonic() - started
                otel_context.detach(token)
            following = None
            if page.has_more and page.next_cursor is not None:
                with self._lock:  # the next page's entry exists before this page is handed over
                    while len(self._queue) >= self.ahead and not cancel.is_set():
                        self._lock.wait(0.5)
                    if not cancel.is_set():
                        following = self._entry(page.next_cursor)
                        self._queue.append(following)
            entry.future.set_result(page)
            if following is None:
                return
            entry = following

    def _drop(self) -> None:
        with self._lock:
            dropped, self._queue = list(self._queue), deque()
            if self._cancel is not None:
                self._cancel.set()
            self._lock.notify_all()
        for entry in dropped:
            entry.future.cancel()
            entry.span.set_attribute("syncd.prefetch.dropped", True)
            entry.future.add_done_callback(_ender(entry.span))  # now, or when its request ends


def _ender(span: trace.Span) -> Callable[[Future[Page]], None]:
    return lambda _: span.end()


class LeaseKeeper:
    """Renews a held lease from a background thread every third of its length while a tick works.

    Page commits renew the lease too; the keeper covers a page slower than the lease (slow handlers, an
    overloaded host), which another replica would otherwise take over mid-page and fence out, over and over,
    so that no replica ever commits. Safety never depends on it: commits stay fenced on the token. It gives
    up once no page has committed for ``STALL_LEASES`` lease lengths, so a hung tick still loses its lease
    (and a paused process pauses its keeper with it). PostgreSQL only: on SQLite the page holds the single
    write lock, so nobody can take a lease mid-page, and the keeper could not write either.
    """

    STALL_LEASES = 10

    def __init__(self, engine: SyncEngine, key: str, token: int) -> None:
        self.engine, self.key, self.token = engine, key, token
        self.lost = False
        self._done = threading.Event()
        self._progress = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.engine.db.dialect.name == "postgresql":
            self._thread = threading.Thread(target=self._run, name=f"lease-keeper:{self.key}", daemon=True)
            self._thread.start()

    def check(self) -> None:
        """Called between pages: a page committed (progress), and fail fast if the lease is known lost."""
        self._progress = time.monotonic()
        if self.lost:
            raise LeaseLostError(self.key)

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        seconds = self.engine.lease_seconds
        while not self._done.wait(seconds / 3):
            if time.monotonic() - self._progress > self.STALL_LEASES * seconds:
                log.warning("no page of %s committed for %.0fs; no longer renewing its lease", self.key,
                            time.monotonic() - self._progress, extra={"source": self.key})
                return
            try:
                with self.engine.db.begin() as conn:
                    kept = store.renew_lease(conn, self.key, token=self.token, owner=self.engine.replica_id,
                                             now=self.engine.clock.now(), seconds=seconds)
            except Exception as exc:  # the database may be down: the page will fail on its own
                log.warning("could not renew the lease of %s: %s", self.key, error_text(exc),
                            extra={"source": self.key})
                continue
            if not kept:
                self.lost = True
                return


# ---- pure decisions ------------------------------------------------------------------------------


def _event_spans(wf: Workflow, events: Sequence[Event], batch: trace.SpanContext, start_ns: int,
                 end_ns: int, parents: Mapping[str, trace.Span]) -> None:
    """Each event of a batch gets its ``event.process › workflow.run`` spans under its page's span, as a
    per-event run would, so Jaeger finds every event by its id. They cover the batch's time and link to its
    ``workflow.batch``."""
    links = [trace.Link(batch)]
    for event in events:
        attributes = {
            "messaging.message.id": event.id, "messaging.operation.type": "process",
            "messaging.system": event.provider, "messaging.destination.name": event.stream,
            "syncd.event.type": event.type, "syncd.stream": event.stream,
        }
        process = tracer.start_span("event.process", context=trace.set_span_in_context(parents[event.id]),
                                    kind=SpanKind.CONSUMER, start_time=start_ns, attributes=attributes)
        run = tracer.start_span("workflow.run", context=trace.set_span_in_context(process), start_time=start_ns,
                                links=links, attributes={
                                    "syncd.workflow": wf.name, "syncd.workflow.version": wf.version,
                                    "syncd.attempt": 1, "syncd.batch": True, "syncd.outcome": "succeeded"})
        run.end(end_time=end_ns)
        process.end(end_time=end_ns)


def last_cursor(cursor: str | None, group: Sequence[tuple[trace.Span, Page]]) -> str | None:
    """The cursor after the pages of ``group`` (a page without a next cursor leaves it where it was)."""
    for _, page in reversed(group):
        if page.next_cursor is not None:
            return page.next_cursor
    return cursor


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
    events = list(events)
    if len({event.id for event in events}) == len(events):
        return events  # the usual case, found without a Python-level loop of look-ups and appends
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


class RunScope:
    """A run's (or a batch's) SAVEPOINT on the page's connection, and the ORM Session opened inside it only
    if the workflow uses ``ctx.db`` (cheap when it does not: built-in mirrors write through the connection)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.savepoint = conn.begin_nested()
        self._session: Session | None = None

    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.conn, join_transaction_mode="create_savepoint")
        return self._session

    def commit(self) -> None:
        """Flush the session and release its SAVEPOINT, then the run's."""
        if self._session is not None:
            self._session.commit()
        self.savepoint.commit()

    def rollback(self) -> None:
        """Undo the run's writes: the session's own SAVEPOINT (if one was opened), then the run's."""
        if self._session is not None:
            self._session.rollback()
        if self.savepoint.is_active:
            self.savepoint.rollback()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def interrupted(conn: Connection, key: RunKey, interrupt: Interrupt, attempt: int, max_attempts: int,
                now: datetime) -> tuple[str, datetime | None, str | None]:
    """Store what a step checkpoint or a sleep carries; return (status, next attempt, error)."""
    if isinstance(interrupt, Sleep):
        if interrupt.new is not None:
            store_results(conn, key, {interrupt.name: interrupt.new}, now)
        return "sleeping", interrupt.wake_at, None
    assert isinstance(interrupt, Checkpoint)
    store_results(conn, key, interrupt.results, now)
    if interrupt.error is not None:
        status, next_at = run_outcome(interrupt.error, attempt, max_attempts, now)
        return status, next_at, interrupt.error
    return "pending", now, None


def run_backoff(attempt: int) -> timedelta:
    delay: timedelta = RUN_BACKOFF_BASE * (2 ** (attempt - 1))
    return min(delay, RUN_BACKOFF_CAP)


def window_progress(window: Window, reached: datetime) -> float:
    span = (window.end - window.start).total_seconds()
    return min(1.0, max(0.0, (reached - window.start).total_seconds() / span)) if span > 0 else 1.0


def ledger_row(event: Event, now: datetime) -> dict[str, Any]:
    return {"stream": event.stream, "event_id": event.id, "type": event.type, "action": event.action,
            "occurred_at": event.occurred_at, "recorded_at": now,
            "payload": event.data if type(event.data) is dict else dict(event.data)}


def event_from_ledger(stream: str, row: dict[str, Any]) -> Event:
    return Event(stream=stream, id=row["event_id"], type=row["type"], occurred_at=row["occurred_at"],
                 data=row["payload"], action=row.get("action"))


def bound_idle_time(conn: Connection, lease_seconds: float) -> None:
    """On PostgreSQL, have the server end this transaction if it sits idle for two lease lengths.

    A replica paused or cut off in the middle of a page keeps that page's row locks (its ledger rows), and
    the replica that took its expired lease over would wait on them for as long as the pause lasts; the
    paused one's commit is fenced out anyway. Two leases, not one: a live replica's keeper holds its lease
    through slow pages, so a handler may legitimately spend a while without SQL (an HTTP call). ``SET
    LOCAL`` is scoped to the transaction, so it also works through transaction-mode connection poolers.
    (SQLite has one writer at a time: nothing to bound.)
    """
    if conn.dialect.name == "postgresql":
        millis = max(1000, int(2 * lease_seconds * 1000))
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {millis}")


def warn_slow_page(source: str, seconds: float, lease_seconds: float) -> None:
    """A page should finish within the lease; past it, only the lease keeper (PostgreSQL) keeps it ours."""
    if seconds > lease_seconds:
        log.warning("a page of %s took %.1fs, more than the %.0fs lease (SYNCD_LEASE_SECONDS); consider "
                    "raising it", source, seconds, lease_seconds, extra={"source": source})


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
