"""``TickRunner``: the daemon's tick threads, as few at a time as keep up.

A walk hands its due sources over in a burst (at 200 sources every 10 s, about 20 a second). On a pool
whose threads all wait on one queue, every tick of the burst woke a thread of its own: on a quiet machine
(idle cores) those threads then ran at once and handed the GIL to each other at every statement and
socket call, each hand-off a futex wake-up and a switch of core (bench/README.md, "G", session 11).

Here one thread drains the burst in turn while its ticks are quick; a tick that has run ``handoff``
seconds (a slow provider, a large page) no longer holds the others back: the next queued tick starts on
another thread then, up to ``threads`` at once. So a queued tick starts at most ``handoff`` seconds
later than on a pool of ``threads`` threads, and never waits for a slow tick to end while a thread is free.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

#: How long a tick runs alone before the next queued tick starts beside it (an idle poll over a fast
#: network takes a few milliseconds; a slow provider takes longer and gets company this soon).
HANDOFF_SECONDS = 0.05


class TickRunner:
    """Runs submitted ticks on at most ``threads`` threads (made as needed, daemon threads).

    A queued tick starts when no tick younger than ``handoff`` seconds is running (so quick ticks run one
    after the other on one thread), and at once if none is running; ``monotonic`` is the clock of both.
    ``done`` (given to ``submit``) is called after the tick, or when ``close`` drops it unstarted. Thread-safe.
    """

    def __init__(self, threads: int, *, handoff: float = HANDOFF_SECONDS, name: str = "tick",
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limit = max(1, threads)
        self.handoff = handoff
        self.name = name
        self.monotonic = monotonic
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[tuple[Callable[[], object], Callable[[], object]]] = deque()
        self._started: dict[int, float] = {}  # thread ident → when its running tick started
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._watching = False  # a waiting thread is timing the young tick

    def submit(self, tick: Callable[[], object], done: Callable[[], object] = lambda: None) -> None:
        """Queue ``tick``; RuntimeError once closed."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the tick runner is closed")
            self._queue.append((tick, done))
            self._call_watcher()

    def close(self) -> None:
        """Start no more ticks (queued ones are dropped, their ``done`` called); running ones finish."""
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for _, done in dropped:
            done()

    @property
    def threads(self) -> int:
        """Threads made so far."""
        with self._cond:
            return len(self._threads)

    def _run(self) -> None:
        me = threading.get_ident()
        with self._cond:
            item = self._take(me)
        while item is not None:
            tick, done = item
            try:
                tick()
            except BaseException:  # the daemon's ticks catch their errors; this thread ends, another may come
                with self._cond:
                    self._started.pop(me, None)
                    self._threads.remove(threading.current_thread())
                    self._call_watcher()
                done()
                raise
            done()
            with self._cond:  # the next tick in turn, before a waiting thread is woken for it
                self._started.pop(me, None)
                item = self._take(me)

    def _take(self, me: int) -> tuple[Callable[[], object], Callable[[], object]] | None:
        """The next tick for this thread, once it may start (None once closed). Holds ``_cond``.

        One waiting thread (the watcher) waits with a timeout, for the young running tick to turn slow;
        the others wait for a wake-up, so that quick ticks cost no wake-up of a thread each."""
        while not self._closed:
            now = self.monotonic()
            fresh = [at + self.handoff for at in self._started.values() if now - at < self.handoff]
            if self._queue and not fresh:
                self._started[me] = now
                item = self._queue.popleft()
                self._call_watcher()
                return item
            if self._queue and not self._watching:
                self._watching = True
                try:
                    self._cond.wait(min(fresh) - now)
                finally:
                    self._watching = False
            else:
                self._cond.wait()
        return None

    def _call_watcher(self) -> None:
        """With ticks queued and no thread watching them: wake a waiting thread, or make one. Holds ``_cond``."""
        if not self._queue or self._watching:
            return
        if len(self._threads) > len(self._started):
            self._cond.notify()
        elif len(self._threads) < self.limit:
            thread = threading.Thread(target=self._run, name=f"{self.name}_{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
