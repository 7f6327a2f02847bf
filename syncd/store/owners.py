"""Owner locks: one lock per held lease that dies with its holder, so a claim tells a dead owner from a
live one at once instead of waiting for the lease to expire.

A lease row says who holds a cursor until when; it cannot say whether that holder still exists. Each
holder of lease ``(key, token)`` therefore also holds the lock of ``(key, token)``, which something outside
the process releases when the process dies:

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on one connection per store, kept
  outside the pool for the store's life. The server drops the session's locks when the connection ends:
  at once when the process dies (the kernel closes its socket), after failed TCP keepalives (set on the
  session, about 25 s) when a whole host vanishes. Session locks need a session: through a
  transaction-mode pooler (PgBouncer) a claim only sees expiry, as before.
- SQLite (one host): ``flock`` on a file per lock in ``<database>.locks/``; the kernel releases it with the
  process. The holder deletes its file when it lets go; a dead holder's file is deleted by whoever
  finds it dead.
- Anything else (an in-memory SQLite): no owner lock; ``holder_alive`` always says yes (expiry decides).

Locks are per token, not per key: whoever takes an expired lease over from an owner that is frozen but
alive (it still holds its lock) takes the lock of the new token, so the next claimer sees the new holder
alive, not the frozen one. The new token's lock is taken before the row that names the token commits,
so nobody can ever see a token whose holder has not locked it yet. A lock is only ever a hint that lets a
claim go faster: safety stays with the fencing token on every write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Engine

log = logging.getLogger("syncd.db")

#: First key of the owner locks' PostgreSQL advisory locks ('ownr'): apart from ``lock_stream``'s ('sync')
#: and from other applications' locks on the same database.
OWNER_NAMESPACE = 0x6F776E72

#: TCP keepalives of the lock session: the server notices a vanished host after idle + interval × count.
KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}


class OwnerLock(Protocol):
    """A held owner lock. ``release`` is idempotent and never raises. ``held`` is False once the lock is gone:
    released, or (PostgreSQL) lost with its session, which a database outage ends."""

    def release(self) -> None: ...

    def held(self) -> bool: ...


class OwnerLocks(Protocol):
    """The owner locks of one store."""

    def take(self, key: str, token: int) -> OwnerLock | None:
        """The lock of lease ``(key, token)``, or None if someone (this store included) holds it. Never waits.
        Raises what the database raises (PostgreSQL) or ``OSError`` (SQLite's lock directory)."""
        ...

    def holder_alive(self, key: str, token: int) -> bool:
        """True while the lock of ``(key, token)`` is held by anyone, this store included."""
        ...

    def close(self) -> None:
        """Release every lock held (PostgreSQL: end the lock session)."""
        ...


def owner_locks(db: Engine) -> OwnerLocks:
    """The owner locks for ``db``'s dialect (see the module docstring)."""
    if db.dialect.name == "postgresql":
        return AdvisoryLocks(db)
    path = db.url.database
    if db.dialect.name == "sqlite" and path and path != ":memory:" and not path.startswith("file:"):
        return FileLocks(Path(os.path.abspath(path) + ".locks"))
    return NoLocks()


def lock_id(key: str, token: int) -> int:
    """A signed 32-bit id for ``(key, token)``. A collision only makes a claim wait (for expiry or a tick)."""
    digest = hashlib.blake2b(f"{key}\x00{token}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


# ---- PostgreSQL ------------------------------------------------------------------------------------


class AdvisoryLocks:
    """Session-level advisory locks on one dedicated connection (autocommit, outside the pool)."""

    def __init__(self, db: Engine) -> None:
        self._db = db
        self._mutex = threading.Lock()  # the scheduler's jobs claim from several threads
        self._conn: Any = None  # the lock session: a connection detached from the pool
        self._session = 0  # bumped on every new session: locks of an ended one are gone already
        self._held: set[int] = set()
        self._finalizer: weakref.finalize[Any, AdvisoryLocks] | None = None

    def take(self, key: str, token: int) -> OwnerLock | None:
        ident = lock_id(key, token)
        with self._mutex:
            if ident in self._held:  # session locks are re-entrant: ask ourselves first
                return None
            if not self._try_lock(ident):
                return None
            self._held.add(ident)
            return _AdvisoryLock(self, ident, self._session)

    def holder_alive(self, key: str, token: int) -> bool:
        ident = lock_id(key, token)
        with self._mutex:
            if ident in self._held:
                return True
            if not self._try_lock(ident):
                return True
            self._unlock(ident)
            return False

    def unlock(self, ident: int, session: int) -> None:
        with self._mutex:
            if session != self._session or ident not in self._held:
                return  # that session ended (and its locks with it)
            self._held.discard(ident)
            try:
                self._unlock(ident)
            except Exception as exc:  # the session is broken: the server drops its locks with it
                log.warning("could not release an owner lock: %s", exc)
                self._drop()

    def holds(self, ident: int, session: int) -> bool:
        """Whether the lock ``ident`` taken in ``session`` is still ours (as far as this process knows: a
        session that died unnoticed is found out, and dropped, by its next statement)."""
        with self._mutex:
            return session == self._session and ident in self._held

    def close(self) -> None:
        with self._mutex:
            self._drop()

    def _try_lock(self, ident: int) -> bool:
        try:
            row = self._session_conn().execute("SELECT pg_try_advisory_lock(%s, %s)",
                                               (OWNER_NAMESPACE, ident)).fetchone()
        except Exception:
            self._drop()  # the next call opens a new session; the locks held in this one are gone
            raise
        return bool(row and row[0])

    def _unlock(self, ident: int) -> None:
        self._session_conn().execute("SELECT pg_advisory_unlock(%s, %s)", (OWNER_NAMESPACE, ident))

    def _session_conn(self) -> Any:
        if self._conn is None:
            pooled = self._db.raw_connection()  # made as the pool makes them (connect_args included) …
            pooled.detach()
            driver = pooled.dbapi_connection
            assert driver is not None
            pooled.invalidate()  # … then the pool lets go of it without I/O: closing it is ours alone
            self._finalizer = weakref.finalize(self, _close_quietly, driver)
            driver.autocommit = True  # session locks outlive transactions: idle, never idle in transaction
            for name, value in KEEPALIVES.items():
                driver.execute(f"SET {name} = {int(value)}")
            if driver.info.server_version >= 140000:  # a server-wide idle timeout must not end it (and its locks)
                driver.execute("SET idle_session_timeout = 0")
            self._conn, self._session = driver, self._session + 1
        return self._conn

    def _drop(self) -> None:
        self._held.clear()
        if self._finalizer is not None:
            self._finalizer()  # closes the connection: the server releases every lock of the session
            self._finalizer = None
        self._conn = None


class _AdvisoryLock:
    __slots__ = ("_ident", "_locks", "_session")

    def __init__(self, locks: AdvisoryLocks, ident: int, session: int) -> None:
        self._locks, self._ident, self._session = locks, ident, session

    def release(self) -> None:
        self._locks.unlock(self._ident, self._session)

    def held(self) -> bool:
        return self._locks.holds(self._ident, self._session)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


# ---- SQLite: files -----------------------------------------------------------------------------------


class FileLocks:
    """``flock`` on ``<dir>/<key hash>-<token>``: per open file, so two stores of one process exclude
    each other too, like two processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: str, token: int) -> Path:
        digest = hashlib.blake2b(key.encode(), digest_size=10).hexdigest()
        return self.directory / f"{digest}-{token}"

    def take(self, key: str, token: int) -> OwnerLock | None:
        self.directory.mkdir(exist_ok=True)
        path = self.path(key, token)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _flock(fd):
            os.close(fd)
            return None
        return _FileLock(path, fd)

    def holder_alive(self, key: str, token: int) -> bool:
        path = self.path(key, token)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False  # released (its holder deletes the file), or never taken here
        try:
            if not _flock(fd):
                return True
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a dead holder's file: nobody can lock it while we hold it
            return False
        finally:
            os.close(fd)

    def close(self) -> None:
        pass  # each lock is its lease's; released with it


def _flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class _FileLock:
    """A held file lock. Dropped without ``release`` (a lease never released), its descriptor is closed when
    it is collected, which releases the lock: the lease looks dead, as it is."""

    __slots__ = ("__weakref__", "_finalizer", "_path")

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        if self._finalizer.alive:
            with contextlib.suppress(OSError):
                self._path.unlink()  # before unlocking: whoever opens it next finds it gone, or locked
            self._finalizer()

    def held(self) -> bool:
        return self._finalizer.alive  # a file lock lives as long as its descriptor, i.e. this process


class NoLocks:
    """No owner locks (in-memory SQLite): leases are taken over once they expire."""

    def take(self, key: str, token: int) -> OwnerLock | None:
        return _NoLock()

    def holder_alive(self, key: str, token: int) -> bool:
        return True

    def close(self) -> None:
        pass


class _NoLock:
    def release(self) -> None:
        pass

    def held(self) -> bool:
        return True
