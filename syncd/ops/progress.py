"""Backfill progress: a ``rich`` bar per window on a terminal, a log line every ``LOG_EVERY_PAGES``
pages elsewhere. A ``Progress`` receives a window's pages from the engine's ``on_page`` hook."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Column
from rich.text import Text

from syncd.contracts import Page
from syncd.engine import Target, window_progress

if TYPE_CHECKING:
    from syncd.ops.backfill import BackfillResult

log = logging.getLogger("syncd.backfill")

#: Without a terminal, one progress line per this many pages (and one when a window ends).
LOG_EVERY_PAGES = 10
#: A bar's total: the window's time span in thousandths, so rich's speed and ETA follow the span covered.
SCALE = 1000


def label(target: Target) -> str:
    """``workos 2026-01-01T00:00 → 2026-01-02T00:00 (workflow w)`` for humans."""
    assert target.window is not None
    span = f"{_short(target.window.start)} → {_short(target.window.end)}"
    only = f" ({target.workflow})" if target.workflow else ""
    return f"{target.connector.key} {span}{only}"


def _short(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


class Progress(Protocol):
    """Receives a window's pages. ``start`` before its first sync (with the progress already stored),
    ``__call__`` after each committed page (the engine's ``on_page`` hook), ``finish`` once at the end."""

    def start(self, target: Target, done_fraction: float) -> None: ...

    def __call__(self, target: Target, page: Page) -> None: ...

    def finish(self, target: Target, result: BackfillResult) -> None: ...


@dataclass
class _Meter:
    """Position and rate of one window within this process."""

    fraction: float
    started_fraction: float
    started_at: float = field(default_factory=time.monotonic)
    pages: int = 0
    events: int = 0

    def advance(self, target: Target, page: Page) -> None:
        assert target.window is not None
        self.pages += 1
        self.events += len(page.events)
        if not page.has_more:
            self.fraction = 1.0
        elif page.events:
            self.fraction = max(self.fraction, window_progress(target.window, page.events[-1].occurred_at))

    def events_per_second(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.events / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        """Time left at the rate the window's time span has been covered so far in this process."""
        covered = self.fraction - self.started_fraction
        elapsed = time.monotonic() - self.started_at
        if covered <= 0 or elapsed <= 0:
            return None
        return (1.0 - self.fraction) * elapsed / covered


class LogProgress:
    """A log line every ``every`` pages of a window and one when it ends (containers, pipes)."""

    def __init__(self, every: int = LOG_EVERY_PAGES, logger: logging.Logger = log) -> None:
        self.every = max(1, every)
        self.logger = logger
        self._meters: dict[str, _Meter] = {}
        self._lock = threading.Lock()

    def start(self, target: Target, done_fraction: float) -> None:
        with self._lock:
            self._meters[target.key] = _Meter(done_fraction, done_fraction)
        resumed = f", resuming at {done_fraction:.0%}" if done_fraction > 0 else ""
        self.logger.info("backfill %s started%s", label(target), resumed, extra={"source": target.key})

    def __call__(self, target: Target, page: Page) -> None:
        with self._lock:
            meter = self._meters.setdefault(target.key, _Meter(0.0, 0.0))
            meter.advance(target, page)
            due = meter.pages % self.every == 0 and page.has_more
        if due:
            eta = meter.eta_seconds()
            self.logger.info("backfill %s: %.0f%% of the window, %d pages, %d events, %.0f events/s, ETA %s",
                             label(target), 100 * meter.fraction, meter.pages, meter.events,
                             meter.events_per_second(), _duration(eta), extra={"source": target.key})

    def finish(self, target: Target, result: BackfillResult) -> None:
        with self._lock:
            meter = self._meters.pop(target.key, None)
        rate = meter.events_per_second() if meter else 0.0
        self.logger.info("backfill %s %s: %d pages, %d events (%d new), %d runs ok, %d failed, %.0f events/s",
                         label(target), result.state, result.pages, result.events, result.new_events,
                         result.runs_ok, result.runs_failed, rate, extra={"source": target.key})


class RichProgress:
    """A ``rich`` progress bar per window: % of the window's time span, events/s and the ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        # on a narrow terminal the label is cut short, never the numbers
        label_column = TextColumn("{task.description}",
                                  table_column=Column(no_wrap=True, overflow="ellipsis"))
        events_column = _EventsColumn(table_column=Column(no_wrap=True, min_width=22))
        self.bar = RichBar(label_column, BarColumn(bar_width=20), TaskProgressColumn(), events_column,
                           TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False)
        self._tasks: dict[str, TaskID] = {}
        self._meters: dict[str, _Meter] = {}

    def start(self, target: Target, done_fraction: float) -> None:
        self._meters[target.key] = _Meter(done_fraction, done_fraction)
        self._tasks[target.key] = self.bar.add_task(
            label(target), total=SCALE, completed=round(SCALE * done_fraction), events=0,
            start_time=time.monotonic())

    def __call__(self, target: Target, page: Page) -> None:
        meter = self._meters.setdefault(target.key, _Meter(0.0, 0.0))
        meter.advance(target, page)
        task = self._tasks.get(target.key)
        if task is not None:
            self.bar.update(task, completed=SCALE * meter.fraction, events=meter.events)

    def finish(self, target: Target, result: BackfillResult) -> None:
        task = self._tasks.pop(target.key, None)
        if task is not None and result.state == "done":
            self.bar.update(task, completed=SCALE)
        self._meters.pop(target.key, None)

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        """Show the bars; log lines written meanwhile are printed above them instead of through them."""
        with self.bar:
            handlers = [h for h in logging.getLogger().handlers
                        if getattr(h, "_syncd", False) and isinstance(h, logging.StreamHandler)]
            # while the bar is live, sys.stderr is rich's proxy, which prints lines above the bar
            previous = [h.setStream(sys.stderr) for h in handlers]
            try:
                yield
            finally:
                for handler, stream in zip(handlers, previous, strict=True):
                    if stream is not None:
                        handler.setStream(stream)


class _EventsColumn(ProgressColumn):
    """``1,234 events · 456/s``: the events of this run over the time since it started."""

    def render(self, task: Task) -> Text:
        events = int(task.fields.get("events", 0))
        elapsed = time.monotonic() - float(task.fields.get("start_time", time.monotonic()))
        rate = events / elapsed if elapsed > 0 else 0.0
        return Text(f"{events:,} events · {rate:,.0f}/s", style="progress.data.speed", no_wrap=True)


def make_progress(stream: IO[str] | None = None, *,
                  every: int = LOG_EVERY_PAGES) -> LogProgress | RichProgress:
    """A rich bar when ``stream`` (default stderr) is a terminal, log lines otherwise."""
    stream = stream or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return RichProgress()
    return LogProgress(every)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
