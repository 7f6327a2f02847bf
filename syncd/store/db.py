"""Database plumbing shared by the store, the mirrors and migrations: metadata, types, engine, upserts."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import operator
import os
import re
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.orm import Session

from syncd import jsoncodec

log = logging.getLogger("syncd.db")

#: Named constraints so Alembic (and SQLite batch mode) can alter them on every dialect.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        """On SQLite, ``process_bind_param`` and the dialect's own DATETIME formatting in one step, remembered.

        Same text as SQLAlchemy's SQLite DATETIME stores (``YYYY-MM-DD HH:MM:SS.ffffff``), so stored values
        and comparisons are unchanged. A catch-up writes an event's time three times (ledger, mirror
        ``created_at`` and ``updated_at``) and a page's rows share their bookkeeping times, so the texts of
        UTC datetimes are kept in one dict for every column and statement. Keyed in UTC only (others are
        converted first): two datetimes of one other zone compare equal across a DST fold, an hour apart.
        """
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        texts = _DATETIME_TEXTS

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:  # the usual case skips this: providers' times are parsed to UTC
                if value.tzinfo is None:
                    raise ValueError("naive datetime given to a UTCDateTime column")
                value = value.astimezone(UTC)
            text = texts.get(value)
            if text is None:
                text = _SQLITE_DATETIME % (value.year, value.month, value.day, value.hour, value.minute,
                                           value.second, value.microsecond)
                if len(texts) >= _DATETIME_TEXTS_MAX:
                    texts.clear()
                texts[value] = text  # dict operations are atomic: safe to share between threads
            return text

        return process

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: SQLAlchemy's SQLite DATETIME storage format, as a tuple format (faster than ``isoformat`` + slicing).
_SQLITE_DATETIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"
#: UTC datetimes formatted for SQLite (see UTCDateTime.bind_processor), cleared when full.
_DATETIME_TEXTS: dict[datetime, str] = {}
_DATETIME_TEXTS_MAX = 4096


def json_type() -> sa.types.TypeEngine[Any]:
    """JSONB on PostgreSQL, JSON text elsewhere."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def create_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine configured for syncd's access pattern on either dialect."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False},
            json_serializer=jsoncodec.dumps, json_deserializer=jsoncodec.loads,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take control of it.
        event.listen(engine, "begin", _sqlite_begin)
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
        return engine
    return sa.create_engine(
        url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_recycle=1800,
        json_serializer=jsoncodec.dumps, json_deserializer=jsoncodec.loads, connect_args={"connect_timeout": 10},
    )


#: A connection checkpoints the write-ahead log itself once it holds this many pages (see _sqlite_pragmas):
#: the backstop of the WalCheckpointer thread, which normally copies it back long before.
WAL_CHECKPOINT_PAGES = 10_000


