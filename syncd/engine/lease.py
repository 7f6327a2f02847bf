"""``LeaseKeeper``: keeps a claimed cursor's lease alive through slow pages, from a thread of its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from syncd.engine.decisions import error_text
from syncd.errors import LeaseLostError

log = logging.getLogger("syncd.engine")


class LeaseKeeper:
    """Renews a held lease (``renew``: True while still ours) every third of its length while a tick works.

    Page commits renew the lease too; the keeper covers a page slower than the lease (slow handlers, an
    overloaded host), which another replica would otherwise take over mid-page and fence out, over and over,
    so that no replica ever commits. Safety never depends on it: commits stay fenced on the token. It gives
    up once no page has committed for ``STALL_LEASES`` lease lengths, so a hung tick still loses its lease
    (and a paused process pauses its keeper with it). Only where writers run concurrently (PostgreSQL): on
    SQLite the page holds the single write lock, so nobody can take a lease mid-page, and the keeper could
    not write either (``enabled=False``).
    """

    STALL_LEASES = 10

    def __init__(self, key: str, renew: Callable[[], bool], lease_seconds: float, *, enabled: bool) -> None:
        self.key, self.renew, self.lease_seconds, self.enabled = key, renew, lease_seconds, enabled
        self.lost = False
        self._done = threading.Event()
        self._progress = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name=f"lease-keeper:{self.key}", daemon=True)
            self._thread.start()

    def check(self) -> None:
        """Called between pages: a page committed (progress), and fail fast if the lease is known lost."""
        self._progress = time.monotonic()
        if self.lost:
            raise LeaseLostError(self.key)

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        seconds = self.lease_seconds
        while not self._done.wait(seconds / 3):
            if time.monotonic() - self._progress > self.STALL_LEASES * seconds:
                log.warning("no page of %s committed for %.0fs; no longer renewing its lease", self.key,
                            time.monotonic() - self._progress, extra={"source": self.key})
                return
            try:
                kept = self.renew()
            except Exception as exc:  # the database may be down: the page will fail on its own
                log.warning("could not renew the lease of %s: %s", self.key, error_text(exc),
                            extra={"source": self.key})
                continue
            if not kept:
                self.lost = True
                return
