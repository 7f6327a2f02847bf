"""``SyncEngine``: one tick of one cursor, as the README's diagram reads: claim → pages → runs → release.

Per group of pages, one transaction (``Lease.page``): ledger insert → each batch workflow on all its
events in a SAVEPOINT, every other matching workflow without a run for the event in its own SAVEPOINT →
run rows → cursor move fenced on the lease token → commit. So the cursor moves only with the page's
effects (no event lost), and the run table makes effects exactly-once. Then the stream's due runs (retries,
durable steps, woken sleeps), each in its own transaction. The store does the SQL (``syncd.contracts.Store``),
``pages`` the fetching, ``runner`` the workflows, ``decisions`` the choices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from syncd.contracts import (
    Clock,
    Connector,
    CursorSpec,
    Event,
    Lease,
    Page,
    PageTxn,
    RunRecord,
    RunTxn,
    Skip,
    SkipReason,
    Store,
    SystemClock,
    TickRecord,
    Window,
)
from syncd.engine.decisions import (
    cursor_key,
    default_replica_id,
    error_text,
    last_cursor,
    pause_of,
    unique_events,
    window_progress,
)
from syncd.engine.emptypage import empty_end, hold_for_release
from syncd.engine.executor import Executor
from syncd.engine.idlebatch import TickBatch, settle
from syncd.engine.lease import LeaseKeeper
from syncd.engine.pages import Group, Pager, Prefetcher
from syncd.engine.queueing import next_seq, queued_run
from syncd.engine.results import PageResult, RunTally, TickResult
from syncd.engine.runner import Runner, tally_batch
from syncd.engine.statements import note_quarantined, purpose
from syncd.engine.ticklog import TickLog
from syncd.engine.tracing import EventTraces, page_span, sync_attributes, tick_attributes, tracer
from syncd.engine.workers import WorkerPool
from syncd.errors import LeaseLostError
from syncd.settings import GROUP_EVENTS, GROUP_SECONDS, PREFETCH_PAGES, Integrations
from syncd.workflows import Registry, Workflow
from syncd.workflows.outbound import Outbound

log = logging.getLogger("syncd.engine")


@dataclass(frozen=True)
class Target:
    """Which cursor a sync drives: the live one of a source, or a backfill window of it."""

    connector: Connector
    window: Window | None = None
    workflow: str | None = None  # backfills may be restricted to one workflow

    @property
    def key(self) -> str:
        return cursor_key(self.connector.key, self.window, self.workflow)

    @property
    def spec(self) -> CursorSpec:
        return CursorSpec(self.key, self.connector.key, self.window, self.workflow)


class SyncEngine:
    """Syncs cursors into ``store`` (``syncd.store.SqlStore``), dispatching their events to ``registry``.

    Batching options (``App.build`` takes them from the settings): ``group_events`` and ``group_seconds`` bound
    a catch-up's transaction (``SYNCD_GROUP_EVENTS``/``SYNCD_GROUP_SECONDS``; ``group_events=1``: one page
    per transaction). ``max_pages`` ends every tick after that many pages, released as a crash right after
    that commit would leave it (the next tick resumes from the cursor); ``sync`` takes it per tick too.
    ``on_page(target, page)`` (an attribute too, which may be set or cleared between ticks) is called after
    each page the tick committed, on the ticking thread."""

    def __init__(self, store: Store, registry: Registry, *, clock: Clock | None = None,
                 replica_id: str | None = None, lease_seconds: float = 180, max_attempts: int = 5,
                 stop: threading.Event | None = None, max_pages: int | None = None,
                 on_page: Callable[[Target, Page], None] | None = None, integrations: Integrations | None = None,
                 prefetch_pages: int = PREFETCH_PAGES, outbound: Outbound | None = None,
                 drain_workers: int = 1, group_events: int = GROUP_EVENTS,
                 group_seconds: float = GROUP_SECONDS) -> None:
        self.store = store
        self.db = store.db  # for ``ops`` readers
        self.integrations = integrations if integrations is not None else Integrations()  # for workflows' calls
        #: The process's shared integration clients and rate limits (None: the process-wide default one).
        self.outbound = outbound
        self.registry = registry
        self.clock = clock or SystemClock()
        self.replica_id = replica_id or default_replica_id()
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.stop = stop or threading.Event()
        self.max_pages = max_pages  # every tick stops after N pages, as a crash after that commit would
        self.group_events, self.group_seconds = group_events, group_seconds  # see Pager.group
        self.prefetch_pages = prefetch_pages  # SYNCD_PREFETCH_PAGES; see _page_loop
        self.drain_workers = drain_workers  # SYNCD_WORKERS: runs in flight when a tick runs its own (see _drain)
        self.on_page = on_page
        self.runner = Runner(now=self.clock.now, max_attempts=max_attempts, integrations=self.integrations,
                             outbound=outbound)
        self.executor = Executor(store, registry, self.clock, max_attempts, self.integrations, lease_seconds,
                                 outbound)
        #: The process's worker pool when it has one (``syncd run``, ``syncd once``): ticks then only record
        #: runs and wake it. Without one, a tick executes its stream's due runs itself before it returns.
        self.workers: WorkerPool | None = None
        self._own_workers: WorkerPool | None = None
        self.ticklog = TickLog()  # the operator's log lines: one per tick, progress, idle summaries

    # ---- one cursor, one tick ------------------------------------------------------------------

    def sync(self, target: Target | Connector, *, fetch: bool = True, max_pages: int | None = None,
             batch: TickBatch | None = None) -> TickResult:
        """One tick of ``target``: claim, pages (unless ``fetch`` is False: then only its due runs), due runs,
        release. Never raises: a failure is in the result (and recorded on the cursor). ``max_pages`` (else
        the engine's) ends the tick after that many pages, caught up or not. A member of ``batch`` (a daemon
        walk's) takes its lease from it and, idle, leaves its release to it (``syncd.engine.idlebatch``)."""
        if not isinstance(target, Target):
            target = Target(target)
        result = TickResult(source=target.key)
        started = self.clock.now()
        with tracer.start_as_current_span("source.sync",
                                          attributes=sync_attributes(target.key, target.connector.key)) as span:
            held: Lease | None = None
            try:
                held = self._sync(target, result, fetch=fetch, batch=batch,
                                  max_pages=self.max_pages if max_pages is None else max_pages)
            except Exception as exc:  # recorded on the source and the tick; never escapes a tick
                result.ok = False
                result.error = error_text(exc)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, result.error))
                self._record_failure(target, exc)
                log.error("sync of %s failed: %s", target.key, result.error, extra={"source": target.key})
            span.set_attributes(tick_attributes(result))
            if result.skip is None or result.skip.reason is not SkipReason.LEASE_HELD:
                self._record_tick(result, started, held, batch)
        self.ticklog.finished(result, (self.clock.now() - started).total_seconds())
        return result

    def _sync(self, target: Target, result: TickResult, *, fetch: bool, max_pages: int | None,
              batch: TickBatch | None = None) -> Lease | None:
        """The tick's work; returns the lease still to release when it can go with the tick's record (a tick
        that ran well, with a worker pool to hand its runs to: one transaction less)."""
        spec = target.spec
        if target.window is not None:
            spec = replace(spec, workflows=self.window_workflows(target))
        lease = ((batch.take(target.key) if batch is not None else None)
                 or self.store.claim(spec, owner=self.replica_id, lease_seconds=self.lease_seconds, clock=self.clock))
        if isinstance(lease, Skip):
            result.skip = lease
            result.caught_up = lease.reason is SkipReason.DONE
            return None
        result.cursor_before = lease.cursor
        keeper = LeaseKeeper(lease.key, lease.renew, self.lease_seconds, enabled=self.store.concurrent_writers)
        done = False
        try:
            keeper.start()
            if fetch:
                self._page_loop(target, lease, result, keeper, max_pages)
            done = self.workers is not None
        finally:
            keeper.stop()
            if not done:
                self._release(lease)
            # The runs of the pages committed before a failure are due as well (the tick's error stays the
            # one reported; a drain that fails on top of it only logs).
            if self.workers is None and not self.stop.is_set():
                self._drain(target.connector.key, result)
        return lease if done else None

    def _release(self, lease: Lease) -> None:
        """Give the lease back. Best effort: if the database is down, the owner lock still goes (so the next
        claim takes the lease over at once), and the tick's own error (not this one) is what gets reported;
        but a held cursor move fenced out (``LeaseLostError``) fails the tick, as a page's would."""
        try:
            lease.release()
        except LeaseLostError:  # an empty page's held cursor move was fenced out: the tick fails on it
            raise
        except Exception as exc:
            log.warning("could not release the lease of %s (the next claim takes it over): %s", lease.key,
                        error_text(exc),
                        extra={"source": lease.key})

    def _page_loop(self, target: Target, lease: Lease, result: TickResult, keeper: LeaseKeeper,
                   max_pages: int | None) -> None:
        # While pages commit, the next one is already being fetched (connectors that allow it), once the
        # provider is slow enough for it to pay: a page that took PREFETCH_AFTER_SECONDS to arrive. On a
        # fast loopback the thread hand-offs would cost more CPU than they hide. A prefetched page is only a
        # read; it is committed in order, after the pages before it, or dropped if they fail.
        # Only where writers run concurrently (PostgreSQL): SQLite has one write lock for the whole file, and
        # a page that is ready the moment the last one commits takes it straight back, starving every other
        # connection (a backfill or a second process, `syncd status`); the fetch between commits lets them in.
        connector, key, cursor = target.connector, target.key, lease.cursor
        parent = otel_context.get_current()  # source.sync's: every page span is its child, prefetched or not

        def fetch(at: str | None) -> Page:
            return self._fetch(connector, at, target.window)

        def new_span() -> trace.Span:
            return page_span(key, connector.key, parent)

        prefetch = (Prefetcher(key, fetch, new_span, parent, ahead=self.prefetch_pages, stop=self.stop)
                    if self.prefetch_pages > 0 and getattr(connector, "prefetch", False)
                    and self.store.concurrent_writers else None)
        pager = Pager(key, fetch, new_span, prefetch, self.stop, self.group_events, self.group_seconds)
        try:
            while not self.stop.is_set():
                room = None if max_pages is None else max_pages - result.pages
                if room is not None and room <= 0:
                    return
                keeper.check()
                started = time.monotonic()
                group, failure = pager.group(cursor, room)
                last = group[-1][1]
                if (prefetch is not None and prefetch.pays() and last.has_more and failure is None
                        and (room is None or len(group) < room)):
                    prefetch.start(last_cursor(cursor, [page for _, page in group]))
                try:
                    if target.window is None and failure is None and empty_end(group):
                        result.add_page(hold_for_release(lease, group))
                    else:
                        with trace.use_span(group[-1][0], end_on_exit=False):  # SQL and batch spans: the last page's
                            result.add_page(self._commit(target, lease, group))
                finally:
                    for span, _ in group:
                        span.end()
                warn_slow_page(key, time.monotonic() - started, self.lease_seconds)
                self.ticklog.page(result)
                for _, page in group:
                    if page.next_cursor is not None:
                        cursor = page.next_cursor
                    result.cursor_after = cursor
                    if self.on_page is not None:
                        self.on_page(target, page)
                if failure is not None:  # the pages before it are committed; the tick fails on it now
                    raise failure
                if not last.has_more:
                    result.caught_up = True
                    if target.window is not None:
                        lease.mark_done(self.window_workflows(target))
                    return
        finally:
            if prefetch is not None:
                prefetch.close()

    def _fetch(self, connector: Connector, cursor: str | None, window: Window | None) -> Page:
        return connector.fetch_page(cursor, window)

    # ---- one group of pages, one transaction ----------------------------------------------------

    def _commit(self, target: Target, lease: Lease, group: Group) -> PageResult:
        """One transaction for the pages of ``group``: ledger, runs, every workflow's effects, the cursor.
        Each event's spans go under its own page's span."""
        now = self.clock.now()
        batch = unique_events(event for _, page in group for event in page.events)
        span_of = {event.id: span for span, page in reversed(group) for event in page.events}
        pages = [page for _, page in group]
        held = [entry for page in pages for entry in page.quarantined]
        ids = [event.id for event in batch]
        traces = EventTraces(span_of)  # each event's own trace, linked to its page's span
        with traces.finishing(), tracer.start_as_current_span("page.transaction", attributes={
                "syncd.pages": len(group), "messaging.batch.message_count": len(batch)}), \
                lease.page(target.connector.key) as txn:
            with purpose("ledger insert", ids):
                recorded = txn.record_events(batch, now)
            with purpose("quarantine insert", [q.event_id or "?" for q in held]):
                txn.quarantine(held, now)
            dropped = recorded.quarantined | recorded.expired  # no workflow runs on these
            stored = [e for e in batch if e.id not in dropped] if dropped else batch
            note_quarantined(target.key, held, recorded.quarantined)
            runs = self._dispatch(txn, target, stored, recorded.new, now, traces)
            progress = window_progress(target.window, batch[-1].occurred_at) if target.window and batch else None
            with purpose("cursor update", ids[-1:]):
                txn.advance(last_cursor(None, pages), meta=next((p.meta for p in reversed(pages) if p.meta), None),
                            new_events=len(recorded.new), progress=progress)
        if batch and self.workers is not None:  # events seen before may get runs too (a workflow added since)
            self.workers.wake()  # committed: this process's workers claim the page's runs now
        return PageResult(pages=len(group), events=len(batch), new_events=len(recorded.new),
                          skipped=sum(p.skipped for p in pages) + len(dropped), runs=runs,
                          lag_seconds=max(0.0, (now - batch[-1].occurred_at).total_seconds()) if batch else None)

    def _dispatch(self, txn: PageTxn, target: Target, batch: Sequence[Event], new_ids: set[str], now: datetime,
                  traces: EventTraces) -> RunTally:
        """Run the matching workflows without a run yet on ``batch``'s events, and write their runs."""
        matching = [(event, self._workflows_for(event, target)) for event in batch]
        # Runs are only ever created in the transaction that records their event, or after it: an event
        # new to the ledger has none, so only the events seen before need looking up (none, catching up).
        seen = [e.id for e in batch if e.id not in new_ids]
        with purpose("run lookup", seen):
            done = txn.existing_runs({wf.name for _, wfs in matching for wf in wfs}, seen)
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
        records: list[RunRecord] = []
        tally = RunTally()
        # Batch workflows (the built-in mirrors) apply all the events first, so per-event workflows
        # that read the mirrors see every event of the transaction applied.
        for wf, events in batches.values():
            template, fallback = self.runner.run_batch(txn, wf, events, now=now, traces=traces)
            tally += tally_batch(template, fallback, len(events))
            records.extend(fallback)
            if template is not None:
                _write_batch_runs(txn, template, events)
        singles_from = len(records)
        seq = next_seq(len(singles))
        for wf, event in singles:
            seq += 1
            if not wf.inline:  # the default: the workers run it, in its own transaction
                queued = queued_run(wf, event, now, seq)
                # its attempts join the event's trace, whenever and wherever they run
                records.append(queued._replace(trace_id=traces.trace_id(event, wf.name)) if traces.on else queued)
                continue
            # A page's transaction spans many events: a step's side effect is not run inside it (its
            # stored result would only commit with the whole page). It is deferred to the queue.
            records.append(self.runner.run(txn, wf, event, attempt=1, now=now, defer_steps=True,
                                           parent=traces.context(event, wf.name)))
        with purpose("run insert", [r.event_id for r in records]):
            txn.write_runs(records)
        return tally + RunTally.of(records[singles_from:])

    def window_workflows(self, target: Target) -> frozenset[str]:
        """The workflows a window's events go to now: its one workflow, or every workflow of its source."""
        if target.workflow is not None:
            return frozenset([target.workflow])
        key = target.connector.key
        provider = key.split(":", 1)[0]
        return frozenset(wf.name for wf in self.registry.all() if wf.trigger.provider == provider
                         and (wf.trigger.streams is None or key in wf.trigger.streams))

    def _workflows_for(self, event: Event, target: Target) -> list[Workflow]:
        matching = self.registry.matching(event)
        if target.workflow is not None:
            matching = [wf for wf in matching if wf.name == target.workflow]
        return matching

    def run_again(self, txn: RunTxn, wf: Workflow, event: Event, *, attempt: int,
                  parent: otel_context.Context | None = None) -> RunRecord:
        """See ``Runner.run_again`` (``syncd replay``)."""
        return self.runner.run_again(txn, wf, event, attempt=attempt, parent=parent)

    # ---- runs, without a worker pool ----------------------------------------------------------------

    def _drain(self, stream: str, result: TickResult) -> None:
        """Execute the stream's runs due now, ``drain_workers`` at a time, as the worker pool would (a tick
        without one: ``syncd backfill``, tests)."""
        if self._own_workers is None:
            self._own_workers = WorkerPool(self.store, self.registry, self.executor, workers=self.drain_workers,
                                           clock=self.clock,
                                           lease_seconds=self.lease_seconds, replica_id=self.replica_id,
                                           stop=self.stop)
        try:
            drained = self._own_workers.drain(stream=stream, wait_within=0)
        except Exception as exc:  # the database went away: the runs stay queued for the next tick
            log.warning("could not run the queued runs of %s: %s", stream, error_text(exc))
            return
        result.add_runs(drained.by_stream.get(stream, RunTally()))

    # ---- bookkeeping --------------------------------------------------------------------------

    def _record_failure(self, target: Target, exc: Exception) -> None:
        now = self.clock.now()
        pause_until, pause_reason = pause_of(exc, now)
        try:
            self.store.record_failure(target.key, now, error_text(exc), pause_until=pause_until,
                                      pause_reason=pause_reason)
        except Exception as db_exc:  # the database itself may be what failed
            log.error("could not record the failure of %s: %s", target.key, error_text(db_exc))

    def _record_tick(self, result: TickResult, started: datetime, lease: Lease | None = None,
                     batch: TickBatch | None = None) -> None:
        """Record the tick (and release ``lease`` in the same transaction, if given: ``idlebatch.settle``);
        an idle tick of ``batch`` leaves both to the batch's flush."""
        try:
            tick = TickRecord(
                source=result.source, replica=self.replica_id, started_at=started, finished_at=self.clock.now(),
                ok=result.ok, pages=result.pages, events=result.events, new_events=result.new_events,
                runs_ok=result.runs_ok, runs_failed=result.runs_failed, skipped=result.skipped,
                lag_seconds=result.lag_seconds, error=result.error)
            succeeded = result.ok and result.skip is None
            if lease is not None and batch is not None and result.events == 0 and result.skipped == 0:
                batch.hold(lease, tick, succeeded)
            elif lease is not None and (error := settle(self, lease, tick, succeeded)) is not None:
                result.ok, result.error = False, error
            elif lease is None:
                self.store.record_tick(tick, succeeded=succeeded)
        except Exception as exc:
            log.error("could not record the tick of %s: %s", result.source, error_text(exc))

def _write_batch_runs(txn: PageTxn, template: RunRecord, events: Sequence[Event]) -> None:
    by_stream: dict[str, list[str]] = {}
    for event in events:
        by_stream.setdefault(event.stream, []).append(event.id)
    for stream, event_ids in by_stream.items():  # one stream: a transaction is one target's pages
        txn.write_batch_runs(template._replace(stream=stream), event_ids)


def warn_slow_page(source: str, seconds: float, lease_seconds: float) -> None:
    """A page should finish within the lease; past it, only the lease keeper (PostgreSQL) keeps it ours."""
    if seconds > lease_seconds:
        log.warning("a page of %s took %.1fs, more than the %.0fs lease (SYNCD_LEASE_SECONDS); consider "
                    "raising it", source, seconds, lease_seconds, extra={"source": source})
