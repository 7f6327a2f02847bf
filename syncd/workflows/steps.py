"""Durable steps inside a workflow run: ``ctx.step``, ``ctx.parallel``, ``ctx.sleep``.

A step's result is stored (``syncd_steps``) the moment it succeeds, and returned without running it
again whenever the workflow is re-executed — after a failure, a crash, a sleep or ``syncd replay``.

How, for a run a worker executes (``syncd.engine.executor``): a step that completes while the run has no
transaction open (it has not written through ``ctx.db`` yet) stores its result at once in a short
transaction of its own, fenced on the worker's claim, and the code goes on — no re-execution. Writes made
through ``ctx.db`` before a new step cannot commit early (they commit with the run's status) and must not
be held open through the step's call (a lock held while waiting on the network): they roll back before
the step runs, and once its result is stored the run executes again (a *checkpoint*): completed steps now
return their stored result, the writes are redone, and the code runs on to the next step.

Inside a page's transaction (``inline`` workflows; it spans many events) a new step is not run at all:
the run is handed to the queue (``pending``) right after the page commits. A sleep interrupts the run
too, as ``sleeping`` until its wake time. Workflow code must therefore be deterministic between steps (the
usual rule of durable-execution engines); ``ctx.db`` writes commit with the run's final execution.

A step that succeeded is never run again, except when the process dies between the step's return and
the commit of its result: outbound calls carry an ``Idempotency-Key`` for that window.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import stamina

from syncd.contracts import RunKey

__all__ = ["Checkpoint", "Interrupt", "RunKey", "Sleep", "StepError", "StepRuntime", "current_step"]

#: The step running in this thread (parallel steps run in pool threads), for idempotency keys.
current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar("syncd_current_step", default=None)

MAX_PARALLEL = 8


class Interrupt(BaseException):
    """Unwinds a workflow to the engine. A BaseException, so user code's ``except Exception`` lets it pass."""


class Checkpoint(Interrupt):
    """Steps completed: store ``results``; then re-execute (or fail with ``error`` if a sibling step failed)."""

    def __init__(self, results: dict[str, Any], error: str | None = None) -> None:
        self.results = results
        self.error = error
        super().__init__(f"checkpoint {sorted(results)}")


class Sleep(Interrupt):
    """The run sleeps until ``wake_at``; ``new`` is the memo to store for a sleep seen the first time."""

    def __init__(self, name: str, wake_at: datetime, new: dict[str, Any] | None) -> None:
        self.name = name
        self.wake_at = wake_at
        self.new = new
        super().__init__(f"sleep {name} until {wake_at.isoformat()}")


class StepError(Exception):
    """A step failed after its retries, or was misused (duplicate name, unserialisable result)."""


class WorkerSteps(Protocol):
    """How a worker's run stores its steps (see the module docstring)."""

    def db_open(self) -> bool:
        """True if the run has ``ctx.db`` writes in an open transaction."""
        ...

    def release_db(self) -> None:
        """Roll those writes back and let go of the transaction (they are redone when the run re-executes)."""
        ...

    def store(self, results: dict[str, Any]) -> None:
        """Store completed steps now, in a short transaction of their own, fenced on the worker's claim."""
        ...


class StepResults(Protocol):
    """Where a run's completed steps are read from (a ``RunTxn``, or a worker's reader)."""

    def step_results(self, key: RunKey) -> dict[str, Any]: ...


