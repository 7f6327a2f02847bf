"""SQLite's part of the store: connection pragmas, the BEGIN hook, and the WAL checkpoint thread."""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("syncd.db")


def configure(engine: Engine) -> None:
    """Set up an SQLite engine: pragmas on each connection, syncd's BEGIN, and (for a file) the
    background WAL checkpointer."""
    event.listen(engine, "connect", _sqlite_pragmas)
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take control of it.
    gate = _WriterGate()
    event.listen(engine, "begin", gate.begin)
    event.listen(engine, "commit", gate.ended)
    event.listen(engine, "rollback", gate.ended)
    event.listen(engine.pool, "checkin", lambda _dbapi, record: gate.released(record.info) if record else None)
    path = engine.url.database
    if path and path != ":memory:" and not path.startswith("file:"):
        checkpointer = _CHECKPOINTERS[engine] = WalCheckpointer(path)
        # Marked on the connection as it commits; checked in, its commit is written and its transaction
        # over, so the whole log can be copied.
        event.listen(engine, "commit", lambda conn: checkpointer.committed(conn.info))
        event.listen(engine.pool, "checkin",
                     lambda _dbapi, record: checkpointer.released(record.info) if record is not None else None)
        event.listen(engine, "engine_disposed", lambda _engine: _stop_checkpointer(checkpointer))
        weakref.finalize(engine, _stop_checkpointer, checkpointer)  # an engine dropped undisposed


#: A connection checkpoints the write-ahead log itself once it holds this many pages (see _sqlite_pragmas):
#: the backstop of the WalCheckpointer thread, which normally copies it back long before.
WAL_CHECKPOINT_PAGES = 10_000


