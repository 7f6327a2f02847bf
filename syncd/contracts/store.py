"""The ``Store`` contract and its handles: ``Lease`` (a claimed cursor), ``PageTxn`` and ``RunTxn``.

syncd/store/ holds the one implementation, ``SqlStore``; tests/contracts/test_store.py runs this contract
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from syncd.contracts.providers import Clock, Event, Listener, Quarantined
from syncd.contracts.records import (
    ClaimedRun,
    CursorSpec,
    Recorded,
    RunKey,
    RunRecord,
    Skip,
    SourceRow,
    TickRecord,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine



class RunTxn(Protocol):
    """One open transaction that workflow runs execute in; it commits when its context manager exits.

    ``conn`` is the connection the runs' SAVEPOINTs and ``ctx.db`` sessions use: whatever a workflow
    writes through it commits or rolls back with the transaction.
    """

    conn: Connection

    def step_results(self, key: RunKey) -> dict[str, Any]:
        """The stored results of ``key``'s completed steps, by step name (empty if none)."""
        ...

    def store_steps(self, key: RunKey, results: Mapping[str, Any], now: datetime) -> None:
        """Store completed steps' results; a step already stored keeps its first result."""
        ...

    def save_run(self, record: RunRecord) -> None:
        """Overwrite the stored state of ``record``'s run (which exists) with ``record``."""
        ...


class ClaimTxn(RunTxn, Protocol):
    """A transaction of a run a worker claimed (``Store.claimed``): its ``ctx.db`` writes, its stored steps
    and its new status commit together, only while the claim is still the worker's."""

    def hold(self) -> None:
        """Check the claim is still ours and renew it; ``ClaimLostError`` if not (the caller rolls back)."""
        ...

    def finish(self, record: RunRecord) -> None:
        """End the claim with ``record``'s state; ``ClaimLostError`` if the claim is no longer ours (another
        worker took the run over): the caller must then roll back, effects included."""
        ...


class PageTxn(RunTxn, Protocol):
    """The transaction of one page (or a group of pages) of one lease's cursor.

    Order within it: ``record_events`` → ``existing_runs`` → the workflows' writes → ``write_runs`` /
    ``write_batch_runs`` → ``advance`` last. Nothing is visible to others before the context manager
    exits; an exception rolls everything back, cursor included (no event lost, none applied twice).
    """

    def record_events(self, events: Sequence[Event], now: datetime) -> Recorded:
        """Add ``events`` (one stream, ids unique) to the ledger; ``Recorded.new``: the ids that were not in it.

        Never fails the transaction over one event's values: an event the database cannot hold (a NUL
        character or an unpaired surrogate in any of its strings, an id, type or action longer than its
        column, a payload nested deeper than the store's limit) is quarantined as by ``quarantine`` instead,
        its id in ``Recorded.quarantined``; the caller must not run workflows on it. The check is the same
        on every database. An event that lands removes its own quarantine entry (fetched again after a fix).
        An event older than its stream's retention horizon (its history was pruned) is neither stored nor
        new: its id is in ``Recorded.expired``, and the caller must not run workflows on it either.
        """
        ...

    def quarantine(self, entries: Sequence[Quarantined], now: datetime) -> None:
        """Record events that cannot be processed (``Page.quarantined``), with the page: one entry per
        (stream, event id), or per raw form when there is no id; an entry seen before counts one more
        sighting. Stored values are made safe (printable ASCII, bounded), never refused."""
        ...

    def existing_runs(self, workflows: Iterable[str], event_ids: Iterable[str]) -> set[tuple[str, str]]:
        """The (workflow, event id) pairs among these that already have a run on this stream."""
        ...

    def write_runs(self, records: Sequence[RunRecord]) -> None:
        """Insert these runs; a run that exists already is left as it is. Workers waiting for runs are woken
        when the transaction commits (PostgreSQL: ``NOTIFY syncd_runs``)."""
        ...

    def write_batch_runs(self, template: RunRecord, event_ids: Sequence[str]) -> None:
        """``write_runs`` of one run per id of ``event_ids``: ``template`` with that ``event_id``."""
        ...

    def advance(self, cursor: str | None, *, meta: Mapping[str, Any] | None, new_events: int,
                progress: float | None = None) -> None:
        """Move the cursor to ``cursor`` (None: unchanged), store ``meta``, count ``new_events``, renew the
        lease. The last statement of the page. Raises ``LeaseLostError`` if another owner claimed the cursor
        since (fenced out on the token): the transaction then rolls back and commits nothing."""
        ...


