"""The health rule, read from the database so every replica reports the same thing.

``GET /healthz`` (:mod:`syncd.ops.http`): 200 while every configured source is healthy, else 503; the
body gives one line per source with the reason. ``syncd check`` applies the same rule and exits 0 or 1
(the container's HEALTHCHECK).

The rule (:func:`judge`), per live source, with ``limit = 3 * SYNC_INTERVAL_SECONDS``: healthy if its
last *successful* tick ended within ``limit`` (so one or two failed ticks in a row do not flip it), or
the provider paused it (a rate limit being honoured), or a tick holds its lease right now (a long
catch-up renews the lease with every committed page). A source that keeps failing — a wrong key, a
provider down — turns unhealthy once its last success is older than ``limit``; a source that never
succeeded is unhealthy as soon as its first tick has failed.

The body listens on all interfaces by default, so a reason never carries payload values: a stored
error is shown as its first line, without SQLAlchemy's ``[SQL: …]``/``[parameters: …]`` dump, URL paths
and queries, or control characters (:func:`syncd.redaction.error_summary`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from syncd.contracts import Reads
from syncd.redaction import error_summary, printable
from syncd.settings import Settings

log = logging.getLogger("syncd.health")

#: A source is unhealthy once its last successful tick is older than this many intervals.
HEALTHY_INTERVALS = 3


@dataclass(frozen=True)
class SourceState:
    """What the database says about one cursor (the health rule's part of a ``syncd_sources`` row)."""

    key: str
    last_success_at: datetime | None = None
    last_error: str | None = None
    paused_until: datetime | None = None
    pause_reason: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None


@dataclass(frozen=True)
class SourceHealth:
    key: str
    healthy: bool
    reason: str


@dataclass(frozen=True)
class HealthReport:
    """The verdict for every configured source. Healthy when there is at least one and all are."""

    sources: tuple[SourceHealth, ...]
    problem: str | None = None  # a reason that is not one source's (no database, nothing configured)

    @property
    def healthy(self) -> bool:
        return self.problem is None and bool(self.sources) and all(s.healthy for s in self.sources)

    def text(self) -> str:
        lines = ["healthy" if self.healthy else "unhealthy"]
        if self.problem:
            lines.append(self.problem)
        lines += [f"{s.key}: {'ok' if s.healthy else 'FAILING'} — {s.reason}" for s in self.sources]
        return "\n".join(lines) + "\n"


def judge(key: str, state: SourceState | None, *, now: datetime, interval: float,
          started_at: datetime | None = None) -> SourceHealth:
    """Apply the health rule (module docstring) to one source. ``started_at``: when this process
    started, so a source without a row yet is "starting" for one limit; None (``syncd check``): no grace."""
    limit = HEALTHY_INTERVALS * interval
    if state is None:
        if started_at is not None and (now - started_at).total_seconds() <= limit:
            return SourceHealth(key, True, "starting: no tick recorded yet")
        return SourceHealth(key, False, "never synced: no tick recorded")
    error = f"; last error: {error_summary(state.last_error)}" if state.last_error else ""
    age = (now - state.last_success_at).total_seconds() if state.last_success_at else None
    if age is not None and age <= limit:
        return SourceHealth(key, True, f"last successful tick {age:.0f}s ago (limit {limit:.0f}s){error}")
    if state.paused_until is not None and state.paused_until > now:
        return SourceHealth(key, True, f"paused until {state.paused_until.isoformat()} "
                                       f"({error_summary(state.pause_reason or '') or 'rate limited'})")
    if state.lease_owner and state.lease_expires_at is not None and state.lease_expires_at > now:
        return SourceHealth(key, True, f"tick in progress on {printable(state.lease_owner)}")
    if age is None:
        return SourceHealth(key, False, f"no successful tick yet{error}")
    return SourceHealth(key, False, f"no successful tick for {age:.0f}s (limit {limit:.0f}s){error}")


def read_states(reads: Reads, keys: Iterable[str]) -> dict[str, SourceState]:
    """The health rule's view of the cursors ``keys`` that have a row."""
    fields = SourceState.__dataclass_fields__
    return {row.key: SourceState(**{f: getattr(row, f) for f in fields}) for row in reads.sources(keys)}


def verdicts(states: dict[str, SourceState], keys: Iterable[str], *, now: datetime, interval: float,
             started_at: datetime | None = None) -> tuple[SourceHealth, ...]:
    return tuple(judge(k, states.get(k), now=now, interval=interval, started_at=started_at) for k in keys)


def assess(reads: Reads, keys: Iterable[str], *, now: datetime, interval: float,
           started_at: datetime | None = None) -> HealthReport:
    """The verdict for ``keys`` (the configured live sources). Never raises for the database: one that
    cannot be read makes the report unhealthy with the error's type, never its text (it may hold a URL).
    Its queries are never traced (they would be orphan spans every probe)."""
    wanted = tuple(keys)
    if not wanted:
        return HealthReport((), problem="no source is configured")
    try:
        with untraced():
            states = read_states(reads, wanted)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("health check could not read the database: %s", type(exc).__name__)
        return HealthReport((), problem=f"database unavailable ({type(exc).__name__})")
    return HealthReport(verdicts(states, wanted, now=now, interval=interval, started_at=started_at))


def untraced() -> Any:
    """A context in which the SQL and HTTP instrumentations record nothing."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


# ---- `syncd check` ---------------------------------------------------------------------------------


def configured_sources(settings: Settings) -> list[str]:
    """Keys of the live sources ``settings`` configure (what ``syncd run`` would tick)."""
    from syncd.ops.app import build_connectors, build_registry
    from syncd.plugins import load_providers

    found = load_providers()
    built = build_connectors(settings, found, build_registry(settings, found))
    try:
        return [c.key for c in built]
    finally:
        for connector in built:
            connector.close()


def check(settings: Settings) -> HealthReport:
    """The /healthz verdict computed from the database directly (``syncd check``)."""
    from datetime import UTC

    from syncd.store.db import create_engine
    from syncd.store.reads import SqlReads

    keys = configured_sources(settings)
    db = create_engine(settings.database_url)
    try:
        return assess(SqlReads(db), keys, now=datetime.now(UTC), interval=settings.interval_seconds)
    finally:
        db.dispose()
