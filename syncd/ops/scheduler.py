"""When to tick: APScheduler 3, one job per group of sources walking its due ones. The engine decides
what a tick does.

Sources are grouped by their pacer (a provider credential's request budget, ``Pacer``); sources without
one form one group. Every ``WALK_SECONDS``, on a thread of the group's own (not an APScheduler job: its
scheduler thread, executor hand-off and job bookkeeping every second were a fifth of an idle daemon's CPU
at 10 sources, bench/README.md "G", session 12), a group's walk (:class:`Walker`) picks the sources whose
interval has passed, oldest poll first, asks the pacer how many may start now, and hands them to one
pool of at most ``TICK_THREADS`` threads (``TickRunner``: quick ticks one after the other on one thread, a
slow one gets company after ``HANDOFF_SECONDS``). One job per source cost a thread and a job each: with
hundreds of sources, hundreds of threads woke at once and queued for the database's few connections.

Signals only set the stop event; the engine finishes the page in hand (commits it) and returns.
Ticks of one source never overlap: a tick that overruns its interval delays the next one. APScheduler
would say so with a WARNING at every skipped start ("maximum number of running instances reached");
syncd drops that line and says it once, in its own words, when the overrunning tick ends.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from syncd.engine.decisions import error_text
from syncd.ops.tickrunner import TickRunner
from syncd.stopping import install_signal_handlers as install_signal_handlers  # its home was here

log = logging.getLogger("syncd.scheduler")

#: SIGTERM to exit must stay under 10 s (the container's grace period is 15 s).
STOP_DEADLINE_SECONDS = 8.0
#: How often each group looks for due sources (a poll starts at most this late).
WALK_SECONDS = 1.0
#: Longest time between two questions to a group's pacer when none of its sources is due.
REPLAN_SECONDS = 10.0
#: Ticks running at once in the process (more would only queue for the database's connections).
TICK_THREADS = 8
#: A group whose sources fall due fewer than this many per walk on average gathers them (``Walker.due``).
GATHER_BELOW = 8
#: The most sources a gathering walk starts.
GATHER_MOST = 32


class Allowance(Protocol):
    polls: int
    interval: float


class Pacer(Protocol):
    """A budget shared by a group of sources (``connectors.github.ratebudget.CredentialBudget`` from GitHub's
    rate-limit headers; ``syncd.retrybudget.RetryAfterBudget`` from WorkOS's and Stripe's 429s)."""

    def allow(self, *, now: float, base: float, sources: int, wanted: int, horizon: float) -> Allowance:
        """How many of ``wanted`` polls may start by ``now + horizon`` (``polls``), and the seconds between
        two polls of each of the ``sources`` that keeps within the budget (``interval`` >= ``base``)."""
        ...


@dataclass
class Walker:
    """Which of one group's sources to tick now. Not thread-safe: the group's walk thread calls it, one walk at
    a time; ``done`` and ``wake`` take its lock.

    A source is due when ``interval`` (``base``, or the pacer's) has passed since its last poll started,
    or it was woken; due sources go oldest first, as many as the pacer allows. So every source of the group
    is polled at least every ``interval`` + ``WALK_SECONDS`` (plus the time ticks wait for a thread: while one
    of the ``TICK_THREADS`` is free, at most ``tickrunner.HANDOFF_SECONDS`` behind a tick that runs long).

    Gathering (``gather``, small groups): when fewer than ``GATHER_BELOW`` sources fall due per walk and the
    budget is not stretching the interval (``interval == base``), a walk that has a due source also starts
    the sources polled at least half an interval ago (oldest first, at most ``GATHER_MOST`` in all), and asks
    the pacer for slots over the whole interval. Their phases then align: from the next interval on, they
    fall due together and share one claim and one release transaction (``Batch``) and one question to the
    pacer, instead of one source a walk (bench/README.md "G", session 12). A source joining a walk early is
    polled at most once more than its interval would (never sooner than half an interval after its last
    poll); the pacer still reserves a slot for every poll, so the credential's rate is unchanged over an
    interval; with a stretched interval nothing is gathered."""

    keys: Sequence[str]
    base: float
    pacer: Pacer | None = None
    walk_seconds: float = WALK_SECONDS
    interval: float = 0.0
    asked_at: float = float("-inf")  # when the pacer was last asked
    gather: bool = True
    reserved_until: float = float("-inf")  # the slots a gathering walk took reach this far ahead
    last: dict[str, float] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.interval = self.interval or self.base

    def due(self, now: float) -> list[str]:
        """The sources to start now (marked running until ``done``)."""
        with self._lock:
            free = sorted((self.last.get(k, -1.0), k) for k in self.keys if k not in self.running)
        chosen = [k for at, k in free if k not in self.last or now - at >= self.interval - self.walk_seconds / 2]
        gathering = self._gathering(chosen)
        if gathering:
            taken = set(chosen)
            chosen += [k for at, k in free if k not in taken and now - at >= self.interval / 2]
            chosen = chosen[:max(GATHER_MOST, len(taken))]
        # Asked when some are due, and every REPLAN_SECONDS besides (one short transaction each): a budget that
        # recovered (a new window) shortens a stretched interval within that time.
        if self.pacer is not None and (chosen or now - self.asked_at >= REPLAN_SECONDS):
            self.asked_at = now
            try:
                # Gathering takes slots up to an interval ahead; until that has passed, a due source may take
                # any of them too (the budget's interval may have grown since: it must not wait for a slot).
                horizon = self.interval if gathering else max(self.walk_seconds, self.reserved_until - now)
                plan = self.pacer.allow(now=now, base=self.base, sources=len(self.keys), wanted=len(chosen),
                                        horizon=horizon)
                if gathering:  # the last slot taken starts by now + horizon, the next one a spacing later
                    self.reserved_until = now + horizon + plan.interval / max(1, len(self.keys))
            except Exception as exc:  # the budget lives in the database: down, the ticks fail on their own
                log.error("could not read the shared request budget; polling at the last interval: %s",
                          error_text(exc))
            else:
                self.interval = max(self.base, plan.interval)
                chosen = chosen[:plan.polls]
        with self._lock:
            for key in chosen:
                self.last[key] = now
                self.running.add(key)
        return chosen

    def _gathering(self, due: Sequence[str]) -> bool:
        """Whether this walk gathers sources with its ``due`` ones (see the class docstring)."""
        return (self.gather and bool(due) and self.interval <= self.base
                and len(self.keys) * self.walk_seconds < GATHER_BELOW * self.interval)

    def done(self, key: str) -> None:
        with self._lock:
            self.running.discard(key)

    def wake(self, key: str) -> bool:
        """Make ``key`` due at the next walk; False if it is not in this group."""
        if key not in self.keys:
            return False
        with self._lock:
            self.last.pop(key, None)
        return True


@dataclass(frozen=True)
class Chore:
    """Housekeeping beside the ticks (the daily prune): ``fn`` every ``every_seconds``, the first time
    ``first_after_seconds`` after the start. Never overlaps itself; a raise is logged, not fatal."""

    name: str
    fn: Callable[[], Any]
    every_seconds: float
    first_after_seconds: float


class Batch(Protocol):
    """Ticks of one walk sharing their claim and release transactions (``syncd.engine.idlebatch.TickBatch``)."""

    def __contains__(self, name: object) -> bool: ...

    def run(self, name: str) -> object:
        """Member ``name``'s tick (instead of its job)."""
        ...

    def finished(self, name: str) -> None:
        """Member ``name``'s tick ended, or was dropped unstarted."""
        ...

    def flush_older(self) -> bool:
        """Write what waited too long; True once the batch is over."""
        ...

    def flush(self) -> None:
        """Write everything waiting."""
        ...


class Daemon:
    """Runs ``jobs`` (name → callable) every ``interval`` seconds, and ``chores`` on their own schedule,
    until stopped. Jobs named in ``pacers`` are paced together by their pacer (one group per pacer).
    ``batcher(names)`` (``App.batcher``), if given, makes a walk's due jobs one ``Batch``: its members run
    through it, and their release transactions are shared (issue 28)."""

    def __init__(self, jobs: Sequence[tuple[str, Callable[[], Any]]], *, interval: float,
                 stop: threading.Event, jitter: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic, chores: Sequence[Chore] = (),
                 pacers: Mapping[str, Pacer] | None = None, wall: Callable[[], float] = time.time,
                 batcher: Callable[[Sequence[str]], Batch | None] | None = None) -> None:
        self.jobs = list(jobs)
        self.chores = list(chores)
        self.monotonic = monotonic  # tests pass a fake one to overrun an interval
        self.wall = wall  # the pacers' clock (unix seconds, as the providers' reset headers)
        quiet_overlap_warnings()
        self.interval = interval
        self.stop = stop
        self.jitter = min(5.0, interval * 0.1) if jitter is None else jitter  # kept for callers; walks spread
        self._running = 0
        self._lock = threading.Lock()
        self.walkers = _group(self.jobs, interval, pacers or {})
        self._fns = {name: self._wrap(name, fn) for name, fn in self.jobs}
        self.batcher = batcher
        self._batches: list[Batch] = []  # open ones: members running, or releases waiting
        self._batches_lock = threading.Lock()  # each group's walk runs on a thread of its own
        self._pool = TickRunner(max(1, min(TICK_THREADS, len(self.jobs))), name="tick")
        self._wakes = [threading.Event() for _ in self.walkers]  # a walk at once (a woken source, a stop)
        self.walk_threads: list[threading.Thread] = []
        self.scheduler = BackgroundScheduler(  # the chores only
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=max(1, len(self.chores)))},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": int(max(1, interval))},
        )

    def wake(self, name: str) -> None:
        """Tick ``name`` at once (if it is running, its next interval picks the new data up)."""
        for walker, woken in zip(self.walkers, self._wakes, strict=True):
            if walker.wake(name):
                woken.set()

    def _walk_loop(self, walker: Walker, woken: threading.Event) -> None:
        """``walk`` every ``walk_seconds`` (a late walk is not made up for), and at once when ``woken``."""
        due = time.monotonic()
        while not self.stop.is_set():
            try:
                self.walk(walker)
            except Exception:  # a walk must never end the walks
                log.exception("a walk of due sources raised")
            due = max(due + walker.walk_seconds, time.monotonic())
            if woken.wait(due - time.monotonic()):
                woken.clear()
                due = time.monotonic()

    def walk(self, walker: Walker) -> None:
        """Start ``walker``'s due sources on the tick threads: with a ``batcher``, as one batch (its releases
        written together). First, what earlier batches held past their bound is written, finished ones dropped."""
        if self.stop.is_set():
            return
        with self._batches_lock:
            batches = list(self._batches)
        over = [batch for batch in batches if _over(batch)]
        with self._batches_lock:
            self._batches = [batch for batch in self._batches if batch not in over]
        names = walker.due(self.wall())
        batch = self._batch(names)
        for name in names:
            member = batch is not None and name in batch
            fn = self._wrap(name, functools.partial(batch.run, name)) if member and batch else self._fns[name]
            try:
                self._pool.submit(fn, functools.partial(self._ended, walker, name, batch if member else None))
            except RuntimeError:  # stopping: the pool takes no more ticks
                for dropped in names[names.index(name):]:
                    self._ended(walker, dropped, batch if batch is not None and dropped in batch else None)
                return

    def _batch(self, names: Sequence[str]) -> Batch | None:
        if self.batcher is None or len(names) < 2:
            return None
        try:
            batch = self.batcher(names)
        except Exception as exc:  # the ticks claim alone, and report what is wrong themselves
            log.debug("no batch for this walk: %s", error_text(exc))
            return None
        if batch is not None:
            with self._batches_lock:
                self._batches.append(batch)
        return batch

    def _ended(self, walker: Walker, name: str, batch: Batch | None) -> None:
        try:
            if batch is not None:
                batch.finished(name)
        finally:
            walker.done(name)

    def _wrap(self, name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def job() -> None:
            if self.stop.is_set():
                return
            with self._lock:
                self._running += 1
            started = self.monotonic()
            try:
                fn()
            except Exception:  # a tick must never kill the scheduler
                log.exception("tick of %s raised", name)
            finally:
                with self._lock:
                    self._running -= 1
                if name not in {c.name for c in self.chores}:
                    self._overran(name, self.monotonic() - started)

        return job

    def _overran(self, name: str, seconds: float) -> None:
        if seconds > self.interval:
            log.warning("the tick of %s took %.0fs, longer than the %ss interval (SYNC_INTERVAL_SECONDS): "
                        "its next tick starts now, not in parallel", name, seconds, self.interval,
                        extra={"source": name, "duration_seconds": round(seconds, 3)})

    def start(self) -> None:
        now = datetime.now(UTC)
        for index, (walker, woken) in enumerate(zip(self.walkers, self._wakes, strict=True)):
            thread = threading.Thread(target=self._walk_loop, args=(walker, woken), name=f"syncd-walk-{index}",
                                      daemon=True)
            thread.start()
            self.walk_threads.append(thread)
        for chore in self.chores:
            self.scheduler.add_job(self._wrap(chore.name, chore.fn), IntervalTrigger(seconds=chore.every_seconds),
                                   id=chore.name, name=chore.name,
                                   next_run_time=now + timedelta(seconds=chore.first_after_seconds))
        self.scheduler.start()
        log.info("scheduler started: %d source(s) every %ss", len(self.jobs), self.interval)

    def wait(self) -> None:
        """Block until stop is set, then let in-flight ticks finish their page (bounded)."""
        while not self.stop.wait(5.0):  # set by a signal's handler or another thread: wakes at once
            pass
        log.info("stopping: finishing the page in hand")
        self.scheduler.shutdown(wait=False)
        for woken in self._wakes:  # the walk threads see the stop now and end (their walk in hand first)
            woken.set()
        for thread in self.walk_threads:
            thread.join(timeout=1.0)
        self._pool.close()  # queued ticks never start
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                running = self._running
            if running == 0:
                self.flush()
                return
            time.sleep(0.05)
        self.flush()  # the other members' releases: the stuck tick's lease expires
        log.warning("a tick did not finish within %.0fs; its uncommitted page is abandoned (it will be fetched "
                    "again on the next start, nothing is lost)", STOP_DEADLINE_SECONDS)

    def flush(self) -> None:
        """Write the releases every open batch holds (a graceful stop's, once the ticks in hand ended)."""
        with self._batches_lock:
            batches = list(self._batches)
        for batch in batches:
            batch.flush()

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._running == 0


def _over(batch: Batch) -> bool:
    try:
        return batch.flush_older()
    except Exception:  # a flush never raises; a batch that does is dropped, not the walk
        log.exception("a batch of ticks raised")
        return True


def _group(jobs: Sequence[tuple[str, Callable[[], Any]]], interval: float,
           pacers: Mapping[str, Pacer]) -> list[Walker]:
    """One walker per pacer (in the jobs' order), and one for the jobs without a pacer."""
    groups: dict[int, tuple[Pacer | None, list[str]]] = {}
    for name, _ in jobs:
        pacer = pacers.get(name)
        groups.setdefault(id(pacer), (pacer, []))[1].append(name)
    return [Walker(names, interval, pacer) for pacer, names in groups.values()]


class _NoOverlapWarning(logging.Filter):
    """Drops APScheduler's "maximum number of running instances reached" (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


def quiet_overlap_warnings() -> None:
    target = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _NoOverlapWarning) for f in target.filters):
        target.addFilter(_NoOverlapWarning())
