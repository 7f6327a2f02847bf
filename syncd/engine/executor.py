"""Executing one claimed run: the worker's side of the run queue (``syncd.store.queue``).

A run's ``ctx.db`` writes and its new status commit in one transaction, fenced on the worker's claim
(``ClaimTxn.finish``), so its effects commit exactly once even when two workers end up holding it (one
frozen past its claim's expiry): the late one's commit is refused and rolled back whole.

That transaction opens only when the workflow first touches ``ctx.db`` (or at the end, for the status):
a run that calls services and then writes holds no connection and no lock while it waits on the network.
Steps completed before any ``ctx.db`` write are stored at once, each in a short fenced transaction, and
the code goes on; a step completed after one is a checkpoint: the writes roll back, the step's result is
stored, and the workflow runs again from the top (its completed steps return their stored results), up
to ``MAX_RESUME_ROUNDS`` times in this claim.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import Status, StatusCode
from sqlalchemy.orm import Session

from syncd import telemetry_spans
from syncd.contracts import ClaimedRun, ClaimTxn, Clock, RunKey, RunRecord, RunStatus, Store
from syncd.engine.decisions import error_text, run_outcome
from syncd.engine.runner import MAX_RESUME_ROUNDS, RunScope
from syncd.engine.tracing import attempt_context, trace_id_of, tracer
from syncd.errors import ClaimLostError
from syncd.payloads import exception_attributes, without_payload
from syncd.settings import Integrations
from syncd.workflows import Context, Registry, Workflow
from syncd.workflows.outbound import Deferred, Outbound
from syncd.workflows.steps import Checkpoint, Interrupt, Sleep, StepRuntime

log = logging.getLogger("syncd.engine")


class _Rollback(Exception):
    """Passed to a transaction's context manager to end it with a rollback."""


class ClaimScope:
    """The claimed run's transaction, opened on first use (``session``/``txn``), committed by ``finish``."""

    def __init__(self, store: Store, claimed: ClaimedRun, lease_seconds: float, clock: Clock) -> None:
        self._store, self._claimed, self._lease, self._clock = store, claimed, lease_seconds, clock
        self._stack: ExitStack | None = None
        self._txn: ClaimTxn | None = None
        self._scope: RunScope | None = None

    @property
    def opened(self) -> bool:
        return self._txn is not None

    def txn(self) -> ClaimTxn:
        if self._txn is None:
            stack = ExitStack()
            self._txn = stack.enter_context(self._store.claimed(self._claimed, lease_seconds=self._lease,
                                                                clock=self._clock))
            self._stack = stack
        return self._txn

    def session(self) -> Session:
        if self._scope is None:
            self._scope = RunScope(self.txn().conn)
        return self._scope.session()

    def finish(self, record: RunRecord, steps: dict[str, Any] | None = None) -> None:
        """Commit the run's writes (if any), ``steps`` and its new state together, or raise (rolled back)."""
        txn = self.txn()
        try:
            if self._scope is not None:
                self._scope.commit()
            if steps:
                txn.store_steps(self._claimed.key, steps, record.finished_at or self._clock.now())
            txn.finish(record)
        except BaseException:
            self.rollback()
            raise
        self._close(None)

    def rollback(self) -> None:
        if self._scope is not None:
            self._scope.rollback()
        self._close(_Rollback())

    def _close(self, error: BaseException | None) -> None:
        stack, self._stack, self._txn = self._stack, None, None
        if self._scope is not None:
            self._scope.close()
            self._scope = None
        if stack is not None:
            if error is None:
                stack.close()
            else:
                stack.__exit__(type(error), error, None)