class Lease(Protocol):
    """A claimed cursor: its ``key``, fencing ``token``, ``owner`` and the ``cursor`` read under the lease.

    Every write made through it is fenced on ``token``: once another owner has claimed the cursor (after
    this lease expired, or after its owner lock was seen free), ``PageTxn.advance`` raises
    ``LeaseLostError`` and commits nothing. The handle carries owner, lease length and clock, so no
    call passes them again.
    """

    key: str
    token: int
    owner: str
    cursor: str | None
    lease_seconds: float
    clock: Clock

    def renew(self) -> bool:
        """Push the expiry to now + ``lease_seconds`` if the lease is still ours; False if taken over."""
        ...

    def release(self, tick: TickRecord | None = None, *, succeeded: bool = False) -> None:
        """Free the cursor for any owner at once, and the owner lock with it (always, even when the database
        raises: the lease then looks like a dead holder's and is taken over at once). With ``tick``, the
        tick is recorded in the same transaction, as ``Store.record_tick(tick, succeeded=...)`` would (one
        transaction less per tick; the release stays fenced on the token)."""
        ...

    def advance_on_release(self, cursor: str | None, meta: Mapping[str, Any] | None) -> None:
        """Hold an empty page's cursor move (``cursor``, None: unchanged) and ``meta`` for ``release`` to write
        with the release, fenced as ``PageTxn.advance`` (one transaction less per idle tick). If the lease was
        lost by then, ``release`` writes none of it (nor the tick) and raises ``LeaseLostError``, the owner lock
        still freed; if the process dies first, the cursor stays where it was: the empty page is read again."""
        ...

    def page(self, stream: str) -> AbstractContextManager[PageTxn]:
        """A page transaction on the cursor, which creates runs for ``stream``'s events.

        Transactions that create runs for one stream are serialised (a backfill window and the live cursor
        meeting on an event run it once); on PostgreSQL an idle transaction is ended by the server after
        two lease lengths, so a paused holder cannot keep row locks a takeover would wait on.
        """
        ...

    def mark_done(self, workflows: Iterable[str] = ()) -> None:
        """Mark a backfill window's cursor done (progress 1.0) for ``workflows``, the workflows its events went
        to: later claims for no other workflows skip it (``Skip(DONE)``)."""
        ...


