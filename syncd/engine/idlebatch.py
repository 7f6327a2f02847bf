"""``TickBatch``: the idle ticks of one daemon walk share one claim and one release transaction
(issue 28; bench/README.md "G"; design idle_batch).

A walk hands its due live sources to the tick threads at once. The batch claims all their leases first
(``Store.claim_many``: one ``UPDATE … RETURNING``); each tick takes its lease from the batch (or claims
alone, with the exact Skip, when the batch left it out). A tick that committed nothing with events (an
idle poll's 304, whose cursor move and meta are held on the lease) does not release: its release and
tick record wait in the batch and are written together (``Store.release_many``, all or nothing, each row
fenced on its own token), when

(a) a member's tick ends and no member is left to start (quick ticks run in turn: one flush per walk);
(b) a member's tick ends with ``FLUSH_TICKS`` releases waiting;
(c) the next walk finds releases waiting longer than ``min(1 s, lease_seconds / 5)`` (ticks stuck behind
    slow ones); ``Daemon.wait`` flushes what is left on a graceful stop.

Any other tick (events, a failure, a window) releases on its own, as without a batch. A failed flush
(a lease taken over, the database down) releases each lease alone (``settle``), with the outcome a tick
of its own would have had. A crash before a flush loses no event: only releases of ticks that committed
nothing wait; the cursor stays where it was and the empty page is read again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from syncd.contracts import Lease, TickRecord
from syncd.engine.decisions import error_text
from syncd.errors import LeaseLostError

if TYPE_CHECKING:
    from syncd.engine.ingest import SyncEngine, Target

log = logging.getLogger("syncd.engine")

#: Releases waiting in a batch that a member's end flushes at once.
FLUSH_TICKS = 64
#: The longest a release waits for its batch (bounded further by a fifth of the lease).
FLUSH_SECONDS = 1.0


def settle(engine: SyncEngine, lease: Lease, tick: TickRecord | None, succeeded: bool) -> str | None:
    """Release ``lease`` with ``tick``'s record (None: a plain release), as a tick's end does. Never raises.
    Returns the error when the held cursor move was fenced out: the tick then failed, recorded so (its
    failure on the source, its record not ok); a database error only logs (the owner lock still goes, so
    the next claim takes the lease over at once)."""
    try:
        lease.release(tick, succeeded=succeeded)
        return None
    except LeaseLostError as exc:  # an empty page's held cursor move was fenced out, as a page is
        error = error_text(exc)
        log.error("sync of %s failed: %s", lease.key, error, extra={"source": lease.key})
        if tick is not None:
            try:
                engine.store.record_failure(tick.source, tick.finished_at, error)
                engine.store.record_tick(replace(tick, ok=False, error=error), succeeded=False)
            except Exception as db_exc:
                log.error("could not record the tick of %s: %s", tick.source, error_text(db_exc))
        return error
    except Exception as exc:
        if tick is not None:
            log.error("could not record the tick of %s: %s", tick.source, error_text(exc))
        try:
            lease.release()
        except Exception as again:
            log.warning("could not release the lease of %s (the next claim takes it over): %s", lease.key,
                        error_text(again), extra={"source": lease.key})
        return None


class TickBatch:
    """One walk's ticks of ``targets`` (live cursors) on ``engine``; ``tick(target, batch)`` runs one (default:
    ``engine.sync(target, batch=batch)``). Thread-safe: the members run on the tick threads, and the walk
    thread flushes (``flush_older``)."""

    def __init__(self, engine: SyncEngine, targets: Sequence[Target],
                 tick: Callable[[Target, TickBatch], object] | None = None) -> None:
        self.engine = engine
        self.targets = {target.key: target for target in targets}
        self._tick = tick or (lambda target, batch: engine.sync(target, batch=batch))
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._claimed_at: datetime | None = None
        self._unstarted = set(self.targets)
        self._unfinished = set(self.targets)
        self.pending: list[tuple[Lease, TickRecord | None, bool, datetime]] = []

    def __contains__(self, key: object) -> bool:
        return key in self.targets

    def claim(self) -> TickBatch:
        """Claim every member's lease in one transaction (``Store.claim_many``); if that fails, each member
        claims alone."""
        engine = self.engine
        try:
            leases = engine.store.claim_many([t.spec for t in self.targets.values()], owner=engine.replica_id,
                                             lease_seconds=engine.lease_seconds, clock=engine.clock)
        except Exception as exc:  # contention or the database: the members' own claims say what it is
            log.debug("could not claim %d sources at once: %s", len(self.targets), error_text(exc))
            leases = {}
        with self._lock:
            self._leases, self._claimed_at = dict(leases), engine.clock.now()
        return self

    def run(self, key: str) -> object:
        """The tick of member ``key`` (on a tick thread); what ``tick`` returns (``engine.sync``: its result)."""
        with self._lock:
            self._unstarted.discard(key)
        return self._tick(self.targets[key], self)

    def take(self, key: str) -> Lease | None:
        """Member ``key``'s lease claimed by the batch (None: claim it alone). A lease that waited a third of
        its length for its tick (behind slow ones) is released and None returned: a fresh claim gives the
        tick its whole lease."""
        with self._lock:
            lease = self._leases.pop(key, None)
            claimed_at = self._claimed_at
        if lease is None or claimed_at is None:
            return None
        if (self.engine.clock.now() - claimed_at).total_seconds() > self.engine.lease_seconds / 3:
            settle(self.engine, lease, None, False)
            return None
        return lease

    def hold(self, lease: Lease, tick: TickRecord, succeeded: bool) -> None:
        """Keep an idle tick's release and record for the batch's flush."""
        with self._lock:
            self.pending.append((lease, tick, succeeded, self.engine.clock.now()))

    def finished(self, key: str) -> None:
        """Member ``key``'s tick ended, or was dropped unstarted (the tick runner's ``done``): a lease it never
        took is released with the others; then the flush rules (a) and (b)."""
        with self._lock:
            self._unstarted.discard(key)
            self._unfinished.discard(key)
            lease = self._leases.pop(key, None)
            if lease is not None:
                self.pending.append((lease, None, False, self.engine.clock.now()))
            due = bool(self.pending) and (not self._unstarted or len(self.pending) >= FLUSH_TICKS)
        if due:
            self.flush()

    def flush_older(self) -> bool:
        """Flush if a release waited past the bound (c) (the walk thread); True once the batch is over
        (every member finished, nothing waiting)."""
        bound = min(FLUSH_SECONDS, self.engine.lease_seconds / 5)
        now = self.engine.clock.now()
        with self._lock:
            due = any((now - at).total_seconds() >= bound for *_, at in self.pending)
        if due:
            self.flush()
        with self._lock:
            return not self._unfinished and not self.pending

    def flush(self) -> None:
        """Write every waiting release in one transaction (``Store.release_many``); if it fails, each alone
        (``settle``). Never raises."""
        with self._lock:
            items, self.pending = self.pending, []
        if not items:
            return
        written = False
        try:
            written = self.engine.store.release_many([(lease, tick, ok) for lease, tick, ok, _ in items])
        except Exception as exc:
            log.warning("could not release %d leases at once; one by one: %s", len(items), error_text(exc))
        if not written:
            for lease, tick, ok, _ in items:
                settle(self.engine, lease, tick, ok)
