"""Flow control of outbound calls: one pooled client per integration per process, rate limits shared by
every replica, and ``Retry-After`` pausing an integration — without ever parking a worker thread.

:class:`Outbound` is the process's set of integration clients (``ctx.http(name)``, ``ctx.slack``): one
``httpx.Client`` per integration, built on first use, thread-safe, reused by every run; ``close()`` at
shut-down. Which run and step a request belongs to is read from context variables when it is sent
(:data:`current_run`, ``syncd.workflows.steps.current_step``), so one client serves every run and each
request still carries its own ``Idempotency-Key``.

:class:`RateLimiter` spaces the calls of an integration with a rate (``SYNCD_INTEGRATION_<NAME>_RATE``,
``SYNCD_SLACK_RATE``) through shared slots (``syncd.store.ratelimit``): on PostgreSQL the
``syncd_integration_slots`` table, one short atomic statement per call, so every replica draws on one
budget; on SQLite — one process — the same slots in memory (a call must not queue for SQLite's single
write lock behind a page transaction, nor wait for one its own run holds). A call whose slot starts
within :data:`MAX_WAIT` seconds sleeps until it; a later slot raises :class:`Deferred`: the run is due
again at that time, the attempt not counted. An integration without a rate is only checked for a pause,
read from the table at most once a second per replica. A 429 or 503 with ``Retry-After`` pauses the integration
(its next slot moves to the end of the wait, for every replica) and raises :class:`Deferred` too; other
integrations go on.
"""

from __future__ import annotations

import atexit
import contextvars
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from syncd.errors import ConfigError
from syncd.settings import INTEGRATION_PREFIX, Integrations, Rate
from syncd.store.ratelimit import MemorySlots, Slots, SqlSlots
from syncd.workflows.steps import RunKey, Sleep

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.engine import Engine

__all__ = ["MAX_WAIT", "Deferred", "Outbound", "RateLimiter", "current_run", "process_outbound"]

#: The run whose workflow is executing in this thread (set by the runner; ``ctx.http`` and ``ctx.slack``
#: set it too), for the idempotency keys of outbound calls. Copied into ``ctx.parallel``'s threads.
current_run: contextvars.ContextVar[RunKey | None] = contextvars.ContextVar("syncd_current_run", default=None)

#: Longest wait for a call's slot inside the worker thread; a later slot defers the run instead.
MAX_WAIT = 1.0
#: How long a replica trusts what it read of an integration's pause (integrations without a rate).
PAUSE_REFRESH = 1.0
#: Longest pause a ``Retry-After`` from an integration imposes (a longer one is capped).
MAX_RETRY_AFTER = 3600.0


