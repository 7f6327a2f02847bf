"""PostgreSQL ``LISTEN``: a thread that hears a channel's notifications and hands each one to a callback.

Two channels use it: ``syncd_runs`` (a page transaction that enqueues runs sends ``NOTIFY syncd_runs``,
``queue.notify``, delivered when it commits; every replica's listener wakes its dispatcher, which claims at
once instead of at its next poll) and ``syncd_sql`` (a table source's trigger: ``connectors.sql.notify``).
A notification is only ever a wake-up: whoever is woken polls anyway, so a listener that lost its
connection just reconnects after ``RECONNECT_SECONDS``, and nothing is lost meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import Engine, make_url

from syncd.settings import safe_url
from syncd.store.queue import CHANNEL

log = logging.getLogger("syncd.workers")

RECONNECT_SECONDS = 5.0


def conninfo(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as a libpq connection string for psycopg (the password
    included: never logged)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    """A daemon thread LISTENing on ``channel`` in the database at ``url``; calls ``on_notify(payload)`` per
    notification. Reconnects after ``reconnect_seconds`` when the connection fails; never raises into the
    caller (a raising callback is logged, and the listener goes on). ``listening`` is set while LISTEN is
    active (tests wait on it). ``logger`` and ``meanwhile`` word its warnings for its users."""

    def __init__(self, url: str, channel: str, on_notify: Callable[[str], None], *, name: str,
                 reconnect_seconds: float = RECONNECT_SECONDS, logger: logging.Logger = log,
                 meanwhile: str = "polling goes on") -> None:
        self.url, self.channel, self.on_notify = url, channel, on_notify
        self.reconnect_seconds = reconnect_seconds
        self.listening = threading.Event()
        self._log, self._meanwhile = logger, meanwhile
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> PgListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo(self.url), autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                self._log.warning("LISTEN %s on %s failed (%s); %s, retrying in %.0fs", self.channel,
                                  safe_url(self.url), type(exc).__name__, self._meanwhile, self.reconnect_seconds)
                self._stop.wait(self.reconnect_seconds)
        self.listening.clear()

    def _deliver(self, payload: str) -> None:
        try:
            self.on_notify(payload)
        except Exception:  # a wake-up is an optimisation; it must never kill the listener
            self._log.exception("a %s notification's wake-up failed", self.channel)


def listen(db: Engine, wake: Callable[[], None]) -> PgListener:
    """Wake the worker pool (``wake()``) on every ``NOTIFY syncd_runs`` of any replica."""
    url = db.url.render_as_string(hide_password=False)
    return PgListener(url, CHANNEL, lambda _payload: wake(), name="syncd-runs-listen",
                      meanwhile="workers poll meanwhile").start()
