"""PostgreSQL: wake the worker pool when any replica enqueues runs (``LISTEN syncd_runs``).

A page transaction that enqueues runs sends ``NOTIFY syncd_runs`` (``queue.notify``), delivered when it
commits; every replica's listener wakes its dispatcher, which claims at once instead of at its next poll.
A wake-up is only an optimisation: the dispatcher polls anyway, so a listener that lost its connection
just reconnects, and nothing is lost meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import Engine

from syncd.store.queue import CHANNEL

log = logging.getLogger("syncd.workers")

RECONNECT_SECONDS = 5.0


class RunListener:
    """A daemon thread LISTENing on ``syncd_runs``; calls ``wake()`` per notification. Never raises."""

    def __init__(self, db: Engine, wake: Callable[[], None], *, reconnect_seconds: float = RECONNECT_SECONDS) -> None:
        # A libpq connection string for psycopg, password included, never logged.
        self._conninfo = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._wake = wake
        self._reconnect = reconnect_seconds
        self.listening = threading.Event()  # set while LISTEN is active (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncd-runs-listen", daemon=True)

    def start(self) -> RunListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                            self._wake()
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("LISTEN %s failed (%s); workers poll meanwhile, retrying in %.0fs", CHANNEL,
                            type(exc).__name__, self._reconnect)
                self._stop.wait(self._reconnect)
        self.listening.clear()


def listen(db: Engine, wake: Callable[[], None]) -> RunListener:
    return RunListener(db, wake).start()
