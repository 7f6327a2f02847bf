"""Wiring: settings → database, registry, connectors, engine. The CLI and the tests build an ``App``."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from syncd.contracts import Clock, Connector, Listener, Provider, Reads
from syncd.engine import SyncEngine, Target, TickResult
from syncd.engine.idlebatch import TickBatch
from syncd.engine.workers import WorkerPool
from syncd.errors import ConfigError
from syncd.settings import Settings
from syncd.store import SqlStore
from syncd.store.db import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.workflows import Registry, default_registry, load_modules, validate
from syncd.workflows.outbound import Outbound, RateLimiter

if TYPE_CHECKING:
    from syncd.ops.scheduler import Pacer

log = logging.getLogger("syncd.app")


def build_registry(settings: Settings, providers: Sequence[Provider], extra: Registry | None = None) -> Registry:
    """Built-in mirrors (per ``SYNCD_BUILTINS``) + the user's modules (``SYNCD_WORKFLOWS``) + ``extra``."""
    registry = Registry()
    for provider in providers:
        if settings.builtins is None or provider.name in settings.builtins:
            provider.builtin_workflows(registry)
    unknown = set(settings.builtins or ()) - {p.name for p in providers}
    if unknown:
        raise ConfigError("SYNCD_BUILTINS", f"unknown provider(s) {', '.join(sorted(unknown))}; "
                          f"expected all, none or a list of {', '.join(p.name for p in providers)}")
    load_modules(settings.workflow_modules)
    for wf in (extra if extra is not None else default_registry).all():
        registry.add(wf)
    validate.check(registry, providers, settings.environ)  # exit 2 naming the workflow, before any tick
    return registry


def build_connectors(settings: Settings, providers: Sequence[Provider], registry: Registry) -> list[Connector]:
    """Every configured source, filtered by ``SYNCD_SOURCES`` (source keys or provider names)."""
    available: list[Connector] = []
    for provider in providers:
        available.extend(provider.sources(settings.environ, registry))
    if not settings.sources:
        return available
    chosen: list[Connector] = []
    names = {p.name for p in providers}
    for wanted in settings.sources:
        matches = [c for c in available if c.key == wanted or c.key.split(":", 1)[0] == wanted]
        if not matches:
            prefix = wanted.split(":", 1)[0]
            if prefix in names:
                raise ConfigError("SYNCD_SOURCES", f"lists {wanted!r} but that source is not configured "
                                  f"(set its credentials, e.g. {prefix.upper()}_…)")
            raise ConfigError("SYNCD_SOURCES",
                              f"unknown source {wanted!r}; known providers: {', '.join(sorted(names))}")
        chosen.extend(c for c in matches if c not in chosen)
    return chosen


