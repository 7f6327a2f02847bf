"""When to tick: APScheduler 3, one interval job per source. The engine decides what a tick does.

Signals only set the stop event; the engine finishes the page in hand (commits it) and returns.
Ticks of one source never overlap: a tick that overruns its interval delays the next one. APScheduler
would say so with a WARNING at every skipped start ("maximum number of running instances reached");
syncd drops that line and says it once, in its own words, when the overrunning tick ends.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("syncd.scheduler")

#: SIGTERM to exit must stay under 10 s (the container's grace period is 15 s).
STOP_DEADLINE_SECONDS = 8.0


@dataclass(frozen=True)
class Chore:
    """Housekeeping beside the ticks (the daily prune): ``fn`` every ``every_seconds``, the first time
    ``first_after_seconds`` after the start. Never overlaps itself; a raise is logged, not fatal."""

    name: str
    fn: Callable[[], Any]
    every_seconds: float
    first_after_seconds: float


class Daemon:
    """Runs ``jobs`` (name → callable) every ``interval`` seconds, and ``chores`` on their own schedule,
    until stopped."""

    def __init__(self, jobs: Sequence[tuple[str, Callable[[], Any]]], *, interval: float,
                 stop: threading.Event, jitter: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic, chores: Sequence[Chore] = ()) -> None:
        self.jobs = list(jobs)
        self.chores = list(chores)
        self.monotonic = monotonic  # tests pass a fake one to overrun an interval
        quiet_overlap_warnings()
        self.interval = interval
        self.stop = stop
        self.jitter = min(5.0, interval * 0.1) if jitter is None else jitter
        self._running = 0
        self._lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=max(1, len(self.jobs) + len(self.chores)))},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": int(max(1, interval))},
        )

    def wake(self, name: str) -> None:
        """Run job ``name`` now (if it is running, its next interval picks the new data up)."""
        with contextlib.suppress(JobLookupError):
            self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))

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
        for name, fn in self.jobs:
            self.scheduler.add_job(self._wrap(name, fn), IntervalTrigger(seconds=self.interval, jitter=self.jitter),
                                   id=name, name=name, next_run_time=now)
        for chore in self.chores:
            self.scheduler.add_job(self._wrap(chore.name, chore.fn), IntervalTrigger(seconds=chore.every_seconds),
                                   id=chore.name, name=chore.name,
                                   next_run_time=now + timedelta(seconds=chore.first_after_seconds))
        self.scheduler.start()
        log.info("scheduler started: %d source(s) every %ss", len(self.jobs), self.interval)

    def wait(self) -> None:
        """Block until stop is set, then let in-flight ticks finish their page (bounded)."""
        while not self.stop.wait(0.5):
            pass
        log.info("stopping: finishing the page in hand")
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                if self._running == 0:
                    return
            time.sleep(0.05)
        log.warning("a tick did not finish within %.0fs; its uncommitted page is abandoned (it will be fetched "
                    "again on the next start, nothing is lost)", STOP_DEADLINE_SECONDS)

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._running == 0


class _NoOverlapWarning(logging.Filter):
    """Drops APScheduler's "maximum number of running instances reached" (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


def quiet_overlap_warnings() -> None:
    target = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _NoOverlapWarning) for f in target.filters):
        target.addFilter(_NoOverlapWarning())


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    from syncd.stopping import requested

    if requested.is_set():  # a SIGTERM arrived while starting (syncd.stopping)
        log.info("received SIGTERM while starting")
        stop.set()
