"""The public API users write workflows against.

::

    from syncd import workflow
    from connectors import workos

    @workflow(name="welcome", on=workos.events("user.created"), version="1.0.0")
    def welcome(event, ctx):
        ctx.db.execute(...)   # inside the page's transaction: commits with the cursor, or not at all

A workflow is a plain function ``(event, ctx)``. It runs at most once successfully per event (the run
table is the idempotency key), inside a SAVEPOINT of the page's transaction: if it raises, its writes
roll back, the run is recorded ``failed`` and retried on a later tick, and the stream goes on.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from syncd.contracts import Event
from syncd.errors import ConfigError
from syncd.settings import MAX_ATTEMPTS, Integrations

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from sqlalchemy.engine import Connection

    from syncd.workflows.outbound import Outbound
    from syncd.workflows.steps import StepRuntime

Handler = Callable[[Event, "Context"], Any]
BatchHandler = Callable[[Sequence[Event], "BatchContext"], Any]


@dataclass(frozen=True)
class Trigger:
    """Which events a workflow receives: a provider, optionally some event types, streams and a predicate.

    Built by the connector packages (``workos.events(...)``, ``github.issues(...)``); ``types=None`` means
    every type, ``streams=None`` every stream of the provider.
    """

    provider: str
    types: frozenset[str] | None = None
    streams: frozenset[str] | None = None
    where: Callable[[Event], bool] | None = None

    def matches(self, event: Event) -> bool:
        if event.provider != self.provider:
            return False
        if self.types is not None and event.type not in self.types:
            return False
        if self.streams is not None and event.stream not in self.streams:
            return False
        return self.where is None or bool(self.where(event))


@dataclass(frozen=True)
class Workflow:
    name: str
    trigger: Trigger
    fn: Handler
    version: str = "1"
    retries: int | None = None  # None: SYNCD_MAX_ATTEMPTS
    builtin: bool = False
    #: Optional: applies a page's events at once, with the same end state as ``fn`` on each in order.
    batch: BatchHandler | None = None
    #: At most this many runs in flight at once, across every replica (None: no limit).
    concurrency: int | None = None
    #: Runs with the same ``key(event)`` run one at a time, in event order (None: any order, concurrently).
    key: Callable[[Event], Any] | None = None
    #: Run inside the page's transaction, committing with the cursor (see the README's "Where runs run").
    inline: bool = False

    def __call__(self, event: Event, ctx: Context) -> Any:
        return self.fn(event, ctx)


class Context:
    """What a handler gets besides the event.

    ``db``: a SQLAlchemy Session inside the page's transaction (a SAVEPOINT is open around the handler).
    ``logger``: a logger whose records carry the event, workflow and trace ids.
    ``span``: the ``workflow.run`` span, for attributes of your own.
    ``attempt``: 1 on the first try.
    ``integrations``: the outbound integrations configured (``syncd.settings.Integrations``; secrets
    wrapped). A workflow gets these, never the environment.
    ``outbound``: the process's shared integration clients (``syncd.workflows.outbound.Outbound``); by
    default the process-wide one of ``integrations``, with rate limits kept in memory.
    """

    def __init__(self, *, db: Session | Callable[[], Session], event: Event, workflow: Workflow, span: Span,
                 attempt: int = 1, steps: StepRuntime | None = None, integrations: Integrations | None = None,
                 connection: Connection | None = None, outbound: Outbound | None = None) -> None:
        self._db = db
        self.connection = connection
        self.event = event
        self.workflow = workflow
        self.span = span
        self.attempt = attempt
        self._steps = steps
        self.integrations = integrations if integrations is not None else Integrations()
        self._outbound = outbound
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"syncd.workflow.{workflow.name}"),
            {"workflow": workflow.name, "event_id": event.id, "stream": event.stream},
        )

    @property
    def db(self) -> Session:
        """The SQLAlchemy Session of this run (opened on first use: runs that never touch it cost nothing)."""
        if callable(self._db) and not isinstance(self._db, Session):
            self._db = self._db()
        return self._db

    # ---- durable steps (see syncd.workflows.steps) --------------------------------------------------------

    @property
    def steps(self) -> StepRuntime:
        if self._steps is None:
            raise RuntimeError("durable steps are not available outside the engine")
        return self._steps

    def step(self, name: str, fn: Callable[[], Any], *, retries: int = 3) -> Any:
        """Run ``fn`` once for this run (retried up to ``retries`` times); its JSON result is stored and
        returned on every later execution without running ``fn`` again. Names are unique within a run."""
        return self.steps.step(name, fn, retries=retries)

    def parallel(self, calls: Sequence[tuple[str, Callable[[], Any]]], *, retries: int = 3) -> list[Any]:
        """Run several steps concurrently (each retried on its own); results in the order given. A failing
        step fails the run, but the others' completed results stay stored. Don't use ``ctx.db`` in them."""
        return self.steps.parallel(calls, retries=retries)

    def sleep(self, name: str, duration: timedelta | float) -> None:
        """Durable sleep: the run is stored as ``sleeping`` and resumed by a later tick after ``duration``."""
        self.steps.sleep(name, duration)

    def sleep_until(self, name: str, when: datetime) -> None:
        self.steps.sleep_until(name, when)

    # ---- outbound integrations (see syncd.workflows.integrations) ------------------------------------------

    @property
    def outbound(self) -> Outbound:
        if self._outbound is None:
            from syncd.workflows.outbound import process_outbound

            self._outbound = process_outbound(self.integrations)
        return self._outbound

    def http(self, integration: str) -> Any:
        """The shared httpx client of ``SYNCD_INTEGRATION_<NAME>_URL`` / ``_TOKEN``, sending an Idempotency-Key
        derived from this run and the current step, held to the integration's ``_RATE``. Use it inside
        ``ctx.step``."""
        from syncd.workflows.integrations import bound_outbound

        return bound_outbound(self).http(integration)

    def close(self) -> None:
        """Called by the engine after each run, in its thread. The integration clients are shared (nothing
        to close); the run stops being this thread's current run (``outbound.current_run``)."""
        if self._outbound is not None and self._steps is not None:
            from syncd.workflows.integrations import unbind_run

            unbind_run(self._steps.key)

    @property
    def slack(self) -> Any:
        from syncd.workflows.integrations import Slack

        return Slack(self)

    def send_email(self, *, to: str, subject: str, body: str, name: str | None = None) -> Any:
        """Send an email over ``SYNCD_SMTP_URL`` as a memoized, retried step (once per run)."""
        from syncd.workflows.integrations import send_email_step

        return send_email_step(self, to=to, subject=subject, body=body, name=name)