class WalCheckpointer:
    """Copies an SQLite database's write-ahead log back into it from a thread of its own, after each commit.

    SQLite checkpoints in the connection that commits: a catch-up stopped every few transactions to read
    thousands of pages back from the WAL and write them into the database. Here a daemon thread with its own
    connection runs a PASSIVE checkpoint (it never blocks a writer and never waits for one) as soon as a
    connection that committed goes back to the pool. The file I/O runs without the GIL, beside the next
    pages' fetch, and usually ends before the next write transaction begins, which then restarts the log
    from its beginning: the WAL file stays at a few transactions' pages (23 MB at most in a 100k catch-up,
    where it grew to 50). When the log was small (idle ticks), the next checkpoint waits a second, so a
    burst of small commits is not followed by as many checkpoints. If the thread falls behind, a writer
    checkpoints itself at WAL_CHECKPOINT_PAGES, as before. The thread starts on the first commit and stops
    when the engine is disposed or collected; a failure here is logged and never reaches the transaction,
    which has committed.

    200k events, 4 alternated runs: 15.8 -> 14.6 s (100k, 8 runs: 8.75 -> 7.69 s).
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)  # as SQLAlchemy opened it, whatever the working directory is later
        self.checkpoints = 0  # completed ones
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
                    stop.wait(SMALL_WAL_SECONDS)
        finally:
            conn.close()


#: A checkpoint that found fewer pages than this in the log (small commits: idle ticks, bookkeeping) makes
#: the thread wait SMALL_WAL_SECONDS before the next; catching up, each commit is followed at once.
SMALL_WAL_PAGES = 1_000
SMALL_WAL_SECONDS = 1.0

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
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # The WalCheckpointer thread checkpoints after commits (each one, catching up); a writer checkpoints itself past
    # 10,000 pages (40 MB), if that thread falls behind. (SQLite's default, 1,000 pages, made the writer
    # checkpoint after nearly every catch-up commit, which dirties thousands of scattered mirror pages.)
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    # A 16 MiB page cache instead of SQLite's 2 MiB: the mirrors write randomly placed rows, and once their
    # tables outgrow the cache every upsert read its pages back from the OS. 200k events, 3 alternated
    # runs: 20.1 -> 17.9 s (32 MiB: no faster). It fills only as pages are used (a catch-up's peak RSS 88
    # -> 103 MB); the connections that only read touch a few pages.
    cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    # Statement journals in memory: a catch-up transaction runs each batch workflow in a SAVEPOINT, and SQLite
    # copied every page it first touched inside one to a new temporary file (about 1.4 KB an event).
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front so two writers never deadlock upgrading a read lock. A
    # reading() connection only reads: a deferred BEGIN, which in WAL mode never waits for a writer.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


#: The execution option of ``reading`` connections.
READ_ONLY = "syncd_read_only"


def reading(engine: Engine) -> Connection:
    """A connection for reads only (``with reading(db) as conn:``): status, health, metrics, look-ups.

    On SQLite it never waits for the write lock, so ``syncd status`` and the health endpoint answer at
    once in the middle of a catch-up, whose transactions follow each other with almost no gap. Writing
    through it is an error on SQLite (the write lock is not taken up front). PostgreSQL: a plain connection.
    """
    return engine.connect().execution_options(**{READ_ONLY: True})


def one_of(column: sa.ColumnElement[Any], name: str, dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (…)`` over a list given as one parameter (pass it through ``list_param``).

    SQLite reads the list from a JSON array (``json_each``): the statement is compiled and prepared once,
    where SQLAlchemy's expanding ``IN`` rendered and SQLite prepared a new statement for each page. On
    PostgreSQL it stays an expanding ``IN``: one array parameter (``= ANY``) made psycopg's prepared
    statement switch to a generic plan, which on young tables without statistics scanned them whole
    (bench scenario D fell from 3,026 to 1,351-3,770 events/s).
    """
    if dialect == "postgresql":
        return column.in_(sa.bindparam(name, expanding=True))
    return column.in_(sa.select(sa.column("value")).select_from(
        sa.func.json_each(sa.bindparam(name, type_=sa.String()))).scalar_subquery())


def list_param(values: Iterable[Any], dialect: str) -> Any:
    """The value of a ``one_of`` parameter."""
    return list(values) if dialect == "postgresql" else jsoncodec.dumps(list(values))


def insert_ignore(session: Session | Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
                  keys: Sequence[str]) -> None:
    """INSERT … ON CONFLICT (keys) DO NOTHING, batched, on SQLite or PostgreSQL."""
    if not rows:
        return
    stmt = _insert_ignore_statement(_dialect_name(session), table, tuple(sorted(rows[0])), tuple(keys))
    if isinstance(session, Connection):
        execute_many(session, stmt, rows)
    else:
        session.execute(stmt, list(rows))