class Store(Protocol):
    """syncd's state: cursors and their leases, the ledger, runs and ticks.

    ``db`` is the SQLAlchemy engine of the database, which workflows' own tables share. Every method (and
    every method of the handles it gives out) raises the database's own errors when it cannot reach it;
    none retries: the next tick does.
    """

    db: Engine

    @property
    def concurrent_writers(self) -> bool:
        """True if write transactions run concurrently (PostgreSQL); False if one at a time holds the whole
        database (SQLite), so a lease cannot be taken mid-page and a writer should leave gaps for others."""
        ...

    def claim(self, spec: CursorSpec, *, owner: str, lease_seconds: float, clock: Clock) -> Lease | Skip:
        """Create the cursor's row if new, then take its lease unless the row says to skip it.

        A finished backfill window whose recorded workflows lack one of ``spec.workflows`` (registered since)
        is re-opened first: its cursor goes back to the window's start, so the new workflow's runs are
        created (existing runs are never repeated).

        Returns ``Skip(DONE)`` or ``Skip(PAUSED, detail)`` without claiming, ``Skip(LEASE_HELD)`` if another
        live holder has it (even the same owner's: the same replica id on two processes must not share it),
        else a ``Lease`` whose token is greater than every earlier token of the cursor.

        Ownership is tied to the holder being alive: with its lease, a holder takes an owner lock that the
        operating system or the database server releases when the holder's process dies (PostgreSQL: a
        session-level advisory lock on a connection the store keeps; SQLite: ``flock`` on a file beside the
        database; see ``syncd.store.owners``). So a lease is taken over at once when its holder is gone
        (SIGKILL, OOM, a crash), and once it expired when its holder is alive but silent (frozen, cut off):
        the fencing token then keeps that holder's late writes out. On PostgreSQL the claim waits for a page
        commit of the old holder in flight.
        """
        ...

    def claim_many(self, specs: Sequence[CursorSpec], *, owner: str, lease_seconds: float,
                   clock: Clock) -> Mapping[str, Lease]:
        """``claim`` of many cursors in one transaction (a daemon walk's due sources), key → lease, for those
        a ``claim`` would take with no Skip: live, active, not paused, free or expired. Each lease is exactly
        what ``claim`` would give (a token above every earlier one, its owner lock taken before COMMIT).
        A cursor left out (new, a window, done, paused, held even by a dead holder, and on PostgreSQL a row
        another transaction holds) is for ``claim`` to decide, with its exact Skip; if a concurrent claim
        holds the owner lock of a new token, nothing is taken (``{}``). Never waits for a row another
        transaction holds (PostgreSQL; SQLite's one write lock is waited for as by every write)."""
        ...

    def release_many(self, items: Sequence[tuple[Lease, TickRecord | None, bool]]) -> bool:
        """``Lease.release(tick, succeeded=...)`` of every (lease, tick, succeeded) of ``items`` (leases of
        this store) in one transaction, all or nothing: each release fenced on its own token and owner, held
        cursor moves and meta included. True: all written, owner locks freed. False (a lease taken over) or a
        database error raised: nothing written nor freed, the held moves kept, so the caller releases each
        with ``Lease.release`` for its own outcome."""
        ...

    def close(self) -> None:
        """Let go of what the store holds besides the engine's pool (the owner-lock session on PostgreSQL,
        which releases every owner lock still held). Leases should be released first."""
        ...

    def source(self, key: str) -> SourceRow | None:
        """The cursor's row, or None if never synced."""
        ...

    def waiting_runs(self, stream: str) -> tuple[int, datetime | None]:
        """How many runs of ``stream`` are left to go on later (pending between steps, or asleep), and the
        earliest time one of them is due (None if there are none)."""
        ...

    # ---- the run queue (syncd.store.queue) ----------------------------------------------------------

    def claim_runs(self, owner: str, now: datetime, *, lease_seconds: float, limit: int, workflows: Iterable[str],
                   limited: Mapping[str, int], stream: str | None = None) -> list[ClaimedRun]:
        """Claim up to ``limit`` runs due at ``now`` of ``workflows`` (of ``stream`` only, if given) for
        ``owner``, earliest due first, each with a new fencing token and an expiry ``lease_seconds`` on; never
        waits for another claimer (each run goes to one). Runs due: queued, failed (retry), pending (next
        step), sleeping (woken), and running runs whose owner is gone (its ``hold_owner`` lock is free) or
        whose claim expired. A workflow in ``limited`` never has more than its number running across every
        owner; a run with a key waits until no earlier run of its workflow and key is open."""
        ...

    def claimed(self, claimed: ClaimedRun, *, lease_seconds: float, clock: Clock) -> AbstractContextManager[ClaimTxn]:
        """A transaction for ``claimed``'s effects, steps and status (see ``ClaimTxn``)."""
        ...

    def step_results(self, key: RunKey) -> dict[str, Any]:
        """The stored results of ``key``'s completed steps, read outside any run's transaction."""
        ...

    def hold_owner(self, owner: str) -> Any:
        """Take the owner lock of worker ``owner`` (``release()`` to let go; ``held()`` is False once it is
        gone without a release, e.g. with the database session that held it); others see its runs'
        claims dead at once when it is free. None if someone holds it already."""
        ...

    def renew_claims(self, claims: Sequence[ClaimedRun], until: datetime) -> int:
        """Push ``claims`` (those still held) to expire at ``until``; how many were still held."""
        ...

    def listen_runs(self, wake: Callable[[], None]) -> Listener | None:
        """Call ``wake`` whenever any process enqueues runs (PostgreSQL: ``LISTEN syncd_runs``); None where
        there is no such notification (SQLite: one process, which wakes its own workers)."""
        ...

    def next_due(self, workflows: Iterable[str]) -> datetime | None:
        """When the next run of ``workflows`` falls due (or a claim expires); None if nothing is waiting."""
        ...

    def open_runs(self, workflows: Iterable[str], now: datetime, stream: str | None = None) -> int:
        """Runs of ``workflows`` (of ``stream``) due at ``now`` or running: what a drain still has to do."""
        ...

    def record_failure(self, key: str, now: datetime, error: str, *, pause_until: datetime | None = None,
                       pause_reason: str | None = None) -> None:
        """Store a tick's error on the cursor, and the pause the provider asked for, if any."""
        ...

    def record_tick(self, tick: TickRecord, *, succeeded: bool) -> None:
        """Append ``tick`` to the history; ``succeeded`` also marks the cursor's success and ends its pause."""
        ...

    def dead_runs(self, *, workflow: str | None = None, source: str | None = None,
                  event_id: str | None = None) -> list[RunKey]:
        """Keys of the dead runs picked (each field given narrows the choice; ``source`` is a stream key or
        a provider name, for all its streams), in event order."""
        ...

    def retry_now(self, key: RunKey, now: datetime) -> bool:
        """Bring the retry of run ``key`` forward: if it is ``failed`` (waiting for its next attempt), it is due at
        ``now``, attempts and claim token unchanged, and workers are woken (PostgreSQL: ``NOTIFY syncd_runs``);
        the next claim runs it, fenced like any run. True if it was failed; a run in any other status (running,
        dead, succeeded, gone) is left as it is and False is returned."""
        ...

    def dead_letters(self, keys: Sequence[RunKey]) -> AbstractContextManager[
            tuple[RunTxn, dict[RunKey, tuple[int, Event | None, str | None]]]]:
        """A transaction holding those of ``keys`` still dead, each with its attempts, event (None if gone
        from the ledger) and stored trace id (a replay joins that trace), locked until it ends, so two
        replays never run one dead letter twice; runs no longer dead, or locked by another replay, are left
        out."""
        ...