class BatchContext:
    """What a batch handler gets: its workflow's events of one transaction (a page or several), and that
    transaction.

    ``connection``: the page's Connection, inside a SAVEPOINT around the whole batch. ``db``: a Session on
    it, opened on first use. ``span``: the ``workflow.batch`` span. No durable steps and no outbound
    integrations: a batch is for database writes; anything else belongs in the per-event handler.
    """

    def __init__(self, *, db: Callable[[], Session], events: Sequence[Event], workflow: Workflow, span: Span,
                 connection: Connection) -> None:
        self._db: Session | Callable[[], Session] = db
        self.connection = connection
        self.events = events
        self.workflow = workflow
        self.span = span
        self.logger = logging.LoggerAdapter(logging.getLogger(f"syncd.workflow.{workflow.name}"),
                                            {"workflow": workflow.name})

    @property
    def db(self) -> Session:
        if not isinstance(self._db, Session):
            self._db = self._db()
        return self._db


@dataclass
class Registry:
    """The workflows known to a process. ``syncd.workflow`` registers into the default one."""

    _workflows: dict[str, Workflow] = field(default_factory=dict)
    #: matching() per (stream, type) (a stream names its provider), for registries whose triggers have no ``where``.
    _matches: dict[tuple[str, str], list[Workflow]] = field(default_factory=dict, repr=False, compare=False)

    def add(self, wf: Workflow) -> Workflow:
        existing = self._workflows.get(wf.name)
        if existing is not None and existing.fn is not wf.fn:
            where = f"{getattr(wf.fn, '__module__', '?')}.{getattr(wf.fn, '__qualname__', '?')}"
            raise ConfigError("SYNCD_WORKFLOWS", f"duplicate workflow name {wf.name!r} (again in {where})")
        self._workflows[wf.name] = wf
        self._matches.clear()
        return wf

    def workflow(self, name: str, *, on: Trigger, version: str = "1", retries: int | None = None,
                 builtin: bool = False, batch: BatchHandler | None = None, concurrency: int | None = None,
                 key: Callable[[Event], Any] | None = None, inline: bool = False) -> Callable[[Handler], Handler]:
        """Decorator: register ``fn`` as a workflow. The function itself is returned unchanged.

        ``batch``: an optional ``(events, ctx)`` function applying several events at once (see the
        README's "Batch handlers"); ``fn`` stays the per-event handler it falls back to.
        ``concurrency``: at most N runs in flight across every replica. ``key``: runs whose events give the
        same ``key(event)`` run one at a time, in event order. ``inline``: run in the page's transaction,
        committing with the cursor, instead of by the workers (README, "Where runs run").
        """
        if not name or not isinstance(name, str):
            raise ValueError("a workflow needs a non-empty name")
        if retries is not None and not 1 <= retries <= MAX_ATTEMPTS:
            raise ValueError(f"retries counts attempts and must be 1 to {MAX_ATTEMPTS}, got {retries}")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ValueError(f"workflow {name!r}: concurrency must be a whole number of at least 1, "
                             f"got {concurrency!r}")

        def register(fn: Handler) -> Handler:
            self.add(Workflow(name=name, trigger=on, fn=fn, version=version, retries=retries, builtin=builtin,
                              batch=batch, concurrency=concurrency, key=key, inline=inline))
            return fn

        return register

    def all(self) -> list[Workflow]:
        return list(self._workflows.values())

    def get(self, name: str) -> Workflow | None:
        return self._workflows.get(name)

    def matching(self, event: Event) -> list[Workflow]:
        key = (event.stream, event.type)  # the provider is the stream's first part
        found = self._matches.get(key)
        if found is None:
            found = [wf for wf in self._workflows.values() if wf.trigger.matches(event)]
            if any(wf.trigger.where is not None for wf in self._workflows.values()):
                return found  # a predicate looks at more than the key: nothing to cache
            self._matches[key] = found
        return list(found)

    def event_types(self, provider: str) -> set[str] | None:
        """The event types workflows of ``provider`` listen to; None if one of them takes every type."""
        types: set[str] = set()
        for wf in self._workflows.values():
            if wf.trigger.provider != provider:
                continue
            if wf.trigger.types is None:
                return None
            types |= wf.trigger.types
        return types

    def only(self, names: Iterable[str]) -> Registry:
        wanted = set(names)
        return Registry({n: w for n, w in self._workflows.items() if n in wanted})

    def copy(self) -> Registry:
        return Registry(dict(self._workflows))

    def __len__(self) -> int:
        return len(self._workflows)


default_registry = Registry()


def workflow(name: str, *, on: Trigger, version: str = "1", retries: int | None = None,
             batch: BatchHandler | None = None, concurrency: int | None = None,
             key: Callable[[Event], Any] | None = None, inline: bool = False) -> Callable[[Handler], Handler]:
    """Register a workflow in the default registry. See the module docstring and ``Registry.workflow``."""
    return default_registry.workflow(name, on=on, version=version, retries=retries, batch=batch,
                                     concurrency=concurrency, key=key, inline=inline)


def load_modules(modules: Iterable[str]) -> None:
    """Import the user's workflow modules (``SYNCD_WORKFLOWS``); a failure names the module.

    The working directory is importable (last on ``sys.path``), as under ``python -m``: the ``syncd``
    console script alone would not find ``myapp/workflows.py`` next to the user's ``.env``.
    """
    modules = list(modules)
    if modules and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ConfigError:
            raise
        except Exception as exc:  # any import-time failure is a start-up error naming the module
            raise ConfigError("SYNCD_WORKFLOWS", f"cannot import {module!r}: {type(exc).__name__}: {exc}") from None


