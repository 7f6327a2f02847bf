"""The daemon's tick threads (``syncd.ops.tickrunner.TickRunner``): quick ticks of a walk run one after the
other on one thread (no thread woken per tick), a slow tick gets company, closing drops queued ticks.

README "What happens when…": → ``test_quick_ticks_run_in_turn_on_one_thread``,
``test_a_slow_tick_does_not_hold_the_others_back``. No sleeps: every wait is on the event itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from syncd.ops.tickrunner import TickRunner

WAIT = 10.0  # seconds; only a broken runner waits this long


def _recorder(ran: list[tuple[str, int]], lock: threading.Lock, name: str,
              gate: threading.Event | None = None) -> Callable[[], None]:
    def tick() -> None:
        if gate is not None:
            assert gate.wait(WAIT)
        with lock:
            ran.append((name, threading.get_ident()))

    return tick


def test_quick_ticks_run_in_turn_on_one_thread() -> None:
    """A burst queued behind a running tick that is still young waits for it and runs on its thread:
    on a pool with a thread per queued tick, b..j would start on threads of their own at once."""
    runner = TickRunner(8, handoff=3600.0)  # never slow within the test
    ran: list[tuple[str, int]] = []
    lock, gate, finished = threading.Lock(), threading.Event(), threading.Semaphore(0)
    try:
        runner.submit(_recorder(ran, lock, "a", gate), finished.release)
        for name in "bcdefghij":
            runner.submit(_recorder(ran, lock, name), finished.release)
        gate.set()
        for _ in range(10):
            assert finished.acquire(timeout=WAIT)
    finally:
        runner.close()
    assert [name for name, _ in ran] == list("abcdefghij")  # in the walk's order (oldest poll first)
    assert len({thread for _, thread in ran}) == 1
    assert runner.threads <= 2  # the one ticking, and at most one waiting to take over from a slow tick


def test_a_slow_tick_does_not_hold_the_others_back() -> None:
    """A tick that runs past ``handoff`` gets company: the next queued tick starts on another thread while
    the slow one is still running (here it cannot end before the other ran)."""
    runner = TickRunner(8, handoff=0.0)
    ran: list[tuple[str, int]] = []
    lock, other_ran, finished = threading.Lock(), threading.Event(), threading.Semaphore(0)

    def quick() -> None:
        _recorder(ran, lock, "quick")()
        other_ran.set()

    try:
        runner.submit(_recorder(ran, lock, "slow", other_ran), finished.release)
        runner.submit(quick, finished.release)
        assert finished.acquire(timeout=WAIT) and finished.acquire(timeout=WAIT)
    finally:
        runner.close()
    assert [name for name, _ in ran] == ["quick", "slow"]
    assert ran[0][1] != ran[1][1]


def test_slow_ticks_run_on_at_most_the_threads_given() -> None:
    runner = TickRunner(2, handoff=0.0)
    running, most, lock = [0], [0], threading.Lock()
    both, release, finished = threading.Barrier(2, timeout=WAIT), threading.Event(), threading.Semaphore(0)

    def tick() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if not release.is_set():
            both.wait()  # the first two meet: two at once, and only then may they end
            release.set()
        with lock:
            running[0] -= 1

    try:
        for _ in range(5):
            runner.submit(tick, finished.release)
        for _ in range(5):
            assert finished.acquire(timeout=WAIT)
    finally:
        runner.close()
    assert most[0] == 2
    assert runner.threads == 2


def test_closing_drops_queued_ticks_and_refuses_new_ones() -> None:
    runner = TickRunner(1, handoff=3600.0)
    started, gate = threading.Event(), threading.Event()
    ran: list[str] = []
    done: list[str] = []

    def first() -> None:
        started.set()
        assert gate.wait(WAIT)
        ran.append("first")

    first_done = threading.Event()
    runner.submit(first, first_done.set)
    assert started.wait(WAIT)
    runner.submit(lambda: ran.append("queued"), lambda: done.append("queued"))
    runner.close()
    assert done == ["queued"]  # dropped unstarted: its walker forgets it
    gate.set()
    assert first_done.wait(WAIT)  # the running one finishes
    assert ran == ["first"]
    with pytest.raises(RuntimeError):
        runner.submit(lambda: None)
