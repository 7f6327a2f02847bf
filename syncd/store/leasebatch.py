"""Many cursors' leases claimed in one transaction, and released in one: a daemon walk's idle ticks
(``SqlStore.claim_many`` and ``SqlStore.release_many``; bench/README.md "G", design idle_batch).

Per idle tick that spares a claim transaction and a release transaction, and SQLAlchemy's overhead of
their statements: a walk's claims are one ``UPDATE … RETURNING``, its releases one executemany UPDATE
(each row fenced on its own token and owner) and one executemany INSERT of the tick records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine

from syncd.contracts import TickRecord
from syncd.store import cursors
from syncd.store.owners import OwnerLock, OwnerLocks


def take_free(db: Engine, owners: OwnerLocks, keys: Sequence[str], *, owner: str, now: datetime,
              seconds: float) -> list[tuple[str, int, str | None, OwnerLock]]:
    """The leases of those of ``keys`` that a claim would take with no Skip (``cursors.acquire_leases``):
    (key, new token, cursor, owner lock). Every new token's owner lock is taken before COMMIT, so nobody
    sees a token unlocked; if a concurrent single claim (which read the old token) holds one of them, the
    whole UPDATE is rolled back and the locks taken are freed: ``[]``, every key left to its own claim."""
    if not keys:
        return []
    locks: list[OwnerLock] = []
    taken: list[tuple[str, int, str | None, OwnerLock]] = []
    try:
        with db.begin() as conn:
            for key, token, cursor in cursors.acquire_leases(conn, sorted(keys), owner=owner, now=now,
                                                             seconds=seconds):
                lock = owners.take(key, token)
                if lock is None:
                    raise _Contended(key)
                locks.append(lock)
                taken.append((key, token, cursor, lock))
    except _Contended:  # rolled back (the rows first), then the locks: as a release frees them
        _free(locks)
        return []
    except BaseException:
        _free(locks)
        raise
    return taken


def release_all(db: Engine, rows: Sequence[cursors.Release], records: Sequence[TickRecord]) -> bool:
    """Release ``rows`` and record ``records`` in one transaction, all or nothing: False (rolled back) if
    any lease was not ours any more. Raises what the database raises (nothing written then either)."""
    try:
        with db.begin() as conn:
            if cursors.release_leases(conn, rows) != len(rows):
                raise _Fenced
            cursors.record_ticks(conn, records)
    except _Fenced:
        return False
    return True


def _free(locks: Sequence[OwnerLock]) -> None:
    for lock in locks:
        lock.release()


class _Contended(Exception):
    """Rolls back a batch claim one of whose new tokens' owner locks a concurrent claimer holds."""


class _Fenced(Exception):
    """Rolls back a batch release one of whose leases was taken over."""