class Deferred(Sleep):
    """The run cannot call an integration before ``until``: run it again then, without counting the
    attempt. Raised by a call whose rate-limit slot is more than :data:`MAX_WAIT` away, or that was
    answered a 429/503 with ``Retry-After``. An ``Interrupt`` (a BaseException), so it passes through the
    workflow's ``except Exception`` and the step's retries; it is a ``Sleep`` with nothing to store, so
    an engine that knows only sleeps makes the run due at ``until`` as well."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__("(deferred)", until, new=None)
        self.until = until
        self.reason = reason
        self.args = (f"deferred until {until.isoformat()}: {reason}",)


class RateLimiter:
    """Waits for, or defers, each call of an integration (module docstring). ``engine``: the database
    whose ``syncd_integration_slots`` every replica shares (PostgreSQL); SQLite or None: in memory."""

    def __init__(self, engine: Engine | None = None, *, slots: Slots | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 max_wait: float = MAX_WAIT) -> None:
        if slots is None:
            shared = engine is not None and engine.dialect.name == "postgresql"
            slots = SqlSlots(engine) if shared and engine is not None else MemorySlots()
        self.slots = slots
        self._clock = clock
        self._sleep = sleep
        self.max_wait = max_wait
        self._pauses: dict[str, tuple[float | None, float]] = {}  # name: (next_at, when read)

    def acquire(self, name: str, rate: Rate | None, *, label: str) -> None:
        """Before a call of ``name``: return when it may start (after sleeping up to ``max_wait``), or
        raise :class:`Deferred` with when it may. Without a rate only a pause holds it back (a read)."""
        now = self._clock()
        if rate is None:
            at = self._pause_of(name, now)
            if at is None or at <= now:
                return
            granted = at <= now + self.max_wait
            why = "paused by its Retry-After"
        else:
            slot = self.slots.take(name, now=now, interval=rate.interval, horizon=self.max_wait)
            at, granted = slot.at, slot.granted
            why = f"rate limit {rate}"
        if not granted:
            raise Deferred(_utc(at), f"{label}: {why}, next call in {at - now:.1f} s")
        if at > now:
            self._sleep(at - now)

    def _pause_of(self, name: str, now: float) -> float | None:
        """``name``'s shared next_at, read at most every :data:`PAUSE_REFRESH` seconds: a call of an
        integration without a rate costs no database round trip, and a pause set by another replica
        holds here within that time (this replica's own pauses at once)."""
        known = self._pauses.get(name)
        if known is None or now - known[1] >= PAUSE_REFRESH:
            known = self._pauses[name] = (self.slots.next_at(name), now)
        return known[0]

    def pause(self, name: str, seconds: float, *, label: str, status: int) -> Deferred:
        """``name`` answered ``status`` with ``Retry-After: seconds``: no call of it from any replica
        before then. Returns the :class:`Deferred` the caller raises."""
        wait = min(max(seconds, 0.0), MAX_RETRY_AFTER)
        now = self._clock()
        until = now + wait
        self.slots.pause(name, until)
        self._pauses[name] = (until, now)
        return Deferred(_utc(until), f"{label} answered {status} with Retry-After {seconds:g} s"
                                     + (f" (capped at {MAX_RETRY_AFTER:g} s)" if wait < seconds else ""))


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


class Outbound:
    """The shared clients of one process's integrations (module docstring). Thread-safe.

    ``http(name)``: the client of ``SYNCD_INTEGRATION_<NAME>_URL`` (ConfigError naming it when unset);
    ``slack()``: the client posting to ``SYNCD_SLACK_WEBHOOK_URL``. Both are built once and reused.
    """

    def __init__(self, integrations: Integrations, limiter: RateLimiter | None = None) -> None:
        self.integrations = integrations
        self.limiter = limiter if limiter is not None else RateLimiter()
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def http(self, name: str) -> httpx.Client:
        stem = Integrations.variable(name)[len(INTEGRATION_PREFIX):]
        client = self._clients.get(f"http:{stem}")
        if client is None:
            from syncd.workflows.integrations import integration_client

            integration = self.integrations.http_integration(name)  # ConfigError when it has no URL
            client = self._shared(f"http:{stem}",
                                  lambda: integration_client(stem, integration, self.limiter, f"http:{stem}"))
        return client

    def slack(self) -> httpx.Client:
        client = self._clients.get("slack")
        if client is None:
            if not self.integrations.slack_webhook_url:
                raise ConfigError("SYNCD_SLACK_WEBHOOK_URL", "is not set (a Slack incoming-webhook URL)")
            from syncd.workflows.integrations import slack_client

            client = self._shared("slack", lambda: slack_client(self.integrations.slack_rate, self.limiter))
        return client

    def _shared(self, key: str, build: Callable[[], httpx.Client]) -> httpx.Client:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = build()
            return client

    def close(self) -> None:
        """Close every client (their pooled connections). Clients asked for afterwards are new ones."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


#: Configurations with a process-wide Outbound (process_outbound); the least recently used is closed
#: beyond this many (tests build many; a daemon has one).
PROCESS_OUTBOUNDS = 8
_process: OrderedDict[Hashable, Outbound] = OrderedDict()
_process_lock = threading.Lock()


def process_outbound(integrations: Integrations) -> Outbound:
    """The process-wide :class:`Outbound` of ``integrations`` (one per configuration, rate limits in
    memory): what a ``Context`` built without ``outbound=`` uses."""
    key = _fingerprint(integrations)
    with _process_lock:
        found = _process.get(key)
        if found is not None:
            _process.move_to_end(key)
            return found
        found = _process[key] = Outbound(integrations)
        evicted = _process.popitem(last=False)[1] if len(_process) > PROCESS_OUTBOUNDS else None
    if evicted is not None:
        evicted.close()
    return found


@atexit.register
def _close_process_outbounds() -> None:
    """Close the process-wide clients' connections at exit (not left to the garbage collector)."""
    with _process_lock:
        outbounds = list(_process.values())
        _process.clear()
    for outbound in outbounds:
        outbound.close()


def _fingerprint(integrations: Integrations) -> Hashable:
    http = tuple((stem, i.url, i.token.reveal() if i.token else None, i.rate)
                 for stem, i in sorted(integrations.http.items()))
    webhook = integrations.slack_webhook_url
    return http, webhook.reveal() if webhook else None, integrations.slack_rate
