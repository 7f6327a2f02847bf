"""Retention: ``syncd prune``, and the prune ``syncd run`` does by itself within a minute of starting, then daily.

One replica at a time: a prune claims the lease of its own row in ``syncd_sources`` (key ``_prune``, kind
``maintenance``) through ``Store.claim``, like a cursor, so its owner lock and fencing token are the store's
usual ones; a replica that finds it held skips. A complete prune pauses that row for a day (``PRUNE_EVERY``):
every replica's hourly check (``CHECK_EVERY_SECONDS``) then finds it paused and does nothing, so the prune runs
daily whatever the number of replicas. ``syncd prune`` runs at once, whatever the pause.

What goes and what stays, and how the horizon stops pruned history from running again: ``syncd.store.retention``.
Each step is its own short transaction; the stop event (SIGTERM) ends a prune between two of them, and the next
one carries on. On SQLite the prune yields the write lock for ``SQLITE_YIELD_SECONDS`` between transactions, so a
page commit waiting for it gets it, and gives the freed pages back to the file system a few MB at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from syncd.contracts import Clock, CursorSpec, Lease, Skip, SkipReason
from syncd.engine.decisions import default_replica_id, error_text
from syncd.store import retention as sql
from syncd.store.sqlstore import SqlStore

if TYPE_CHECKING:
    from syncd.ops.app import App
    from syncd.ops.scheduler import Chore

log = logging.getLogger("syncd.retention")

PRUNE_KEY = sql.PRUNE_KEY
PRUNE_EVERY = timedelta(days=1)
#: After a failed prune, the next try.
RETRY_AFTER = timedelta(hours=1)
#: ``syncd run``: the first look within a minute of starting, then hourly (a prune runs when its day is up).
FIRST_AFTER_SECONDS = 30.0
CHECK_EVERY_SECONDS = 3600.0
#: SQLite: the pause between two prune transactions, in which a waiting page commit takes the write lock.
SQLITE_YIELD_SECONDS = 0.02


@dataclass
class PruneReport:
    """What a prune did (``skipped``: why it did nothing)."""

    cutoff: datetime
    days: int
    skipped: str | None = None
    events: int = 0
    kept: int = 0  # events older than the cutoff kept for their runs (open, or dead: replayable)
    ticks: int = 0
    windows: int = 0
    tombstones: int = 0
    horizons: list[str] = field(default_factory=list)
    space_before: sql.Space | None = None
    space_after: sql.Space | None = None
    stopped: bool = False

    def meta(self) -> dict[str, Any]:
        return {"events": self.events, "kept": self.kept, "ticks": self.ticks, "windows": self.windows,
                "tombstones": self.tombstones, "cutoff": self.cutoff.isoformat()}

    def text(self) -> str:
        if self.skipped is not None:
            return f"prune skipped: {self.skipped}"
        head = "prune stopped early (the next one goes on)" if self.stopped else "pruned"
        lines = [f"{head}: history before {self.cutoff.isoformat()} (SYNCD_RETENTION_DAYS={self.days}): "
                 f"{self.events} events with their succeeded runs, {self.ticks} ticks, {self.windows} finished "
                 f"backfill windows, {self.tombstones} tombstones; {self.kept} older events kept for their runs "
                 "(open, or dead and replayable)"]
        before, after = self.space_before, self.space_after
        if before is not None and after is not None:
            lines.append(f"database: {mb(before.used)} before, {mb(after.used)} after ({mb(after.free)} free inside)")
            if not after.returns_space:
                lines.append("this SQLite file was created before syncd used incremental vacuum: freed pages are "
                             "reused, but the file does not shrink; run `syncd prune --vacuum` once (it rewrites "
                             "the file, blocking syncs meanwhile, and needs as much free disk as the file)")
        return "\n".join(lines)


def mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


class Pruner:
    """Prunes ``store``'s database of what is older than ``days`` (see the module docstring)."""

    def __init__(self, store: SqlStore, *, days: int, clock: Clock, owner: str, lease_seconds: float,
                 stop: threading.Event | None = None) -> None:
        self.store, self.days, self.clock, self.owner = store, days, clock, owner
        self.lease_seconds = lease_seconds
        self.stop = stop or threading.Event()
        self._renewed = 0.0  # time.monotonic() of the last renewal of the prune's lease

    @property
    def db(self) -> Engine:
        return self.store.db

    def run(self, *, now_if_paused: bool = False) -> PruneReport:
        """One prune, unless another replica is pruning, or (``now_if_paused`` False) the last was within a day."""
        now = self.clock.now()
        report = PruneReport(cutoff=now - timedelta(days=self.days), days=self.days)
        with self.db.begin() as conn:
            sql.ensure_chore(conn, PRUNE_KEY, now)
            if now_if_paused:
                sql.schedule_chore(conn, PRUNE_KEY, now, next_at=None)
        claimed = self.store.claim(CursorSpec(PRUNE_KEY, PRUNE_KEY), owner=self.owner,
                                   lease_seconds=self.lease_seconds, clock=self.clock)
        if isinstance(claimed, Skip):
            report.skipped = ("another replica is pruning now" if claimed.reason is SkipReason.LEASE_HELD
                              else f"not due yet ({claimed.detail or 'paused'})")
            return report
        self._renewed = time.monotonic()
        try:
            self._prune(claimed, report)
        except Exception as exc:
            with self.db.begin() as conn:
                sql.schedule_chore(conn, PRUNE_KEY, self.clock.now(), next_at=now + RETRY_AFTER,
                                   error=error_text(exc))
            raise
        finally:
            claimed.release()
        with self.db.begin() as conn:
            sql.schedule_chore(conn, PRUNE_KEY, self.clock.now(), next_at=None if report.stopped else now + PRUNE_EVERY,
                               succeeded=not report.stopped, meta=report.meta())
        return report

    def _prune(self, lease: Lease, report: PruneReport) -> None:
        cutoff, now = report.cutoff, self.clock.now()
        with self.db.connect() as conn:
            report.space_before = sql.space(conn)
        with self.db.connect() as conn:
            streams = sql.streams(conn)
        for stream in streams:
            after: tuple[datetime, str] | None = None
            while self._going(lease, report):
                with self.db.begin() as conn:  # the horizon moves in the transaction that deletes
                    batch = sql.prune_events(conn, stream, cutoff, after, now)
                report.events += batch.deleted
                report.kept += batch.kept
                if batch.deleted and stream not in report.horizons:
                    report.horizons.append(stream)
                if batch.after is None:
                    break
                after = batch.after
        while self._going(lease, report):
            with self.db.begin() as conn:
                deleted = sql.prune_ticks(conn, cutoff)
            report.ticks += deleted
            if deleted < sql.BATCH_TICKS:
                break
        if self._going(lease, report):
            with self.db.begin() as conn:
                report.windows = sql.prune_windows(conn, cutoff, now)
                report.tombstones = sql.prune_tombstones(conn, cutoff)
        while self._going(lease, report) and sql.vacuum_step(self.db) > 0:
            pass
        with self.db.connect() as conn:
            report.space_after = sql.space(conn)

    def _going(self, lease: Lease, report: PruneReport) -> bool:
        """Between two transactions: False once stopped (SIGTERM) or fenced out (the lease, renewed every third
        of its length, was taken over); on SQLite, yield the write lock first."""
        if self.db.dialect.name == "sqlite" and self.stop.wait(SQLITE_YIELD_SECONDS):
            pass
        if not self.stop.is_set() and time.monotonic() - self._renewed < self.lease_seconds / 3:
            return True
        if self.stop.is_set() or not lease.renew():
            report.stopped = True
            return False
        self._renewed = time.monotonic()
        return True