class WalCheckpointer:
    """Copies an SQLite database's write-ahead log back into it from a thread of its own, after each commit.

    SQLite checkpoints in the connection that commits: a catch-up stopped every few transactions to read
    thousands of pages back from the WAL and write them into the database. Here a daemon thread with its own
    connection runs a PASSIVE checkpoint (it never blocks a writer and never waits for one) as soon as a
    connection that committed goes back to the pool. The file I/O runs without the GIL, beside the next pages'
    fetch, and usually ends before the next write transaction begins, which then restarts the log from its
    beginning: the WAL file stays at a few transactions' pages instead of growing. When the log was small (idle
    ticks), the next checkpoint waits ``small_wal_seconds``, so a burst of small commits is not followed by as
    many checkpoints. If the thread falls behind, a writer checkpoints itself at WAL_CHECKPOINT_PAGES, as before.
    The thread starts on the first commit and stops when the engine is disposed or collected; a failure here is
    logged and never reaches the transaction, which has committed. (Its measurements: bench/README.md,
    "Measurements behind the code".)
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)  # as SQLAlchemy opened it, whatever the working directory is later
        self.checkpoints = 0  # completed ones
        #: After a checkpoint of a small log, the next one waits this long (read by the running thread).
        self.small_wal_seconds = SMALL_WAL_SECONDS
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the running thread's own: a stopped thread never comes back
        self._wake = threading.Event()

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def committed(self, info: dict[Any, Any]) -> None:
        """A transaction is committing on the connection whose ``info`` this is."""
        info[_WROTE] = True

    def released(self, info: dict[Any, Any]) -> None:
        """A connection went back to the pool: if it committed, its commit is written; checkpoint now."""
        if not info.pop(_WROTE, False):
            return  # it only read
        try:
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    stop, wake = threading.Event(), threading.Event()
                    thread = threading.Thread(target=self._run, args=(stop, wake), name="syncd-wal-checkpoint",
                                              daemon=True)
                    thread.start()
                    self._thread, self._stop, self._wake = thread, stop, wake
                self._wake.set()
        except Exception as exc:  # no thread (interpreter shutting down, a thread limit): writers checkpoint
            log.warning("no background WAL checkpoint for %s: %s", self.path, exc)

    def close(self) -> None:
        """Stop the thread (a later commit starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _run(self, stop: threading.Event, wake: threading.Event) -> None:
        import sqlite3

        try:  # mode=rw: never create a database where the file went away
            conn = sqlite3.connect(f"file:{urllib.parse.quote(self.path)}?mode=rw", uri=True,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("no background WAL checkpoints for %s (%s); writers checkpoint it themselves",
                        self.path, exc)
            return
        try:
            while True:
                wake.wait()
                if stop.is_set():
                    return
                wake.clear()
                try:
                    [(_busy, log_pages, _copied)] = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the file went away, a disk error: a writer's backstop remains
                    log.debug("background WAL checkpoint of %s failed: %s", self.path, exc)
                    continue
                if 0 <= log_pages < SMALL_WAL_PAGES:  # small commits (idle ticks): no need to follow each one
                    stop.wait(self.small_wal_seconds)
        finally:
            conn.close()


#: A checkpoint that found fewer pages than this in the log (small commits: idle ticks, bookkeeping) makes
#: the thread wait SMALL_WAL_SECONDS before the next; catching up, each commit is followed at once. An idle
#: daemon commits about once a second (its ticks, the request budget): 5 s makes one checkpoint of the same
#: few pages out of five (bench/README.md "G", session 12), and the log stays far below WAL_CHECKPOINT_PAGES.
SMALL_WAL_PAGES = 1_000
SMALL_WAL_SECONDS = 5.0

#: Key, in a pooled connection's ``info``, of "this connection committed since it was checked out".
_WROTE = "syncd_wrote"


def _stop_checkpointer(checkpointer: WalCheckpointer) -> None:
    try:
        checkpointer.close()
    except Exception as exc:  # from an engine_disposed hook or a finalizer: never an error of the caller's
        log.warning("stopping the WAL checkpoint thread of %s: %s", checkpointer.path, exc)


#: The checkpointer of each SQLite file engine (see ``wal_checkpointer``).
_CHECKPOINTERS: weakref.WeakKeyDictionary[Engine, WalCheckpointer] = weakref.WeakKeyDictionary()


def wal_checkpointer(engine: Engine) -> WalCheckpointer | None:
    """The background WAL checkpointer of an engine on an SQLite file (None for PostgreSQL or :memory:)."""
    return _CHECKPOINTERS.get(engine)


#: SQLite's page cache per connection, in KiB (see _sqlite_pragmas).
CACHE_KIB = 16_384


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # A new, empty file (nothing written yet, not even by journal_mode=WAL) is made in incremental-vacuum mode,
    # so pruned pages can go back to the file system (syncd.store.retention). Only then: setting it takes the
    # write lock, even when it changes nothing, and a reader must never wait for a catch-up's lock.
    if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # The WalCheckpointer thread checkpoints after commits (each one, catching up); a writer checkpoints itself past
    # 10,000 pages (40 MB), if that thread falls behind. (SQLite's default, 1,000 pages, made the writer
    # checkpoint after nearly every catch-up commit, which dirties thousands of scattered mirror pages.)
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    # A 16 MiB page cache instead of SQLite's 2 MiB: the mirrors write randomly placed rows, and once their
    # tables outgrow the cache every upsert read its pages back from the OS (a larger one was no faster;
    # bench/README.md). It fills only as pages are used; the connections that only read touch a few pages.
    cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    # Statement journals in memory: a catch-up transaction runs each batch workflow in a SAVEPOINT, and SQLite
    # copied every page it first touched inside one to a new temporary file (about 1.4 KB an event).
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


#: How long a writer waits at the gate before trying SQLite's own lock anyway (its busy timeout then applies).
GATE_SECONDS = 30.0


class _WriterGate:
    """One writer at a time per engine, queued on a lock instead of SQLite's busy handler.

    SQLite lets one transaction write at a time; the others' ``BEGIN IMMEDIATE`` fails busy and SQLite's
    handler sleeps and retries (sleeps of up to 100 ms). With sixteen workers each committing a run, the
    file's lock sat free during those sleeps: runs went through several times slower than the work they do.
    Threads of one process now wait on a lock and go in as soon as the writer before them ends. Other
    processes still meet SQLite's busy handler, as before. A writer that waited ``GATE_SECONDS`` (a
    thread nesting a second write transaction inside its first, which SQLite would refuse anyway) goes on
    to SQLite's lock, so the gate never turns a busy error into a hang.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def begin(self, conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front so two writers never deadlock upgrading a read lock. A
        # reading() connection only reads: a deferred BEGIN, which in WAL mode never waits for a writer.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        if self._lock.acquire(timeout=GATE_SECONDS):
            conn.info[_GATE] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self.released(conn.info)
            raise

    def ended(self, conn: Connection) -> None:
        self.released(conn.info)

    def released(self, info: dict[Any, Any]) -> None:
        if info.pop(_GATE, False):
            self._lock.release()


_GATE = "syncd_writer_gate"


#: The execution option of ``reading`` connections.
READ_ONLY = "syncd_read_only"