@dataclass
class StepRuntime:
    """The steps of one run, as seen by one execution of the workflow."""

    txn: StepResults  # where the run's completed steps are read
    key: RunKey
    now: Callable[[], datetime]
    #: Inside a page's transaction: do not run a new step, hand the run to its own transaction first.
    defer_new: bool = False
    #: A worker's run (``syncd.engine.executor``): completed steps are stored at once and the code goes on.
    worker: WorkerSteps | None = None
    _memo: dict[str, Any] | None = None
    _seen: set[str] = field(default_factory=set)
    _counters: dict[str, int] = field(default_factory=dict)

    # ---- memo ------------------------------------------------------------------------------------

    def memo(self) -> dict[str, Any]:
        if self._memo is None:
            self._memo = self.txn.step_results(self.key)
        return self._memo

    def _claim(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise StepError("a step needs a non-empty name")
        if name in self._seen:
            raise StepError(f"step name {name!r} is used twice in this run; step names must be unique")
        self._seen.add(name)

    def auto_name(self, prefix: str) -> str:
        """Deterministic names for helper steps called several times in a run: slack, slack#2, …"""
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return prefix if n == 1 else f"{prefix}#{n}"

    # ---- the API behind ctx.step / ctx.parallel / ctx.sleep ----------------------------------------

    def step(self, name: str, fn: Callable[[], Any], *, retries: int = 3) -> Any:
        self._claim(name)
        memo = self.memo()
        if name in memo:
            return memo[name]["value"]
        if self.defer_new:
            raise Checkpoint({})
        again = self._before_new()
        value = self._execute(name, fn, retries)
        self._completed({name: {"value": value}}, again)
        return value

    def parallel(self, calls: Sequence[tuple[str, Callable[[], Any]]], *, retries: int = 3) -> list[Any]:
        for name, _ in calls:
            self._claim(name)
        memo = self.memo()
        todo = [(name, fn) for name, fn in calls if name not in memo]
        if not todo:
            return [memo[name]["value"] for name, _ in calls]
        if self.defer_new:
            raise Checkpoint({})
        again = self._before_new()
        results: dict[str, Any] = {}
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(todo)), thread_name_prefix="syncd-step") as pool:
            futures = {name: pool.submit(contextvars.copy_context().run, self._execute, name, fn, retries)
                       for name, fn in todo}
            for name, future in futures.items():
                try:
                    results[name] = {"value": future.result()}
                except StepError as exc:
                    errors.append(str(exc))
        if errors:
            raise Checkpoint(results, error="; ".join(errors))
        self._completed(results, again)
        return [memo[name]["value"] if name in memo else results[name]["value"] for name, _ in calls]

    def _before_new(self) -> bool:
        """Before a new step runs: a worker's run never holds its transaction (and, on SQLite, the database's
        write lock) through a step's call; writes made before the step roll back now and are redone when the
        run executes again after it. True if it must execute again."""
        if self.worker is None or not self.worker.db_open():
            return self.worker is None
        self.worker.release_db()
        return True

    def _completed(self, results: dict[str, Any], again: bool) -> None:
        """Steps just completed: stored now and the run goes on, or a checkpoint (see the module docstring)."""
        if again or self.worker is None:
            raise Checkpoint(results)
        self.worker.store(results)
        memo = self.memo()
        for name, result in results.items():
            memo.setdefault(name, result)

    def sleep_until(self, name: str, wake_at: datetime) -> None:
        self._claim(name)
        memo = self.memo()
        if name in memo:
            wake_at = datetime.fromisoformat(memo[name]["wake_at"])
            if self.now() >= wake_at:
                return
            raise Sleep(name, wake_at, new=None)
        if self.now() >= wake_at:
            self._completed({name: {"wake_at": wake_at.isoformat(), "value": None}}, self._before_new())
            return
        raise Sleep(name, wake_at, new={"wake_at": wake_at.isoformat(), "value": None})

    def sleep(self, name: str, duration: timedelta | float) -> None:
        # A sleep seen before keeps its stored wake time (sleep_until reads the memo first).
        delta = duration if isinstance(duration, timedelta) else timedelta(seconds=float(duration))
        self.sleep_until(name, self.now() + delta)

    # ---- running one step --------------------------------------------------------------------------

    def _execute(self, name: str, fn: Callable[[], Any], retries: int) -> Any:
        from opentelemetry import trace

        token = current_step.set(name)
        tracer = trace.get_tracer("syncd")
        try:
            with tracer.start_as_current_span("workflow.step", attributes={"syncd.step": name}) as span:
                try:
                    for attempt in stamina.retry_context(on=Exception, attempts=retries + 1, timeout=None,
                                                         wait_initial=0.5, wait_max=10.0):
                        with attempt:
                            value = fn()
                except Exception as exc:
                    span.record_exception(exc)
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, str(exc)[:300]))
                    raise StepError(f"step {name!r} failed after {retries + 1} attempts: "
                                    f"{type(exc).__name__}: {exc}") from None
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise StepError(f"step {name!r} returned a value that is not JSON-serialisable: "
                                f"{type(value).__name__}") from None
            return value
        finally:
            current_step.reset(token)
