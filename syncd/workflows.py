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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncd.errors import ConfigError
from syncd.models import Event

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from sqlalchemy.orm import Session

Handler = Callable[[Event, "Context"], Any]


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

    def __call__(self, event: Event, ctx: Context) -> Any:
        return self.fn(event, ctx)


class Context:
    """What a handler gets besides the event.

    ``db``: a SQLAlchemy Session inside the page's transaction (a SAVEPOINT is open around the handler).
    ``logger``: a logger whose records carry the event, workflow and trace ids.
    ``span``: the ``workflow.run`` span, for attributes of your own.
    ``attempt``: 1 on the first try.
    """

    def __init__(self, *, db: Session, event: Event, workflow: Workflow, span: Span, attempt: int = 1) -> None:
        self.db = db
        self.event = event
        self.workflow = workflow
        self.span = span
        self.attempt = attempt
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"syncd.workflow.{workflow.name}"),
            {"workflow": workflow.name, "event_id": event.id, "stream": event.stream},
        )


@dataclass
class Registry:
    """The workflows known to a process. ``syncd.workflow`` registers into the default one."""

    _workflows: dict[str, Workflow] = field(default_factory=dict)

    def add(self, wf: Workflow) -> Workflow:
        existing = self._workflows.get(wf.name)
        if existing is not None and existing.fn is not wf.fn:
            where = f"{getattr(wf.fn, '__module__', '?')}.{getattr(wf.fn, '__qualname__', '?')}"
            raise ConfigError("SYNCD_WORKFLOWS", f"duplicate workflow name {wf.name!r} (again in {where})")
        self._workflows[wf.name] = wf
        return wf

    def workflow(self, name: str, *, on: Trigger, version: str = "1", retries: int | None = None,
                 builtin: bool = False) -> Callable[[Handler], Handler]:
        """Decorator: register ``fn`` as a workflow. The function itself is returned unchanged."""
        if not name or not isinstance(name, str):
            raise ValueError("a workflow needs a non-empty name")
        if retries is not None and retries < 1:
            raise ValueError("retries counts attempts and must be at least 1")

        def register(fn: Handler) -> Handler:
            self.add(Workflow(name=name, trigger=on, fn=fn, version=version, retries=retries, builtin=builtin))
            return fn

        return register

    def all(self) -> list[Workflow]:
        return list(self._workflows.values())

    def get(self, name: str) -> Workflow | None:
        return self._workflows.get(name)

    def matching(self, event: Event) -> list[Workflow]:
        return [wf for wf in self._workflows.values() if wf.trigger.matches(event)]

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


def workflow(name: str, *, on: Trigger, version: str = "1", retries: int | None = None) -> Callable[[Handler], Handler]:
    """Register a workflow in the default registry. See the module docstring."""
    return default_registry.workflow(name, on=on, version=version, retries=retries)


def load_modules(modules: Iterable[str]) -> None:
    """Import the user's workflow modules (``SYNCD_WORKFLOWS``); a failure names the module."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ConfigError:
            raise
        except Exception as exc:  # any import-time failure is a start-up error naming the module
            raise ConfigError("SYNCD_WORKFLOWS", f"cannot import {module!r}: {type(exc).__name__}: {exc}") from None