def pruner_for(app: App) -> Pruner:
    engine = app.engine
    assert isinstance(engine.store, SqlStore)
    return Pruner(engine.store, days=app.settings.retention_days, clock=engine.clock, owner=engine.replica_id,
                  lease_seconds=app.settings.lease_seconds, stop=app.stop)


class PruneJob:
    """``syncd run``'s prune: each call prunes if the day since the last prune (by any replica) is up."""

    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner

    def __call__(self) -> PruneReport:
        report = self.pruner.run()
        if report.skipped is None:
            log.info("%s", report.text().replace("\n", "; "))
        else:
            log.debug("%s", report.text())
        return report


def prune_chores(app: App) -> list[Chore]:
    """The scheduler's chore for ``syncd run``."""
    from syncd.ops.scheduler import Chore

    return [Chore("prune", PruneJob(pruner_for(app)), every_seconds=CHECK_EVERY_SECONDS,
                  first_after_seconds=FIRST_AFTER_SECONDS)]


def run_command(database_url: str, *, days: int, lease_seconds: int, replica_id: str | None,
                vacuum: bool = False, clock: Clock | None = None, stop: threading.Event | None = None) -> PruneReport:
    """``syncd prune``: prune now (``vacuum``: first convert an older SQLite file to incremental vacuum)."""
    from syncd.contracts import SystemClock
    from syncd.store.db import create_engine
    from syncd.store.schema import migrate

    db = create_engine(database_url)
    store = SqlStore(db)
    try:
        migrate(db)
        if vacuum:
            sql.full_vacuum(db)
        return Pruner(store, days=days, clock=clock or SystemClock(), owner=replica_id or default_replica_id(),
                      lease_seconds=lease_seconds, stop=stop).run(now_if_paused=True)
    finally:
        store.close()
        db.dispose()
