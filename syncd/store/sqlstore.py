"""``SqlStore``: the ``Store`` contract (syncd.contracts) on SQLAlchemy Core, SQLite or PostgreSQL.

The handles it gives out hold what every call needs: a ``SqlLease`` its key, fencing token, owner, lease
length and clock; a ``SqlTxn`` its connection and stream. The SQL is in ``cursors`` (cursors, leases,
ticks), ``ledger`` (ledger, runs, steps) and ``dead`` (replay); the dialects' differences stay there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from syncd.contracts import (
    ClaimedRun,
    Clock,
    CursorSpec,
    Event,
    Lease,
    Listener,
    Quarantined,
    Recorded,
    RunKey,
    RunRecord,
    RunStatus,
    Skip,
    SkipReason,
    SourceRow,
    TickRecord,
)
from syncd.errors import ClaimLostError, LeaseLostError
from syncd.store import cursors, dead, leasebatch, ledger, notify, objindex, quarantine, queue, retry
from syncd.store.budget import SqlBudgets
from syncd.store.connect import reading
from syncd.store.owners import OwnerLock, owner_locks


class SqlTxn:
    """A page's or a run's transaction on ``conn`` (see ``PageTxn`` and ``RunTxn``)."""

    __slots__ = ("_lease", "conn", "stream")

    def __init__(self, conn: Connection, stream: str, lease: SqlLease | None) -> None:
        self.conn, self.stream, self._lease = conn, stream, lease

    def step_results(self, key: RunKey) -> dict[str, Any]:
        return ledger.step_results(self.conn, key)

    def store_steps(self, key: RunKey, results: Mapping[str, Any], now: datetime) -> None:
        ledger.store_steps(self.conn, key, results, now)

    def save_run(self, record: RunRecord) -> None:
        ledger.update_run(self.conn, record)

    def record_events(self, events: Sequence[Event], now: datetime) -> Recorded:
        recorded = ledger.record_events(self.conn, events, now)
        if recorded.new and self._lease is not None:  # their object ids wait in the backlog: see claim
            self._lease.store._objects_indexed.discard(self.stream)
        return recorded

    def quarantine(self, entries: Sequence[Quarantined], now: datetime) -> None:
        quarantine.record(self.conn, entries, now)

    def existing_runs(self, workflows: Iterable[str], event_ids: Iterable[str]) -> set[tuple[str, str]]:
        return ledger.existing_runs(self.conn, self.stream, workflows, event_ids)

    def write_runs(self, records: Sequence[RunRecord]) -> None:
        ledger.insert_runs(self.conn, records)
        if any(r.status is RunStatus.QUEUED or r.status.suspended for r in records):
            queue.notify(self.conn)

    def write_batch_runs(self, template: RunRecord, event_ids: Sequence[str]) -> None:
        ledger.insert_batch_runs(self.conn, template, event_ids)

    def advance(self, cursor: str | None, *, meta: Mapping[str, Any] | None, new_events: int,
                progress: float | None = None) -> None:
        lease = self._lease
        assert lease is not None, "a replay's transaction has no cursor"
        if not cursors.commit_cursor(self.conn, lease.key, token=lease.token, owner=lease.owner, cursor=cursor,
                                     meta=dict(meta) if meta else None, new_events=new_events,
                                     now=lease.clock.now(), lease_seconds=lease.lease_seconds, progress=progress):
            raise LeaseLostError(lease.key)


class SqlClaimTxn(SqlTxn):
    """The transaction of a claimed run (see ``ClaimTxn``)."""

    __slots__ = ("_claimed", "_clock", "_seconds")

    def __init__(self, conn: Connection, claimed: ClaimedRun, clock: Clock, seconds: float) -> None:
        super().__init__(conn, claimed.due.event.stream, None)
        self._claimed, self._clock, self._seconds = claimed, clock, seconds

    def hold(self) -> None:
        if not queue.hold(self.conn, self._claimed, self._clock.now() + timedelta(seconds=self._seconds)):
            raise ClaimLostError(_name(self._claimed))

    def finish(self, record: RunRecord) -> None:
        if not queue.finish(self.conn, self._claimed, record):
            raise ClaimLostError(_name(self._claimed))


def _name(claimed: ClaimedRun) -> str:
    return f"{claimed.due.workflow} on {claimed.due.event.id}"


@dataclass(eq=False)
class SqlLease:
    """A claimed cursor (see ``Lease``)."""

    store: SqlStore
    key: str
    token: int
    owner: str
    cursor: str | None
    lease_seconds: float
    clock: Clock
    owner_lock: OwnerLock | None = None  # dies with this process: others see this owner gone at once
    _advance: tuple[str | None, dict[str, Any] | None] | None = None  # see advance_on_release

    def renew(self) -> bool:
        with self.store.db.begin() as conn:
            return cursors.renew_lease(conn, self.key, token=self.token, owner=self.owner, now=self.clock.now(),
                                       seconds=self.lease_seconds)

    def advance_on_release(self, cursor: str | None, meta: Mapping[str, Any] | None) -> None:
        self._advance = (cursor, dict(meta) if meta else None)

    def release(self, tick: TickRecord | None = None, *, succeeded: bool = False) -> None:
        pending, self._advance = self._advance, None
        try:
            with self.store.db.begin() as conn:
                success = tick.finished_at if tick is not None and succeeded else None
                advance = (self.owner, *pending) if pending is not None else None
                if not cursors.release_lease(conn, self.key, token=self.token, now=self.clock.now(),
                                             advance=advance, succeeded_at=success):
                    if pending is not None:  # fenced out: the held cursor move is not written (rolled back)
                        raise LeaseLostError(self.key)
                    if tick is not None and success is not None:  # taken over since: the outcome is still the source's
                        _record_success(conn, tick.source, success)
                if tick is not None:
                    cursors.record_tick(conn, tick)
        finally:  # the row first: a claimer that finds the lock free finds the row free, or a dead owner
            if self.owner_lock is not None:
                self.owner_lock.release()

    @contextmanager
    def page(self, stream: str) -> Iterator[SqlTxn]:
        with self.store.db.connect() as conn, conn.begin():
            ledger.bound_idle_time(conn, self.lease_seconds)
            ledger.lock_stream(conn, stream)  # a backfill and a live tick meeting on an event run it once
            yield SqlTxn(conn, stream, self)

    def mark_done(self, workflows: Iterable[str] = ()) -> None:
        with self.store.db.begin() as conn:
            cursors.set_source_fields(conn, self.key, now=self.clock.now(), state="done", progress=1.0,
                                      window_workflows=sorted(workflows))


class SqlStore:
    """The ``Store`` on an SQLAlchemy engine made by ``syncd.store.connect.create_engine``."""

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.owners = owner_locks(db)
        #: Provider credentials' request budgets, shared by the replicas (``syncd.store.budget``).
        self.budgets = SqlBudgets(db)
        #: Streams whose object-index backlog this process found empty, until it records new events of them.
        self._objects_indexed: set[str] = set()

    @property
    def concurrent_writers(self) -> bool:
        return self.db.dialect.name == "postgresql"

    def claim(self, spec: CursorSpec, *, owner: str, lease_seconds: float, clock: Clock) -> SqlLease | Skip:
        lock: OwnerLock | None = None
        now = clock.now()
        try:
            with self.db.begin() as conn:
                claimed: tuple[int, str | None, OwnerLock] | Skip | None = (
                    self._take_free(conn, spec, owner, lease_seconds, now) if spec.window is None else None)
                if claimed is None:  # not a free live cursor: read the row (the exact Skip, windows, new rows)
                    claimed = self._claim(conn, spec, owner=owner, lease_seconds=lease_seconds, now=now)
                if isinstance(claimed, Skip):
                    return claimed
                token, cursor, lock = claimed
        except _Contended:  # rolled back: the concurrent claimer that holds the new token's lock goes on
            return Skip(SkipReason.LEASE_HELD)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        lease = SqlLease(self, spec.key, token, owner, cursor, lease_seconds, clock, lock)
        self._index_objects(spec.source)
        return lease

    def claim_many(self, specs: Sequence[CursorSpec], *, owner: str, lease_seconds: float,
                   clock: Clock) -> dict[str, SqlLease]:
        taken = leasebatch.take_free(self.db, self.owners, [s.key for s in specs if s.window is None], owner=owner,
                                     now=clock.now(), seconds=lease_seconds)
        leases = {key: SqlLease(self, key, token, owner, cursor, lease_seconds, clock, lock)
                  for key, token, cursor, lock in taken}
        try:
            for spec in specs:
                if spec.key in leases:
                    self._index_objects(spec.source)
        except BaseException:  # nobody will tick with these: free them (best effort) before raising
            for lease in leases.values():
                with suppress(Exception):
                    lease.release()
            raise
        return leases

    def release_many(self, items: Sequence[tuple[Lease, TickRecord | None, bool]]) -> bool:
        rows: list[cursors.Release] = []
        for lease, tick, succeeded in items:
            assert isinstance(lease, SqlLease) and lease.store is self, "a lease of another store"
            pending = lease._advance  # kept until COMMIT: a fallback release must write it again
            rows.append(cursors.Release(lease.key, lease.token, lease.clock.now(),
                                        (lease.owner, *pending) if pending is not None else None,
                                        tick.finished_at if tick is not None and succeeded else None))
        if not leasebatch.release_all(self.db, rows, [tick for _, tick, _ in items if tick is not None]):
            return False
        for lease, _, _ in items:
            assert isinstance(lease, SqlLease)
            lease._advance = None
            if lease.owner_lock is not None:  # after the row, as ``SqlLease.release``
                lease.owner_lock.release()
        return True

    def _index_objects(self, stream: str) -> None:
        """Index what earlier ticks queued for ``stream``'s object index, before this tick's pages
        (``objindex``). Only where there may be something: the first claim of the stream in this process
        (another process may have queued it), after this process recorded new events of it, or while a
        backlog is left over from a claim that ran out of time. So an idle tick pays no statement for it."""
        if stream in self._objects_indexed:
            return
        if objindex.index_before_pages(self.db, stream):
            self._objects_indexed.add(stream)

    def _take_free(self, conn: Connection, spec: CursorSpec, owner: str, lease_seconds: float,
                   now: datetime) -> tuple[int, str | None, OwnerLock] | None:
        """The claim of a free live cursor (every idle tick's) in one UPDATE, no SELECT first (bench/README.md
        "G"); None if the row is anything else. The owner lock is taken after the UPDATE but before COMMIT,
        so nobody sees the new token unlocked; if a concurrent claimer (which read the old token) holds that
        lock, raises ``_Contended`` to roll the UPDATE back: its own UPDATE then goes through, as if it had
        come first (``_claim`` answers LEASE_HELD when it finds the lock taken, too)."""
        taken = cursors.take_free_lease(conn, spec.key, owner=owner, now=now, seconds=lease_seconds)
        if taken is None:
            return None
        lock = self.owners.take(spec.key, taken[0])
        if lock is None:
            raise _Contended(spec.key)
        return taken[0], taken[1], lock

    def _claim(self, conn: Connection, spec: CursorSpec, *, owner: str, lease_seconds: float,
               now: datetime) -> tuple[int, str | None, OwnerLock] | Skip:
        """The lease's new token, the cursor as of the take, and its owner lock, taken before the row naming
        the token commits."""
        row = self._source_row(conn, spec, now)
        if row.state == "done" and row.skip(now, spec.workflows) is None:  # a workflow was added since
            cursors.reopen_window(conn, spec.key, now)
            reopened = cursors.get_source(conn, spec.key)
            assert reopened is not None
            row = reopened
        skip = row.skip(now, spec.workflows)
        if skip is not None:
            return skip
        held = row.lease_owner is not None and row.lease_expires_at is not None and row.lease_expires_at >= now
        if held and self.owners.holder_alive(spec.key, row.lease_token):
            return Skip(SkipReason.LEASE_HELD)
        lock = self.owners.take(spec.key, row.lease_token + 1)
        if lock is None:  # another claim of this cursor is under way
            return Skip(SkipReason.LEASE_HELD)
        try:
            taken = cursors.acquire_lease(conn, spec.key, owner=owner, now=now, seconds=lease_seconds,
                                          token=row.lease_token, holder_gone=held)
        except BaseException:
            lock.release()
            raise
        if taken is None:  # taken since the read, or renewed by a page commit we waited for (PostgreSQL)
            lock.release()
            return Skip(SkipReason.LEASE_HELD)
        return taken[0], taken[1], lock

    def _source_row(self, conn: Connection, spec: CursorSpec, now: datetime) -> SourceRow:
        """The cursor's row, inserted first if it does not exist yet. Read first: an existing cursor (every
        tick but its first ever) costs one SELECT, and no INSERT … ON CONFLICT (which SQLAlchemy compiles
        anew on every call: its statement cache cannot key it)."""
        row = cursors.get_source(conn, spec.key)
        if row is None:
            cursors.ensure_source(conn, spec, now)
            row = cursors.get_source(conn, spec.key)
            assert row is not None
        return row

    def close(self) -> None:
        self.owners.close()

    def source(self, key: str) -> SourceRow | None:
        with reading(self.db) as conn:
            return cursors.get_source(conn, key)

    def waiting_runs(self, stream: str) -> tuple[int, datetime | None]:
        with reading(self.db) as conn:
            return ledger.waiting_runs(conn, stream)

    # ---- the run queue -----------------------------------------------------------------------------------

    def claim_runs(self, owner: str, now: datetime, *, lease_seconds: float, limit: int, workflows: Iterable[str],
                   limited: Mapping[str, int], stream: str | None = None) -> list[ClaimedRun]:
        names = set(workflows)
        if not names or limit <= 0:
            return []
        with self.db.begin() as conn:
            dead_owners = {o for o in queue.running_owners(conn)
                           if not self.owners.holder_alive(queue.owner_lock_key(o), 0)}
            return queue.claim(conn, owner=owner, now=now, lease_seconds=lease_seconds, limit=limit,
                               workflows=names, limited=limited, dead_owners=dead_owners, stream=stream)

    @contextmanager
    def claimed(self, claimed: ClaimedRun, *, lease_seconds: float, clock: Clock) -> Iterator[SqlClaimTxn]:
        with self.db.connect() as conn, conn.begin():
            ledger.bound_idle_time(conn, lease_seconds)
            yield SqlClaimTxn(conn, claimed, clock, lease_seconds)

    def step_results(self, key: RunKey) -> dict[str, Any]:
        with reading(self.db) as conn:
            return ledger.step_results(conn, key)

    def hold_owner(self, owner: str) -> OwnerLock | None:
        return self.owners.take(queue.owner_lock_key(owner), 0)

    def renew_claims(self, claims: Sequence[ClaimedRun], until: datetime) -> int:
        with self.db.begin() as conn:
            return queue.renew(conn, claims, until)

    def listen_runs(self, wake: Callable[[], None]) -> Listener | None:
        return notify.listen(self.db, wake) if self.concurrent_writers else None

    def next_due(self, workflows: Iterable[str]) -> datetime | None:
        with reading(self.db) as conn:
            return queue.next_due(conn, set(workflows))

    def open_runs(self, workflows: Iterable[str], now: datetime, stream: str | None = None) -> int:
        with reading(self.db) as conn:
            return queue.due_count(conn, set(workflows), now, stream)

    def record_failure(self, key: str, now: datetime, error: str, *, pause_until: datetime | None = None,
                       pause_reason: str | None = None) -> None:
        values: dict[str, Any] = {"last_error": error, "last_error_at": now}
        if pause_until is not None:
            values["paused_until"], values["pause_reason"] = pause_until, pause_reason
        with self.db.begin() as conn:
            cursors.set_source_fields(conn, key, now=now, **values)

    def record_tick(self, tick: TickRecord, *, succeeded: bool) -> None:
        with self.db.begin() as conn:
            _record_tick(conn, tick, succeeded)

    # ---- replay ----------------------------------------------------------------------------------------

    def retry_now(self, key: RunKey, now: datetime) -> bool:
        """Make the failed run ``key`` due at ``now`` (``syncd.store.retry``); True if it was failed."""
        with self.db.begin() as conn:
            return retry.retry_now(conn, key, now)

    def dead_runs(self, *, workflow: str | None = None, source: str | None = None,
                  event_id: str | None = None) -> list[RunKey]:
        """Keys of the dead runs picked (every field given narrows the choice), in event order."""
        with reading(self.db) as conn:
            return dead.dead_run_keys(conn, workflow=workflow, source=source, event_id=event_id)

    @contextmanager
    def dead_letters(self, keys: Sequence[RunKey]) -> Iterator[
            tuple[SqlTxn, dict[RunKey, tuple[int, Event | None, str | None]]]]:
        """A transaction holding those of ``keys`` still dead, locked (attempts, event: None if gone from the
        ledger, and trace id); runs locked by another replay, or no longer dead, are left out."""
        with self.db.connect() as conn, conn.begin():
            yield SqlTxn(conn, "", None), dead.lock_dead(conn, keys)


class _Contended(Exception):
    """Rolls back a claim's UPDATE whose new token's owner lock a concurrent claimer holds."""


def _record_tick(conn: Connection, tick: TickRecord, succeeded: bool) -> None:
    if succeeded:
        _record_success(conn, tick.source, tick.finished_at)
    cursors.record_tick(conn, tick)


def _record_success(conn: Connection, key: str, at: datetime) -> None:
    cursors.set_source_fields(conn, key, now=at, last_success_at=at, last_error=None, paused_until=None,
                              pause_reason=None)
