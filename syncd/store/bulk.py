"""The bulk-write fast path: multi-row inserts, cached ON CONFLICT statements, one-parameter IN lists.

Private to the store in spirit: callers outside ``syncd/store/`` use the store's own functions (the run
and ledger writes, ``syncd.store.mirrors`` for the mirrors), never these building blocks.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.orm import Session

from syncd import jsoncodec
from syncd.store.pgcopy import _copy_converted, _staging, copy_insert

__all__ = ["copy_insert"]  # moved to syncd.store.pgcopy; kept importable from here


def one_of(column: sa.ColumnElement[Any], name: str, dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (…)`` over a list given as one parameter (pass it through ``list_param``).

    SQLite reads the list from a JSON array (``json_each``): the statement is compiled and prepared once,
    where SQLAlchemy's expanding ``IN`` rendered and SQLite prepared a new statement for each page.
    PostgreSQL: ``= ANY`` over one array parameter, for the same reason (an expanding ``IN`` of a thousand
    ids was a new statement text for SQLAlchemy to render, psycopg to parse and the server to plan, each
    page). This relies on ``plan_cache_mode=force_custom_plan`` (``connect.create_engine``): with a generic
    plan, which psycopg's prepared statements get after a few executions, PostgreSQL scanned young tables
    without statistics whole (bench/README.md, "Measurements behind the code").
    """
    if dialect == "postgresql":
        return column == sa.func.any(sa.bindparam(name, type_=BinaryArray(column.type)))
    return column.in_(sa.select(sa.column("value")).select_from(
        sa.func.json_each(sa.bindparam(name, type_=sa.String()))).scalar_subquery())


class BinaryList(list[Any]):
    """A list that psycopg sends as a binary array, on connections from ``connect.create_engine``.

    psycopg's text form of a list is Python code per element: 1.8 ms per thousand strings and 7 ms per
    thousand datetimes, against 0.4-0.5 ms for its binary form (bench/README.md, scenario D). A plain
    ``list`` keeps psycopg's default, so other code's array parameters (a workflow's raw SQL) are
    unchanged; a connection without the registration sends this one as text, as any list.
    """


class BinaryArray(sa.types.TypeDecorator[Any]):
    """``ARRAY(item)`` whose values go as ``BinaryList`` (each item through its type's bind processor first,
    so UTC datetimes are checked as in any column). Same SQL and cast as ``postgresql.ARRAY(item)``."""

    impl = postgresql.ARRAY
    cache_ok = True

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        array: postgresql.ARRAY[Any] = self.impl_instance  # type: ignore[assignment]
        item = array.item_type.dialect_impl(dialect).bind_processor(dialect)
        if item is None:
            return lambda value: None if value is None else BinaryList(value)
        return lambda value: None if value is None else BinaryList([item(v) for v in value])


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
    earlier row of the same statement sees it), and a catch-up goes faster (bench/README.md).
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
    if form.copy is not None and len(converted) >= COPY_FROM and form.copy.fits(converted):
        _copy_rows(conn, form.copy, converted)
        return
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
    copy: _CopyForm | None = None  # PostgreSQL INSERT … ON CONFLICT: the COPY form


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
                       _multi_row(sql, len(names)) if dialect.driver == "pysqlite" and positional else None,
                       _copy_form(sql, names) if dialect.driver == "psycopg" and not positional else None)


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


#: From this many rows on, an ``execute_many`` of an INSERT … ON CONFLICT goes by COPY on PostgreSQL.
COPY_FROM = 100

_PG_UPSERT = re.compile(r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES \((.*?)\) ON CONFLICT \(([\w, ]+)\) (.*)", re.S)
_PG_PARAM = re.compile(r"%\((\w+)\)s(?:::[A-Z ]+)?")


@dataclass(frozen=True)
class _CopyForm:
    """A PostgreSQL ``INSERT INTO t (columns) VALUES (%(p)s, …) ON CONFLICT (keys) …`` as ``copy_insert`` runs it."""

    table: str
    columns: tuple[str, ...]
    order: tuple[int, ...]  # for each column, the index of its value in a converted row
    keys: tuple[int, ...]  # the conflict keys' indexes in a converted row
    conflict: str  # "(keys) DO …", the rest of the statement
    unique_keys: bool  # DO UPDATE: PostgreSQL refuses a key twice in one statement

    def fits(self, rows: Sequence[tuple[Any, ...]]) -> bool:
        if not self.unique_keys:
            return True
        keys = self.keys
        return len({tuple(row[i] for i in keys) for row in rows}) == len(rows)


def _copy_form(sql: str, names: tuple[str, ...]) -> _CopyForm | None:
    """The COPY form of an INSERT whose VALUES are one plain parameter per column, else None."""
    found = _PG_UPSERT.fullmatch(sql)
    if found is None or "%%" in sql:  # a literal % would be doubled for parameters, and COPY's INSERT has none
        return None
    table, listed, values, keys, rest = found.groups()
    columns = tuple(c.strip() for c in listed.split(","))
    params = [_PG_PARAM.fullmatch(v.strip()) for v in values.split(",")]
    if len(params) != len(columns) or any(p is None or p.group(1) not in names for p in params):
        return None
    order = tuple(names.index(p.group(1)) for p in params if p is not None)
    key_columns = [k.strip() for k in keys.split(",")]
    if any(k not in columns for k in key_columns):
        return None
    return _CopyForm(table, columns, order, tuple(order[columns.index(k)] for k in key_columns),
                     f"({keys}) {rest}", not rest.lstrip().upper().startswith("DO NOTHING"))


def _copy_rows(conn: Connection, form: _CopyForm, rows: Sequence[tuple[Any, ...]]) -> None:
    order = form.order
    values = rows if order == tuple(range(len(order))) else [tuple(row[i] for i in order) for row in rows]
    _copy_converted(conn, _staging(form.table, form.columns), values, form.conflict, None)


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