@dataclass
class Executor:
    """Executes claimed runs of ``registry``'s workflows against ``store``."""

    store: Store
    registry: Registry
    clock: Clock
    max_attempts: int
    integrations: Integrations
    lease_seconds: float
    outbound: Outbound | None = None  # the process's shared integration clients (None: the default one)

    def execute(self, claimed: ClaimedRun) -> RunRecord | None:
        """Run ``claimed`` (possibly several steps of it) and commit its outcome; None if the claim was lost
        or its outcome could not be written (the claim then expires and the run is due again)."""
        wf = self.registry.get(claimed.due.workflow)
        if wf is None:  # not ours any more (claims only name registered workflows): let it expire
            return None
        parent, root = attempt_context(claimed.due.event, claimed.trace_id)
        token = telemetry_spans.attach(parent)  # every line logged about the run carries its event's trace
        try:
            return self._execute(wf, claimed)
        except ClaimLostError as exc:
            log.warning("%s", exc, extra={"workflow": wf.name, "event_id": claimed.due.event.id})
        except Exception as exc:  # the database, not the workflow: the claim expires and the run is due again
            log.error("could not record run %s on %s: %s", wf.name, claimed.due.event.id, error_text(exc),
                      extra={"workflow": wf.name, "event_id": claimed.due.event.id})
        finally:
            telemetry_spans.detach(token)
            if root is not None:
                root.end()
        return None

    def _execute(self, wf: Workflow, claimed: ClaimedRun) -> RunRecord:
        event, attempt = claimed.due.event, claimed.due.next_attempt
        limit = wf.retries or self.max_attempts
        started_at, started = self.clock.now(), time.perf_counter()
        attributes: dict[str, Any] = {"syncd.workflow": wf.name, "syncd.workflow.version": wf.version,
                                      "syncd.attempt": attempt, "messaging.message.id": event.id}
        if claimed.due_at is not None:
            attributes["syncd.queue.wait_ms"] = max(0.0, (started_at - claimed.due_at).total_seconds() * 1000)
        # Under the root of the event's trace (attached by ``execute``): every attempt, on any replica.
        with tracer.start_as_current_span("workflow.run", attributes=attributes) as span:
            trace_id = trace_id_of(span.get_span_context())

            def record(status: RunStatus, next_at: datetime | None, error: str | None) -> RunRecord:
                return RunRecord(wf.name, event.stream, event.id, wf.version, status, attempt, next_at, error,
                                 trace_id, started_at, self.clock.now(), (time.perf_counter() - started) * 1000)

            if attempt > limit:  # its worker died in it every time (a claim lost counts as an attempt)
                outcome = record(RunStatus.DEAD, None, f"stopped after {limit} attempts: the worker running it "
                                 "died or lost it each time")
                self._finish(claimed, ClaimScope(self.store, claimed, self.lease_seconds, self.clock), outcome)
                return outcome
            outcome = self._rounds(wf, claimed, span, record, limit)
            span.set_attribute("syncd.outcome", outcome.status.value)
            if outcome.last_error is not None:
                span.set_status(Status(StatusCode.ERROR, outcome.last_error))
            if outcome.last_error is not None and not outcome.status.suspended:
                log.warning("workflow %s failed on %s (attempt %d, now %s): %s", wf.name, event.id, attempt,
                            outcome.status, outcome.last_error, extra={"workflow": wf.name, "event_id": event.id})
        return outcome

    def _rounds(self, wf: Workflow, claimed: ClaimedRun, span: Any, record: Any, limit: int) -> RunRecord:
        event, attempt = claimed.due.event, claimed.due.next_attempt
        key = claimed.key
        for _ in range(MAX_RESUME_ROUNDS):
            scope = ClaimScope(self.store, claimed, self.lease_seconds, self.clock)
            steps = StepRuntime(txn=_StepReader(self.store, scope), key=key, now=self.clock.now,
                                worker=_WorkerSteps(self, claimed, scope))
            ctx = Context(db=scope.session, event=event, workflow=wf, span=span, attempt=attempt, steps=steps,
                          integrations=self.integrations, outbound=self.outbound)
            try:
                wf(event, ctx)
            except Checkpoint as checkpoint:  # steps completed after ctx.db writes: store them, run again
                scope.rollback()
                if checkpoint.error is not None:
                    status, next_at = run_outcome(checkpoint.error, attempt, limit, self.clock.now())
                    return self._finish(claimed, scope, record(status, next_at, checkpoint.error), checkpoint.results)
                self._store_steps(claimed, checkpoint.results)
                continue
            except Deferred as deferred:  # an integration's rate limit or Retry-After: same attempt, later
                scope.rollback()
                span.set_attribute("syncd.deferred", deferred.reason)
                return self._finish(claimed, scope, record(RunStatus.PENDING, deferred.until, None))
            except Sleep as sleep:
                scope.rollback()
                stored = {sleep.name: sleep.new} if sleep.new is not None else None
                return self._finish(claimed, scope, record(RunStatus.SLEEPING, sleep.wake_at, None), stored)
            except Interrupt as interrupt:  # e.g. an integration asked to wait: due again then, same attempt
                scope.rollback()
                until = getattr(interrupt, "until", None) or self.clock.now() + timedelta(seconds=1)
                return self._finish(claimed, scope, record(RunStatus.PENDING, until, None))
            except ClaimLostError:
                scope.rollback()
                raise
            except Exception as exc:  # the handler's failure is data: recorded, retried, dead-lettered
                scope.rollback()
                span.record_exception(exc, attributes=exception_attributes(exc, event.data))
                error = without_payload(error_text(exc), event.data)  # SYNCD_LOG_PAYLOADS (syncd.payloads)
                status, next_at = run_outcome(error, attempt, limit, self.clock.now())
                return self._finish(claimed, scope, record(status, next_at, error))
            finally:
                ctx.close()
            return self._finish(claimed, scope, record(RunStatus.SUCCEEDED, None, None))
        # Still stepping after MAX_RESUME_ROUNDS re-executions: hand it back to the queue, due now.
        return self._finish(claimed, ClaimScope(self.store, claimed, self.lease_seconds, self.clock),
                            record(RunStatus.PENDING, self.clock.now(), None))

    def _finish(self, claimed: ClaimedRun, scope: ClaimScope, outcome: RunRecord,
                steps: dict[str, Any] | None = None) -> RunRecord:
        scope.finish(outcome, steps)
        return outcome

    def _store_steps(self, claimed: ClaimedRun, results: dict[str, Any]) -> None:
        if not results:
            return
        with self.store.claimed(claimed, lease_seconds=self.lease_seconds, clock=self.clock) as txn:
            txn.hold()
            txn.store_steps(claimed.key, results, self.clock.now())


class _WorkerSteps:
    """``StepRuntime``'s hooks for a worker's run (``syncd.workflows.steps.WorkerSteps``)."""

    def __init__(self, executor: Executor, claimed: ClaimedRun, scope: ClaimScope) -> None:
        self._executor, self._claimed, self._scope = executor, claimed, scope

    def db_open(self) -> bool:
        return self._scope.opened

    def release_db(self) -> None:
        self._scope.rollback()

    def store(self, results: dict[str, Any]) -> None:
        self._executor._store_steps(self._claimed, results)


class _StepReader:
    """Where ``StepRuntime`` reads stored steps: the run's own transaction when it has one open (a second
    connection per worker could exhaust the pool while every worker holds one), else a short read."""

    def __init__(self, store: Store, scope: ClaimScope) -> None:
        self._store, self._scope = store, scope

    def step_results(self, key: RunKey) -> dict[str, Any]:
        if self._scope.opened:
            return self._scope.txn().step_results(key)
        return self._store.step_results(key)
