"""The health rule, read from the database so every replica reports the same thing.

``GET /healthz`` (:mod:`syncd.ops.http`): 200 while every configured source is healthy, else 503; the
body gives one line per source with the reason. ``syncd check`` gives the same verdict and exits 0 or 1
(the container's HEALTHCHECK).

The rule (:func:`judge`), per live source, with ``limit = 3 * SYNC_INTERVAL_SECONDS``: healthy if its
last *successful* tick ended within ``limit`` (so one or two failed ticks in a row do not flip it).
Past that, only two things keep it healthy, each bounded so that nothing can hide an outage for long:

- a pause the provider asked for (a rate limit being honoured), if it ends within ``PAUSE_CAP_SECONDS``
  of when the limit ran out: a pause that outlasts the cap is an outage, reported at once;
- a tick in progress (its lease is held) that is making progress: no tick has failed since the last
  success, and the tick committed a page (or started) within ``limit``. A tick stuck in timeouts and
  retries, or one that never ends, stops counting as progress once ``limit`` has passed.

A source that keeps failing — a wrong key, a provider down or never answering in time — turns unhealthy
once its last success is older than ``limit``; a source that never succeeded is unhealthy as soon as its
first tick has failed. (A catch-up that starts right after failed ticks counts as healthy only once it
ends: until a tick succeeds, the failure is what the database shows.)

The body listens on all interfaces by default, so a reason never carries payload values: a stored
error is shown as its first line, without SQLAlchemy's ``[SQL: …]``/``[parameters: …]`` dump, URL paths
and queries, or control characters (:func:`syncd.redaction.error_summary`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from syncd.contracts import Reads
from syncd.redaction import error_summary, printable

log = logging.getLogger("syncd.health")

#: A source is unhealthy once its last successful tick is older than this many intervals.
HEALTHY_INTERVALS = 3
#: How long past the limit a provider's pause (Retry-After, rate-limit reset) may keep a source healthy.
PAUSE_CAP_SECONDS = 3600.0
#: ``/healthz`` answers carry a fingerprint of the database they judged (``syncd check`` trusts only its own).
DATABASE_HEADER = "X-Syncd-Database"


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
    updated_at: datetime | None = None  # the last claim, page commit or failure


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
    stale = f"no successful tick for {age:.0f}s (limit {limit:.0f}s)" if age is not None else "no successful tick yet"
    if state.paused_until is not None and state.paused_until > now:
        return _paused(key, state, now=now, limit=limit, stale=stale)
    if state.lease_owner and state.lease_expires_at is not None and state.lease_expires_at > now:
        return _in_progress(key, state, now=now, limit=limit, stale=stale + error)
    return SourceHealth(key, False, stale + error)


def _paused(key: str, state: SourceState, *, now: datetime, limit: float, stale: str) -> SourceHealth:
    """A provider's pause keeps the source healthy only if it ends within the cap past the limit."""
    assert state.paused_until is not None
    reason = error_summary(state.pause_reason or "") or "rate limited"
    allowed = (state.last_success_at + timedelta(seconds=limit) if state.last_success_at else now) \
        + timedelta(seconds=PAUSE_CAP_SECONDS)
    until = state.paused_until.isoformat()
    if state.paused_until <= allowed:
        return SourceHealth(key, True, f"paused until {until} ({reason})")
    return SourceHealth(key, False, f"{stale}; paused until {until} ({reason}), longer than the "
                                    f"{PAUSE_CAP_SECONDS:.0f}s a pause may last")


def _in_progress(key: str, state: SourceState, *, now: datetime, limit: float, stale: str) -> SourceHealth:
    """A tick holding the lease counts only while it makes progress (see the module docstring)."""
    owner = printable(state.lease_owner or "")
    if state.last_error:
        return SourceHealth(key, False, f"{stale}; a tick is in progress on {owner} after failed ticks")
    quiet = (now - state.updated_at).total_seconds() if state.updated_at else None
    if quiet is not None and quiet <= limit:
        return SourceHealth(key, True, f"tick in progress on {owner} (last page or start {quiet:.0f}s ago)")
    return SourceHealth(key, False, f"{stale}; the tick in progress on {owner} has committed nothing for "
                                    f"{quiet or 0:.0f}s (stuck in retries or never ending)")


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
    import sqlalchemy as sa

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
    """A context in which the SQL and HTTP instrumentations record nothing. Without OpenTelemetry
    loaded (``syncd check``) nothing is instrumented, and importing it would cost more than the check."""
    if "opentelemetry" not in sys.modules:
        return contextlib.nullcontext()
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


def database_id(url: str) -> str:
    """A short fingerprint of a database URL without its password (sent in :data:`DATABASE_HEADER`)."""
    from sqlalchemy.engine import make_url

    try:
        safe = make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL fails elsewhere with a clear error; its hash is just never matched
        safe = "?"
    return hashlib.sha256(safe.encode()).hexdigest()[:16]
