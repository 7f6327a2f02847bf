"""Running workflows: one on one event (``Runner.run``), a batch workflow on many (``Runner.run_batch``).

Each run executes in a SAVEPOINT of the transaction it is given (a page's, a due run's, a replay's), so a
failing handler rolls back its own writes only; its failure is data, returned in its ``RunRecord``
(retried, then dead-lettered), never raised. Writing the records is the caller's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncd.contracts import Event, RunRecord, RunStatus, RunTxn
from syncd.engine.decisions import error_text, interrupt_outcome, run_outcome
from syncd.engine.results import RunTally
from syncd.engine.tracing import EventTraces, process_attributes, trace_id_of, tracer
from syncd.payloads import exception_attributes, without_payload
from syncd.settings import Integrations
from syncd.workflows import BatchContext, Context, Workflow
from syncd.workflows.outbound import Outbound
from syncd.workflows.steps import Interrupt, RunKey, StepRuntime

log = logging.getLogger("syncd.engine")

#: Rounds of due-run processing per tick (each round is one transaction over up to 200 runs), and steps a
#: replayed durable run may take in its transaction.
MAX_RESUME_ROUNDS = 50


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


@dataclass
class Runner:
    """Runs workflows for an engine: its clock, default attempts and the integrations workflows call."""

    now: Callable[[], datetime]
    max_attempts: int
    integrations: Integrations
    outbound: Outbound | None = None  # the process's shared integration clients (None: the default one)

    def run(self, txn: RunTxn, wf: Workflow, event: Event, *, attempt: int, now: datetime,
            max_attempts: int | None = None, defer_steps: bool = False,
            parent: otel_context.Context | None = None) -> RunRecord:
        """Run one workflow on one event in a SAVEPOINT of ``txn``; return its run (never raises for the
        handler). ``max_attempts`` overrides the workflow's retries (a replay's failure is final: dead again).
        ``parent``: the event's trace to run in (``EventTraces``); else an ``event.process`` of its own."""
        started = time.perf_counter()
        conn = txn.conn
        with _process_span(event, parent), \
                tracer.start_as_current_span("workflow.run", attributes={
                    "syncd.workflow": wf.name, "syncd.workflow.version": wf.version, "syncd.attempt": attempt,
                }) as span:
            trace_id = trace_id_of(span.get_span_context())
            scope = RunScope(conn)
            steps = StepRuntime(txn=txn, key=RunKey(wf.name, event.stream, event.id), now=self.now,
                                defer_new=defer_steps)
            interrupt: Interrupt | None = None
            ctx = Context(db=scope.session, event=event, workflow=wf, span=span, attempt=attempt, steps=steps,
                          integrations=self.integrations, connection=conn, outbound=self.outbound)
            try:
                wf(event, ctx)
                scope.commit()  # the transaction commits later
                error = None
            except Interrupt as signal_:  # a step completed or a sleep began: store it, resume later
                scope.rollback()
                interrupt, error = signal_, None
            except Exception as exc:  # the handler's failure is data: recorded, retried, dead-lettered
                if conn.invalidated:  # unless the page's connection died (outage, server timeout): not the
                    raise  # handler's fault, and the page cannot commit; fail it now, it is fetched again
                scope.rollback()
                error = without_payload(error_text(exc), event.data)  # SYNCD_LOG_PAYLOADS (syncd.payloads)
                span.record_exception(exc, attributes=exception_attributes(exc, event.data))
                span.set_status(Status(StatusCode.ERROR, error))
            finally:
                scope.close()
                ctx.close()
            limit = max_attempts or wf.retries or self.max_attempts
            if interrupt is None:
                status, next_at = run_outcome(error, attempt, limit, now)
            else:
                results, status, next_at, error = interrupt_outcome(interrupt, attempt, limit, now)
                txn.store_steps(steps.key, results, now)  # outside the rolled-back SAVEPOINT
                if error is not None:
                    span.set_status(Status(StatusCode.ERROR, error))
            span.set_attribute("syncd.outcome", status.value)
            if error is not None and not status.suspended:  # in the span: the line carries the event's trace
                log.warning("workflow %s failed on %s (attempt %d, now %s): %s", wf.name, event.id, attempt,
                            status, error, extra={"workflow": wf.name, "event_id": event.id})
        return RunRecord(wf.name, event.stream, event.id, wf.version, status, attempt, next_at, error, trace_id,
                         now, self.now(), (time.perf_counter() - started) * 1000)

    def run_batch(self, txn: RunTxn, wf: Workflow, events: list[Event], *, now: datetime,
                  traces: EventTraces) -> tuple[RunRecord | None, list[RunRecord]]:
        """Run ``wf``'s batch handler on a page's new events for it, in one SAVEPOINT of ``txn``.

        Returns ``(template, [])`` when it succeeded: every event's run is ``template`` with its event id.
        If the batch raises, its writes roll back and every event goes through the per-event handler in
        its own SAVEPOINT, so a bad event fails alone and its neighbours still succeed, exactly as if
        there were no batch handler: then ``(None, their runs)``.
        """
        assert wf.batch is not None
        conn = txn.conn
        started = time.perf_counter()
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
            records = []
            for event in events:
                records.append(self.run(txn, wf, event, attempt=1, now=now, defer_steps=True,
                                        parent=traces.context(event, wf.name)))
            return None, records
        finished = self.now()
        share_ms = (time.perf_counter() - started) * 1000 / len(events)
        traces.batched(wf.name, events, span_context)
        # One stream: a transaction is one target's pages.
        return RunRecord(wf.name, events[0].stream, "", wf.version, RunStatus.SUCCEEDED, 1, None, None,
                         trace_id_of(span_context), now, finished, share_ms), []

    def run_again(self, txn: RunTxn, wf: Workflow, event: Event, *, attempt: int,
                  parent: otel_context.Context | None = None) -> RunRecord:
        """Run ``wf`` on ``event`` once more in a SAVEPOINT of ``txn`` (``syncd replay``), in the trace
        ``parent`` (the event's: ``syncd.ops.replay``).

        Returns the run: ``succeeded``, or ``dead`` again (a manual re-run never re-enters the automatic
        retries); the caller saves it and commits.
        """
        for _ in range(MAX_RESUME_ROUNDS):  # a durable run goes on step by step in this transaction
            outcome = self.run(txn, wf, event, attempt=attempt, now=self.now(), max_attempts=attempt,
                               parent=parent)
            if outcome.status is not RunStatus.PENDING:
                break
        return outcome


@contextmanager
def _process_span(event: Event, parent: otel_context.Context | None) -> Iterator[None]:
    """Inside the event's trace (``parent``), or else inside an ``event.process`` span of its own."""
    if parent is None:
        with tracer.start_as_current_span("event.process", kind=SpanKind.CONSUMER,
                                          attributes=process_attributes(event)):
            yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def tally_batch(template: RunRecord | None, fallback: list[RunRecord], events: int) -> RunTally:
    """The outcomes of a batch: all succeeded, or those of its one-by-one fallback."""
    return RunTally(ok=events) if template is not None else RunTally.of(fallback)