def execute_many(conn: Connection, stmt: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Run a DML statement once per row, in as few database calls as the driver allows.

    Same SQL and same value conversion as ``conn.execute(stmt, rows)`` (each value goes through its
    column type's own bind processor), without the per-row parameter machinery of ``Connection.execute``,
    which cost more than the database's own work on a page of inserts. Events, and so the OpenTelemetry
    SQL spans, are those of ``exec_driver_sql``. Plain (non-expanding) bind parameters only; every row has
    every parameter of the statement.

    On SQLite an ``INSERT … VALUES`` goes as multi-row ``VALUES`` statements of up to ``MULTI_ROWS`` rows
    (sizes are powers of two, so a handful of statement texts cover every count and stay in the driver's
    statement cache). The rows are applied in order, as an executemany would (a conflict with an
    earlier row of the same statement sees it), and a catch-up goes about 6% faster.
    """
    if not rows:
        return
    dialect = conn.dialect
    key = (dialect.name, dialect.driver, dialect.paramstyle, stmt)
    form = _DRIVER_FORMS.get(key)
    if form is None:
        form = _driver_form(dialect, stmt)
        with _DRIVER_FORMS_LOCK:  # sources sync in the scheduler's threads
            _DRIVER_FORMS[key] = form
            while len(_DRIVER_FORMS) > _DRIVER_FORMS_MAX:
                _DRIVER_FORMS.pop(next(iter(_DRIVER_FORMS)))  # the oldest: statements are rebuilt by LRU caches
    # Column by column: each parameter's values, in placeholder order, through its column's processor.
    columns: list[Any] = list(zip(*map(form.values, rows), strict=True))
    for i, process in form.processors:
        columns[i] = map(process, columns[i])
    converted = list(zip(*columns, strict=True))  # back to rows: a tuple of values each
    if form.multi is None or len(rows) == 1:
        conn.exec_driver_sql(form.sql, converted if form.positional
                             else [dict(zip(form.names, values, strict=True)) for values in converted])
        return
    flat = tuple(itertools.chain.from_iterable(converted))  # every row's values, one after the other
    width, done = len(form.names), 0
    while done < len(converted):
        left = len(converted) - done
        n = form.multi.rows if left >= form.multi.rows else 1 << (left.bit_length() - 1)
        conn.exec_driver_sql(form.multi.sql(n), flat[done * width : (done + n) * width])
        done += n


#: Rows per multi-row INSERT on SQLite (fewer if the statement has many columns; see ``_MultiRow``).
MULTI_ROWS = 128


@dataclass
class _MultiRow:
    """An SQLite ``INSERT … VALUES (?, …) …`` written for n rows: ``head`` + n × ``group`` + ``tail``."""

    head: str
    group: str
    tail: str
    rows: int  # the most rows per statement: a power of two within SQLite's limit on parameters
    texts: dict[int, str] = field(default_factory=dict)

    def sql(self, n: int) -> str:
        text = self.texts.get(n)
        if text is None:
            text = self.texts[n] = self.head + ", ".join([self.group] * n) + self.tail
        return text


@dataclass(frozen=True)
class _DriverForm:
    sql: str
    names: tuple[str, ...]  # parameter names, in placeholder order when positional
    values: Callable[[dict[str, Any]], tuple[Any, ...]]  # a row's values of ``names``, in order
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (index, bind processor), where there is one
    positional: bool
    multi: _MultiRow | None = None  # SQLite INSERTs: the multi-row form


#: By dialect kind, not dialect object: every Engine has its own dialect, and a cache holding them would
#: keep disposed engines' dialects alive. Statements are the module-level cached ones: a bounded set.
_DRIVER_FORMS: dict[tuple[str, str, str, Any], _DriverForm] = {}
_DRIVER_FORMS_MAX = 512
_DRIVER_FORMS_LOCK = threading.Lock()
_VALUES_GROUP = re.compile(r"\bVALUES (\(\?(?:, \?)*\))")


def _driver_form(dialect: sa.Dialect, stmt: Any) -> _DriverForm:
    """``stmt`` compiled once for ``dialect``, with what it takes to turn a row into DB-API parameters."""
    compiled = stmt.compile(dialect=dialect)
    binds = {bind.key: bind for bind in compiled.binds.values()}
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(binds)
    processors = tuple((i, p) for i, n in enumerate(names)
                       if (p := binds[n].type.dialect_impl(dialect).bind_processor(dialect)) is not None)
    getter = operator.itemgetter(*names)
    values = getter if len(names) > 1 else (lambda row: (getter(row),))
    sql = str(compiled)
    return _DriverForm(sql, names, values, processors, positional,
                       _multi_row(sql, len(names)) if dialect.driver == "pysqlite" and positional else None)


def _multi_row(sql: str, params: int) -> _MultiRow | None:
    """The multi-row form of an SQLite INSERT whose parameters are all in its one VALUES group, else None."""
    found = _VALUES_GROUP.search(sql)
    if (found is None or not sql.lstrip().upper().startswith("INSERT") or not params
            or found.group(1).count("?") != params or sql.count("?") != params):
        return None
    rows = 1 << (max(1, min(MULTI_ROWS, _sqlite_max_parameters() // params)).bit_length() - 1)
    return _MultiRow(sql[: found.start(1)], found.group(1), sql[found.end(1):], rows)


@functools.cache
def _sqlite_max_parameters() -> int:
    """SQLite's limit on parameters per statement in this build (32766 since 3.32, 999 before)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        return int(probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


@functools.lru_cache(maxsize=256)
def _insert_ignore_statement(dialect: str, table: sa.Table, columns: tuple[str, ...],
                             keys: tuple[str, ...]) -> Any:
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return cacheable(insert.values({c: sa.bindparam(c) for c in columns}).on_conflict_do_nothing(
        index_elements=list(keys)), dialect)


def cacheable(stmt: Any, dialect: str, returning: Sequence[sa.ColumnElement[Any]] = ()) -> Any:
    """A dialect INSERT … ON CONFLICT as a ``text()`` statement that SQLAlchemy's compiled cache keeps.

    SQLAlchemy never caches the SQLite/PostgreSQL ``Insert`` constructs (their ON CONFLICT clause has no
    cache key), so each execution compiled the statement again: most of a mirror upsert's CPU time. Here
    it is compiled once, with named parameters; the typed bind parameters keep the columns' bind
    processing (UTC datetimes, JSON) and ``returning`` declares the RETURNING columns' types. ``stmt``
    must give its VALUES as bind parameters named like the keys of the rows executed with it.
    """
    named = (postgresql.dialect if dialect == "postgresql" else sqlite.dialect)(paramstyle="named")
    named.bind_typing = BindTyping.NONE  # no ``:x::JSONB`` here: the real dialect adds its casts to the text
    compiled = stmt.compile(dialect=named)
    text = sa.text(str(compiled)).bindparams(
        *[sa.bindparam(name, type_=bind.type) for name, bind in compiled.binds.items()])
    return text.columns(*returning) if returning else text


def upsert_newer(session: Session | Connection, table: sa.Table, row: dict[str, Any], *,
                 key: str = "id", version: str = "updated_at") -> bool:
    """Insert ``row`` or update the stored one, but only if ``row[version]`` is not older.

    Returns True when the row was written. Out-of-order and replayed events can never overwrite newer data.
    """
    stmt = _upsert_statement(_dialect_name(session), table, tuple(sorted(row)), key, version)
    # RETURNING, not rowcount: psycopg 3 reports rowcount -1 here, which read as "written" every time.
    return session.execute(stmt, row).first() is not None


def _dialect_name(session: Session | Connection) -> str:
    return session.dialect.name if isinstance(session, Connection) else session.get_bind().dialect.name


@functools.lru_cache(maxsize=256)
def _upsert_statement(dialect: str, table: sa.Table, columns: tuple[str, ...], key: str, version: str,
                      returning: bool = True) -> Any:
    # Built once per shape and executed with bound parameters, so SQLAlchemy's compiled cache applies.
    # ``returning=False`` for executemany (batched mirrors), where no per-row answer is needed.
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    insert = insert.values({c: sa.bindparam(c) for c in columns})
    upsert = insert.on_conflict_do_update(
        index_elements=[key],
        set_={c: insert.excluded[c] for c in columns if c != key},
        where=sa.or_(table.c[version].is_(None), table.c[version] <= insert.excluded[version]),
    )
    if not returning:
        return cacheable(upsert, dialect)
    return cacheable(upsert.returning(table.c[key]), dialect, returning=[table.c[key]])