@dataclass
class App:
    settings: Settings
    db: Engine
    registry: Registry
    connectors: list[Connector]
    engine: SyncEngine
    stop: threading.Event = field(default_factory=threading.Event)
    providers: Sequence[Provider] = ()

    @classmethod
    def build(cls, settings: Settings, *, providers: Sequence[Provider] | None = None,
              registry: Registry | None = None, clock: Clock | None = None, connectors: list[Connector] | None = None,
              require_sources: bool = True, run_migrations: bool = True) -> App:
        if providers is None:
            from syncd.plugins import load_providers

            providers = load_providers()
        full_registry = build_registry(settings, providers, registry)
        if connectors is None:
            connectors = build_connectors(settings, providers, full_registry)
        for warning in validate.unconfigured(full_registry, connectors):
            log.warning("%s", warning)
        if require_sources and not connectors:
            raise ConfigError("SYNCD_SOURCES", "no source is configured: set WORKOS_API_KEY (WorkOS), "
                              "GITHUB_REPOS (GitHub), STRIPE_API_KEY (Stripe) or SYNCD_SQL_TABLES (your tables), "
                              "or run `syncd demo`")
        db = create_engine(settings.database_url, workers=settings.workers)
        if run_migrations:
            migrate(db)
        stop = threading.Event()
        engine = SyncEngine(SqlStore(db), full_registry, clock=clock, replica_id=settings.replica_id,
                            prefetch_pages=settings.prefetch_pages,
                            lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts, stop=stop,
                            integrations=settings.integrations,
                            outbound=Outbound(settings.integrations, RateLimiter(db)),
                            drain_workers=settings.workers, group_events=settings.group_events,
                            group_seconds=settings.group_seconds)
        return cls(settings=settings, db=db, registry=full_registry, connectors=connectors, engine=engine, stop=stop,
                   providers=tuple(providers))

    def listeners(self, wake: Callable[[str], None]) -> list[Listener]:
        """Start the providers' optional listeners (``Provider.listen``) for this app's sources."""
        started: list[Listener] = []
        for provider in self.providers:
            listen = getattr(provider, "listen", None)
            if listen is not None:
                started.extend(listen(self.connectors, wake))
        return started

    def pacers(self) -> dict[str, Pacer]:
        """Source key → the request budget its polls share (a connector's optional ``budget``), bound to the
        store so that replicas share it (``syncd.store.budget``)."""
        found: dict[str, Pacer] = {}
        for connector in self.connectors:
            budget = getattr(connector, "budget", None)
            if budget is not None:
                budget.bind(self.engine.store.budgets)  # type: ignore[attr-defined]
                found[connector.key] = budget
        return found

    def workers(self) -> WorkerPool:
        """A worker pool of ``SYNCD_WORKERS`` for this app's engine (``start()`` it, or ``drain()`` it)."""
        engine = self.engine
        return WorkerPool(engine.store, self.registry, engine.executor, workers=self.settings.workers,
                          clock=engine.clock, lease_seconds=engine.lease_seconds, replica_id=engine.replica_id,
                          stop=self.stop)

    @property
    def reads(self) -> Reads:
        """What syncd's tables say (status, health, metrics, progress), read outside the write lock."""
        return SqlReads(self.db)

    def tick(self, connector: Connector | Target, *, max_pages: int | None = None,
             batch: TickBatch | None = None) -> TickResult:
        """One tick of ``connector`` (``SyncEngine.sync``); ``max_pages`` ends it after that many pages, as a
        crash right after that commit would (tests and tools); ``batch``: a member of a walk's (``batcher``)."""
        from opentelemetry import trace

        key = connector.key
        tracer = trace.get_tracer("syncd")
        with tracer.start_as_current_span("syncd.tick", attributes={"syncd.source": key}) as span:
            result = self.engine.sync(connector, max_pages=max_pages, batch=batch)
            if not result.ok:  # so Jaeger's "error=true" search finds failed ticks at the root
                span.set_status(trace.Status(trace.StatusCode.ERROR, result.error))
            return result

    def batcher(self, names: Sequence[str]) -> TickBatch | None:
        """A walk's ticks of the live sources among ``names`` as one batch, their leases claimed
        (``syncd.engine.idlebatch``; ``syncd run``'s walks); None for fewer than two (nothing to share)."""
        by_key = {c.key: c for c in self.connectors}
        targets = [Target(by_key[name]) for name in names if name in by_key]
        if len(targets) < 2:
            return None
        return TickBatch(self.engine, targets, lambda target, batch: self.tick(target, batch=batch)).claim()

    def tick_all(self, *, max_pages: int | None = None) -> list[TickResult]:
        return [self.tick(c, max_pages=max_pages) for c in self.connectors]

    def close(self) -> None:
        """Closes the connectors, the store, the outbound clients and the database pool, in that order, each
        even if an earlier one raised; the error is raised at the end (the last one, earlier ones as its context)."""
        with contextlib.ExitStack() as closing:  # callbacks run last-in, first-out
            closing.callback(self.db.dispose)
            if self.engine.outbound is not None:
                closing.callback(self.engine.outbound.close)
            closing.callback(self.engine.store.close)  # the owner-lock session (PostgreSQL): its locks go with it
            for connector in reversed(self.connectors):
                closing.callback(connector.close)
