"""PostgreSQL's ``COPY`` paths (psycopg): into a temporary table then one ``INSERT … SELECT`` (``copy_insert``),
or straight into the table when no key should exist yet (``copy_new``).

psycopg formats COPY rows in C and the server parses and plans one statement, not one per row, and binds no
parameters (bench/README.md, scenario D). Every function takes a ``Connection`` inside a transaction the
caller owns; the values of ``rows`` go through their column type's bind processor first (UTC datetimes, the
engine's JSON serializer), as ``conn.execute`` would send them, except in the columns named ``serialized``: JSON
the caller serialized already (the ledger's payloads, written by the quarantine check), passed as its text.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection


def copy_insert(conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                conflict: str, returning: str | None = None, serialized: Collection[str] = ()) -> list[Any]:
    """Insert ``rows`` into ``table`` with ``COPY`` and one ``INSERT … SELECT``.

    ``rows`` are tuples of values in ``columns`` order. They are copied into a temporary table with those
    columns' types, then moved by ``INSERT INTO table (columns) SELECT columns FROM it ON CONFLICT
    {conflict}`` in the caller's transaction. Returns the ``returning`` column's values of the rows inserted
    (nothing if ``returning`` is None). Same rows and conflict rules as one ``INSERT … VALUES … ON CONFLICT``
    per row, except that ``DO UPDATE`` must not meet a key twice (PostgreSQL refuses it); ``DO NOTHING``
    keeps the first of repeated keys, as row-by-row inserts would.

    The temporary table belongs to the session, is emptied at each commit (``ON COMMIT DELETE ROWS``; a
    rollback discards its rows too) and is named after its columns, so a column added later gets a table of
    its own. ``IF NOT EXISTS`` every time rather than a flag on the connection: a rolled-back first
    transaction takes the table with it, and a transaction-mode pooler may hand over another session.
    """
    if not rows:
        return []
    staging = _staging(table.name, tuple(columns))
    return _copy_converted(conn, staging, _driver_values(conn, table, columns, rows, serialized), conflict,
                           returning)


def copy_new(conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
             serialized: Collection[str] = ()) -> bool:
    """``COPY`` ``rows`` (tuples in ``columns`` order, distinct keys) straight into ``table``, in a SAVEPOINT.

    True when they are all in; False, with nothing of them written (rolled back to the SAVEPOINT, the rest of
    the transaction untouched), when a key exists already: the caller then inserts them another way
    (``copy_insert`` with ``ON CONFLICT``). For rows expected to be new: no temporary table, no speculative
    insertion, which cost the server more (bench/README.md, scenario D, session 10). A refused attempt
    costs the rows' formatting and an ERROR in the server's log naming the key (PostgreSQL 15 logs the line
    number of a batched COPY, not its data).
    """
    import psycopg

    if not rows:
        return True
    types = _binary_types(conn.dialect, table, tuple(columns), frozenset(serialized))
    try:
        with conn.begin_nested():
            driver = conn.connection.driver_connection
            assert driver is not None  # a live connection inside the caller's transaction
            statement = _copy_statement(table.name, tuple(columns), binary=types is not None)
            with driver.cursor() as cursor, cursor.copy(statement) as copy:
                if types is not None:
                    copy.set_types(types)
                for row in _driver_values(conn, table, columns, rows, serialized):
                    copy.write_row(row)
    except psycopg.errors.UniqueViolation:
        return False
    return True


@functools.lru_cache(maxsize=64)
def _copy_statement(table: str, columns: tuple[str, ...], binary: bool = False) -> str:
    return f"COPY {_quoted(table)} ({', '.join(map(_quoted, columns))}) FROM STDIN" + (
        " (FORMAT BINARY)" if binary else "")


#: The binary COPY type of each SQLAlchemy type ``copy_new`` sends that way (psycopg's C dumpers; BigInteger
#: before Integer, its base class). varchar and text share their binary form, and so do text and ``json``
#: (json_recv reads the text as it is), so a ``serialized`` column is sent as text.
_BINARY = ((sa.DateTime, "timestamptz"), (sa.String, "text"), (sa.BigInteger, "int8"), (sa.Integer, "int4"),
           (sa.Boolean, "bool"), (sa.Float, "float8"))


@functools.lru_cache(maxsize=64)
def _binary_types(dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...],
                  serialized: frozenset[str]) -> list[str] | None:
    """The binary COPY types of ``columns``, or None (text COPY) if one has none here.

    Binary: the server reads timestamps as integers instead of parsing their text, and splits and de-escapes
    no lines (bench/README.md §D, session 12)."""
    found: list[str] = []
    for name in columns:
        kind: Any = table.c[name].type.dialect_impl(dialect)
        if name in serialized:  # JSON text: json (or text) takes it as it is, jsonb would need a version byte
            found.append("text")
            if isinstance(kind, postgresql.JSONB) or not isinstance(kind, sa.JSON | sa.String):
                return None
            continue
        if isinstance(kind, sa.TypeDecorator):
            kind = kind.impl_instance
        pg = next((pg for sql, pg in _BINARY if isinstance(kind, sql)), None)
        if pg is None or (pg == "timestamptz" and not kind.timezone):
            return None
        found.append(pg)
    return found


def _driver_values(conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                   serialized: Collection[str] = ()) -> Iterable[Sequence[Any]]:
    """``rows`` through each column type's bind processor (looked up per call: a few µs against a COPY),
    except the ``serialized`` columns (JSON given as its text, which ``COPY`` takes as it is)."""
    dialect = conn.dialect
    processors = [(i, p) for i, c in enumerate(columns) if c not in serialized
                  and (p := table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) is not None]
    if not processors:
        return rows
    converted: list[Any] = list(zip(*rows, strict=True))
    for i, process in processors:
        converted[i] = map(process, converted[i])
    return zip(*converted, strict=True)


def _copy_converted(conn: Connection, staging: _Staging, rows: Iterable[Sequence[Any]], conflict: str,
                    returning: str | None) -> list[Any]:
    """``copy_insert`` once the values are the driver's."""
    conn.exec_driver_sql(staging.create)
    driver = conn.connection.driver_connection
    assert driver is not None  # a live connection inside the caller's transaction
    with driver.cursor() as cursor, cursor.copy(staging.copy) as copy:
        for row in rows:
            copy.write_row(row)
    result = conn.exec_driver_sql(staging.insert + conflict + (f" RETURNING {returning}" if returning else ""))
    return [r[0] for r in result] if returning else []


@dataclass(frozen=True)
class _Staging:
    """A ``copy_insert`` shape: its temporary table's DDL, the COPY, the INSERT's head."""

    create: str
    copy: str
    insert: str


@functools.lru_cache(maxsize=64)
def _staging(table: str, columns: tuple[str, ...]) -> _Staging:
    digest = hashlib.blake2b(repr((table, columns)).encode(), digest_size=6).hexdigest()
    name = f"syncd_copy_{table[:36]}_{digest}"
    target = _quoted(table)
    listed = ", ".join(map(_quoted, columns))
    return _Staging(
        create=(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS "
                f"SELECT {listed} FROM {target} WITH NO DATA"),
        copy=f"COPY {name} ({listed}) FROM STDIN",
        insert=f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {name} ON CONFLICT ",
    )


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
