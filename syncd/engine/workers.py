"""The worker pool: ``SYNCD_WORKERS`` runs in flight per process, claimed from the run queue.

One dispatcher thread claims as many due runs as there are free workers (``Store.claim_runs``) and hands
each to a thread of the pool (``Executor.execute``). It sleeps until it is woken — a page of this process
enqueued runs (``wake``), a ``NOTIFY syncd_runs`` from any replica's page (PostgreSQL, ``syncd.store.notify``), a
worker freed a slot — or until the next run falls due (a retry, a wake-up, an expired claim), and at most
``idle_poll_seconds``, the fallback that needs no notification: ``POLL_SECONDS`` by default, and
``IDLE_POLL_SECONDS`` on SQLite, where runs are enqueued by this process (its ticks and its dashboard wake the
pool) and only now and then by another (``syncd replay``, ``syncd once``): those are picked up within that
time. An idle pool then reads the queue once per ``IDLE_POLL_SECONDS`` instead of every second (the daemon's
fixed idle cost: bench/README.md, "G: many sources"). A keeper thread renews the claims in flight;
the pool's owner lock, held for its life, tells other replicas at once when this process is gone, so its
claims are taken over without waiting for them to expire.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from syncd.contracts import ClaimedRun, Clock, Listener, RunKey, RunRecord, Store
from syncd.engine.decisions import error_text
from syncd.engine.executor import Executor
from syncd.engine.results import RunTally
from syncd.workflows import Registry

log = logging.getLogger("syncd.workers")

#: The longest the dispatcher sleeps without a notification (other processes' runs, clock-driven ones).
POLL_SECONDS = 1.0
#: The fallback on SQLite: how late a run enqueued by another process (and announced by nothing) may start.
IDLE_POLL_SECONDS = 10.0
#: A drain (``syncd once``) waits for runs due this soon: deferred by an integration's rate limit.
DRAIN_WAIT_SECONDS = 5.0
#: How often an idle dispatcher claims anyway: the runs of a replica that died are due at once (its owner
#: lock is free) but nothing announces them.
RECLAIM_SECONDS = 10.0


@dataclass
class Drained:
    """What a drain ran, per stream: the outcomes of the runs executed."""

    by_stream: dict[str, RunTally] = field(default_factory=dict)

    def add(self, record: RunRecord) -> None:
        self.by_stream[record.stream] = self.by_stream.get(record.stream, RunTally()) + RunTally.of([record])


class WorkerPool:
    """Claims and executes due runs of ``registry``'s workflows, ``workers`` at a time."""

    def __init__(self, store: Store, registry: Registry, executor: Executor, *, workers: int, clock: Clock,
                 lease_seconds: float, replica_id: str, stop: threading.Event | None = None,
                 poll_seconds: float = POLL_SECONDS, idle_poll_seconds: float | None = None) -> None:
        self.store, self.registry, self.executor, self.clock = store, registry, executor, clock
        self.workers = max(1, workers)
        # Claim in batches: a claim is a write transaction, so refilling one slot per finished run would
        # cost one claim per run; waiting for a quarter of the slots to free up costs one per ~quarter.
        self._refill = max(1, self.workers // 4)
        self.lease_seconds = lease_seconds
        self.owner = f"{replica_id}/{uuid.uuid4().hex[:8]}"  # a restarted process never mistakes old claims
        self.stop = stop or threading.Event()
        self.poll_seconds = poll_seconds
        #: The dispatcher's longest sleep without a wake-up (see the module docstring).
        self.idle_poll_seconds = idle_poll_seconds if idle_poll_seconds is not None else (
            poll_seconds if store.concurrent_writers else max(poll_seconds, IDLE_POLL_SECONDS))
        #: Called with each sleep's length in seconds as the dispatcher starts it (tests, diagnostics).
        self.on_wait: Callable[[float], None] | None = None
        self._wake = threading.Event()
        self._mutex = threading.Lock()
        self._in_flight: dict[RunKey, ClaimedRun] = {}
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._owner_lock: Any = None
        self._listener: Listener | None = None
        self._closed = threading.Event()
        self.on_finished: Callable[[RunRecord], None] | None = None

    # ---- life -----------------------------------------------------------------------------------

    def start(self) -> WorkerPool:
        """Start claiming in the background (``syncd run``)."""
        self._ensure_owner()
        self._listener = self.store.listen_runs(self.wake)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="syncd-worker")
        for name, target in (("syncd-dispatch", self._dispatch_loop), ("syncd-claims", self._keep_claims)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wake(self, *_: object) -> None:
        """Runs were enqueued (or a slot freed): claim now instead of at the next poll."""
        self._wake.set()

    def close(self, timeout: float = 8.0) -> None:
        """Stop claiming, let the runs in flight finish (at most ``timeout``), let go of the owner lock. Runs
        still in flight after that are taken over by another replica at once (the owner lock goes with the
        process) or when their claims expire."""
        deadline = time.monotonic() + timeout
        self._closed.set()
        self._wake.set()
        if self._listener is not None:
            self._listener.stop(timeout=1.0)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owner_lock is not None and not self._in_flight:
            self._owner_lock.release()
            self._owner_lock = None

    @property
    def in_flight(self) -> int:
        with self._mutex:
            return len(self._in_flight)

    # ---- one process's queue, until it is empty (``syncd once``, ticks without a pool) --------------------

    def drain(self, *, stream: str | None = None, max_rounds: int = 10_000,
              wait_within: float = DRAIN_WAIT_SECONDS) -> Drained:
        """Claim and execute runs due now (of ``stream`` only, if given), ``workers`` at a time, until none is
        due or the stop event is set; returns what ran. A run due within ``wait_within`` seconds (one an
        integration's rate limit or ``Retry-After`` deferred) is waited for; runs due later (a retry's
        backoff, a sleep) are left for the next ``once`` or ``run``."""
        held = self._owner_lock is not None
        self._ensure_owner()
        drained = Drained()
        try:
            self._drain(drained, stream, max_rounds, wait_within)
        finally:
            if not held and self._owner_lock is not None:  # nothing in flight now: let go of it
                self._owner_lock.release()
                self._owner_lock = None
        return drained

    def _drain(self, drained: Drained, stream: str | None, max_rounds: int, wait_within: float) -> None:
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="syncd-worker") as pool:
            futures: set[Future[RunRecord | None]] = set()
            for _ in range(max_rounds):
                if self.stop.is_set():
                    break
                room = self.workers - len(futures)
                claims = self._claim(room, stream) if not futures or room >= self._refill else []
                futures |= {pool.submit(self._execute, c) for c in claims}
                if not futures:
                    # Waiting is bounded in real time (a fake clock in tests never brings the run due).
                    due_in = self._due_in()
                    if not 0 < due_in <= wait_within or self.stop.wait(due_in + 0.05):
                        break
                    wait_within -= due_in + 0.05
                    continue
                done = next(iter(_first_done(futures)))
                futures.discard(done)
                record = done.result()
                if record is not None:
                    drained.add(record)
            for future in futures:  # stopping: let the runs in hand finish and count them
                record = future.result()
                if record is not None:
                    drained.add(record)

    # ---- internals ------------------------------------------------------------------------------

    def _ensure_owner(self) -> None:
        """Hold this pool's owner lock, taking it again if it was lost: a database outage ends the session
        that held it, and without it every replica would see this pool's claims as a dead owner's and take
        them over, again and again, each takeover spending an attempt of the run."""
        if self._owner_lock is not None and self._owner_lock.held():
            return
        if self._owner_lock is not None:
            log.warning("the worker owner lock of %s was lost (database session ended); taking it again",
                        self.owner)
        self._owner_lock = self.store.hold_owner(self.owner)

    def _limits(self) -> tuple[set[str], dict[str, int]]:
        workflows = {wf.name for wf in self.registry.all()}
        limited = {wf.name: wf.concurrency for wf in self.registry.all() if wf.concurrency is not None}
        return workflows, limited

    def _claim(self, room: int, stream: str | None = None) -> list[ClaimedRun]:
        if room <= 0 or self.stop.is_set():
            return []
        workflows, limited = self._limits()
        try:
            self._ensure_owner()
            if self._owner_lock is None:  # its old session's lock not yet freed by the server: claim later
                return []
            claims = self.store.claim_runs(self.owner, self.clock.now(), lease_seconds=self.lease_seconds,
                                           limit=room, workflows=workflows, limited=limited, stream=stream)
        except Exception as exc:  # the database is down: try again at the next wake-up or poll
            log.error("could not claim runs: %s", error_text(exc))
            return []
        with self._mutex:
            for claimed in claims:
                self._in_flight[claimed.key] = claimed
        return claims

    def _execute(self, claimed: ClaimedRun) -> RunRecord | None:
        try:
            record = self.executor.execute(claimed)
        finally:
            with self._mutex:
                self._in_flight.pop(claimed.key, None)
            self._wake.set()  # a slot is free, and the run's successor by key may be due now
        if record is not None and self.on_finished is not None:
            self.on_finished(record)
        return record

    def _dispatch_loop(self) -> None:
        assert self._pool is not None
        woken, last_claim = True, 0.0  # claim at once on start: a dead predecessor's runs are due
        while not self._closed.is_set() and not self.stop.is_set():
            due_in = self._due_in()
            # Claiming is a write transaction (on SQLite it takes the file's write lock): only when woken,
            # when a run fell due, or now and then for the runs of a replica that died (due at once, but
            # not announced by any clock).
            if woken or due_in <= 0 or time.monotonic() - last_claim >= RECLAIM_SECONDS:
                last_claim = time.monotonic()
                room = self.workers - self.in_flight
                claims = self._claim(room) if room >= self._refill or not self.in_flight else []
                for claimed in claims:
                    self._pool.submit(self._execute, claimed)
                if claims and self.workers - self.in_flight >= self._refill:
                    continue  # there may be more due now
                # Runs due but not claimable (waiting for an earlier run of their key, or a concurrency
                # slot) become claimable when a run finishes: a wake-up here, a poll for other replicas'.
                due_in = self.poll_seconds
            wait = dispatch_wait(due_in, self.idle_poll_seconds)
            if self.on_wait is not None:
                self.on_wait(wait)
            woken = self._wake.wait(wait)
            self._wake.clear()

    def _due_in(self) -> float:
        """Seconds until the next run of ours falls due (0 or less: now; infinite if none is queued, so a
        drain with nothing left returns at once; ``poll_seconds`` if the database cannot say)."""
        try:
            workflows, _ = self._limits()
            due = self.store.next_due(workflows)
        except Exception:
            return self.poll_seconds
        if due is None:
            return math.inf
        return (due - self.clock.now()).total_seconds()

    def _keep_claims(self) -> None:
        every = max(1.0, self.lease_seconds / 3)
        while not self._closed.wait(every):
            if not self.in_flight:
                continue
            try:
                with self._mutex:
                    claims = list(self._in_flight.values())
                self.store.renew_claims(claims, self.clock.now() + timedelta(seconds=self.lease_seconds))
            except Exception as exc:  # the claims expire; another worker takes the runs over, fenced
                log.warning("could not renew run claims: %s", error_text(exc))


def dispatch_wait(due_in: float, idle_poll_seconds: float) -> float:
    """How long an idle dispatcher sleeps: until the next run falls due (``due_in`` seconds; infinite if
    none), at most ``idle_poll_seconds``, at least 10 ms (a run already due but not claimable)."""
    return max(0.01, min(idle_poll_seconds, due_in))


def _first_done(futures: set[Future[Any]]) -> set[Future[Any]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    return wait(futures, return_when=FIRST_COMPLETED).done
