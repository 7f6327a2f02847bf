"""Logs an operator can follow (issue #18, item 4): one INFO line per tick that did work or failed, idle ticks
summarised at most every 10 minutes, progress lines during a long catch-up, retry lines that say what is
retried, and syncd's own line when a tick overruns its interval. Time is injected, never waited for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from simulators.workos import Faults, WorkOSSimulator
from syncd.engine.results import TickResult
from syncd.engine.ticklog import TickLog, human_seconds
from syncd.ops.app import App
from syncd.ops.scheduler import Daemon
from tests.conftest import WORKOS_KEY, workos_env


class Ticker:
    """A fake monotonic clock: each call returns the current value, then adds ``step``."""

    def __init__(self, step: float = 0.0) -> None:
        self.value = 1000.0
        self.step = step

    def __call__(self) -> float:
        value = self.value
        self.value += self.step
        return value


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=450, seed=21, api_key=WORKOS_KEY) as simulator:
        yield simulator


@pytest.mark.parametrize(("seconds", "text"), [
    (0.44, "0.4s"), (42, "42s"), (310, "5m 10s"), (7380, "2h 3m"), (3 * 86400 + 4 * 3600, "3d 4h")])
def test_human_seconds(seconds: float, text: str) -> None:
    assert human_seconds(seconds) == text


def test_a_tick_line_per_tick_that_did_work_or_failed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ticklog = TickLog(now=Ticker())
    worked = TickResult("workos", pages=3, events=286, new_events=280, runs_ok=280, runs_failed=2, lag_seconds=75)
    ticklog.finished(worked, 4.12)
    failed = TickResult("github:o/r", ok=False, error="github:o/r: HTTP 502")
    ticklog.finished(failed, 61)
    assert lines(caplog, "syncd.tick") == [
        "workos: 3 pages, 286 events (280 new), runs 280 ok / 2 failed, lag 1m 15s, took 4.1s",
        "github:o/r: tick FAILED after 1m 1s — 0 pages, 0 events (0 new), runs 0 ok / 0 failed; "
        "error: github:o/r: HTTP 502"]
    record = next(r for r in caplog.records if r.name == "syncd.tick")
    assert (record.levelno, record.__dict__["new_events"], record.__dict__["duration_seconds"]) == (
        logging.INFO, 280, 4.12)


def test_idle_ticks_are_summarised_at_most_every_ten_minutes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Ticker()
    ticklog = TickLog(now=clock)
    ticklog.finished(TickResult("workos", pages=1), 0.1)  # the first idle tick: said at once
    for _ in range(9):  # one a minute: nothing said
        clock.value += 60
        ticklog.finished(TickResult("workos", pages=1), 0.1)
        ticklog.finished(TickResult("github:o/r", pages=1), 0.1)  # another source has its own summary
    clock.value += 60  # ten minutes after the first line
    ticklog.finished(TickResult("workos", pages=1), 0.1)
    assert lines(caplog, "syncd.tick") == [
        "workos: idle — nothing new (caught up); idle ticks are summarised every 10m 0s",
        "github:o/r: idle — nothing new (caught up); idle ticks are summarised every 10m 0s",
        "workos: 10 idle ticks in the last 10m 0s — nothing new (caught up)"]


def test_a_progress_line_about_every_ten_seconds_of_a_catch_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Ticker()
    ticklog = TickLog(now=clock)
    result = TickResult("workos")
    for _ in range(9):  # a group of pages committed every 3 s, for 24 s
        result.pages += 10
        result.events += 1000
        result.lag_seconds = 86400.0
        ticklog.page(result)
        clock.value += 3
    assert lines(caplog, "syncd.tick") == [
        "workos: catching up — 50 pages, 5000 events (0 new), runs 0 ok / 0 failed so far, lag 1d 0h, 12s in",
        "workos: catching up — 90 pages, 9000 events (0 new), runs 0 ok / 0 failed so far, lag 1d 0h, 24s in"]
    ticklog.finished(result, 27)  # the next tick starts its own count
    caplog.clear()
    ticklog.page(TickResult("workos", pages=1))
    assert lines(caplog, "syncd.tick") == []


def test_the_engine_logs_its_ticks_and_their_progress(sqlite_url: str, sim: WorkOSSimulator,
                                                      make_app: Callable[..., App],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # one transaction per page, so the catch-up has several
    app = make_app(sqlite_url, **workos_env(sim), SYNCD_GROUP_EVENTS="1")
    app.engine.ticklog = TickLog(now=Ticker(step=11.0))  # 11 s pass between two looks at the clock
    first = app.tick_all()[0]
    assert first.ok and first.pages > 2
    said = lines(caplog, "syncd.tick")
    assert said[-1].startswith(f"workos: {first.pages} pages, {first.events} events ({first.new_events} new), "
                               f"runs {first.runs_ok} ok / 0 failed, lag ")
    progress = [line for line in said if "catching up" in line]
    assert len(progress) == first.pages - 1 and progress[0].startswith("workos: catching up — 2 pages")
    caplog.clear()
    assert app.tick_all()[0].ok and app.tick_all()[0].ok  # nothing new: idle, said once
    assert lines(caplog, "syncd.tick") == [
        "workos: idle — nothing new (caught up); idle ticks are summarised every 10m 0s"]


def test_retry_lines_say_what_is_retried(sqlite_url: str, sim: WorkOSSimulator, make_app: Callable[..., App],
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sim.faults = Faults(error_rate=1.0)
    app = make_app(sqlite_url, **workos_env(sim))
    result = app.tick_all()[0]
    assert not result.ok
    retries = lines(caplog, "syncd.retry")
    assert len(retries) == 3, retries  # four attempts (stamina's testing mode), three retries
    for k, line in enumerate(retries, start=2):
        assert line.startswith(f"retrying workos (127.0.0.1): attempt {k} of 4 in 0.0s after: "
                               "workos: provider error (HTTP 50")
    assert not any(r.getMessage() == "stamina.retry_scheduled" for r in caplog.records)
    assert WORKOS_KEY not in caplog.text
    assert "workos: tick FAILED after" in caplog.text


def test_an_overrunning_tick_gets_syncds_line_not_apschedulers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Ticker()
    durations = iter([59.0, 95.0])

    def tick() -> None:
        clock.value += next(durations)

    daemon = Daemon([("workos", tick)], interval=60, stop=threading.Event(), monotonic=clock)
    job = daemon._wrap("workos", tick)
    job()  # within its interval: nothing said
    job()  # 95 s: said once, when it ends
    assert lines(caplog, "syncd.scheduler") == [
        "the tick of workos took 95s, longer than the 60s interval (SYNC_INTERVAL_SECONDS): its next tick "
        "starts now, not in parallel"]
    logging.getLogger("apscheduler.scheduler").warning(
        'Execution of job "workos" skipped: maximum number of running instances reached (1)')
    assert not any("maximum number of running instances" in r.getMessage() for r in caplog.records)
