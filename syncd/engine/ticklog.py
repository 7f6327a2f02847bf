"""The log lines an operator follows: one INFO line per tick that did work or failed, a summary of idle
ticks at most every ``IDLE_SUMMARY_SECONDS`` per source, and a progress line about every
``PROGRESS_SECONDS`` while a long catch-up commits pages. Each line carries its numbers as extras too
(JSON logs get them as fields)::

    workos: 12 pages, 1200 events (1150 new), runs 1150 ok / 2 failed, lag 3s, took 4.1s
    workos: catching up — 80 pages, 8000 events (8000 new), runs 8000 ok / 0 failed so far, lag 2d 3h, 10s in
    workos: 10 idle ticks in the last 10m — nothing new (caught up)

Time comes from an injected monotonic function, so tests decide when ten minutes have passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from syncd.engine.results import TickResult

log = logging.getLogger("syncd.tick")

IDLE_SUMMARY_SECONDS = 600.0
PROGRESS_SECONDS = 10.0


def human_seconds(seconds: float) -> str:
    """``0.4s``, ``42s``, ``5m 10s``, ``2h 3m``, ``3d 4h``: a duration or lag as people read it."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {(s % size) // sub_size}{sub}"
    return f"{s}s"


def did_work(result: TickResult) -> bool:
    """Fetched events or ran runs (new, retried or resumed); a failed tick is logged whatever it did."""
    return bool(result.events or result.new_events or result.runs_ok or result.runs_failed
                or result.runs_suspended)


def counts(result: TickResult) -> str:
    return (f"{result.pages} pages, {result.events} events ({result.new_events} new), "
            f"runs {result.runs_ok} ok / {result.runs_failed} failed")


def extras(result: TickResult) -> dict[str, object]:
    return {"source": result.source, "pages": result.pages, "events": result.events,
            "new_events": result.new_events, "runs_ok": result.runs_ok, "runs_failed": result.runs_failed,
            "lag_seconds": result.lag_seconds}


@dataclass
class _Idle:
    since: float
    ticks: int = 0
    last_emit: float | None = None
    last_skip: str | None = None


@dataclass
class TickLog:
    """Per-source tick lines. Thread-safe: the scheduler ticks sources from several threads."""

    now: Callable[[], float] = time.monotonic
    idle_every: float = IDLE_SUMMARY_SECONDS
    progress_every: float = PROGRESS_SECONDS
    _idle: dict[str, _Idle] = field(default_factory=dict)
    _progress: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (first page, last line)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self, result: TickResult) -> None:
        """A group of pages of ``result``'s tick committed: a progress line if one is due."""
        now = self.now()
        with self._lock:
            first, last = self._progress.setdefault(result.source, (now, now))
            if now - last < self.progress_every:
                return
            self._progress[result.source] = (first, now)
        lag = f", lag {human_seconds(result.lag_seconds)}" if result.lag_seconds is not None else ""
        log.info("%s: catching up — %s so far%s, %s in", result.source, counts(result), lag,
                 human_seconds(now - first), extra={**extras(result), "progress": True})

    def finished(self, result: TickResult, seconds: float) -> None:
        """``result``'s tick ended after ``seconds``: its line, or its part of the idle summary."""
        with self._lock:
            self._progress.pop(result.source, None)
        if not result.ok or did_work(result):
            self._tick_line(result, seconds)
        else:
            self._idle_tick(result)

    def _tick_line(self, result: TickResult, seconds: float) -> None:
        lag = f", lag {human_seconds(result.lag_seconds)}" if result.lag_seconds is not None else ""
        extra = {**extras(result), "duration_seconds": round(seconds, 3), "ok": result.ok}
        if result.ok:
            log.info("%s: %s%s, took %s", result.source, counts(result), lag, human_seconds(seconds), extra=extra)
        else:
            log.info("%s: tick FAILED after %s — %s%s; error: %s", result.source, human_seconds(seconds),
                     counts(result), lag, result.error, extra=extra)

    def _idle_tick(self, result: TickResult) -> None:
        now = self.now()
        with self._lock:
            idle = self._idle.setdefault(result.source, _Idle(since=now))
            idle.ticks += 1
            idle.last_skip = result.skipped_reason or idle.last_skip
            if idle.last_emit is not None and now - idle.last_emit < self.idle_every:
                return
            ticks, since, skip, first = idle.ticks, idle.since, idle.last_skip, idle.last_emit is None
            idle.ticks, idle.since, idle.last_emit, idle.last_skip = 0, now, now, None
        why = f"skipped ({skip})" if skip else "nothing new (caught up)"
        if first:  # the first summary of this source: say how often they come
            log.info("%s: idle — %s; idle ticks are summarised every %s", result.source, why,
                     human_seconds(self.idle_every), extra={"source": result.source, "idle_ticks": ticks})
        else:
            log.info("%s: %d idle ticks in the last %s — %s", result.source, ticks, human_seconds(now - since), why,
                     extra={"source": result.source, "idle_ticks": ticks})
