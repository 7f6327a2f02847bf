"""The mirrors' writes: newer-wins upserts and deletes on a mirror table, and ``syncd_tombstones``.

The public face of the store's bulk path for ``syncd.workflows.mirror`` (and any mirror workflow): the
statements are built once per table shape and dialect, executed with bound parameters, and batched.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from syncd.store.bulk import (
    BinaryArray,
    _upsert_statement,
    cacheable,
    execute_many,
    list_param,
    one_of,
    upsert_newer,
)
from syncd.store.tables import tombstones

__all__ = ["delete_not_newer", "stored_state", "stored_tombstone", "stored_tombstones", "stored_versions",
           "upsert_newer", "write_snapshots", "write_tombstone"]


def stored_tombstone(conn: Connection, kind: str, object_id: Any) -> datetime | None:
    """The version at which the ``kind`` object ``object_id`` was deleted, if it was."""
    found: datetime | None = conn.execute(_TOMBSTONE_VERSION, {"kind": kind, "object_id": str(object_id)}
                                          ).scalar_one_or_none()
    return found


def stored_tombstones(conn: Connection, kind: str, ids: Iterable[Any]) -> dict[str, datetime]:
    """str(id) → tombstone version, for those of ``ids`` that have one."""
    dialect = conn.dialect.name
    return {r[0]: r[1] for r in conn.execute(_tombstone_versions_statement(dialect), {
        "kind": kind, "ids": list_param([str(i) for i in ids], dialect)})}


def stored_versions(conn: Connection, table: sa.Table, ids: Iterable[Any], *, key: str = "id",
                    version: str = "updated_at") -> dict[Any, datetime | None]:
    """id → stored version, for those of ``ids`` that exist in ``table``."""
    dialect = conn.dialect.name
    return {r[0]: r[1] for r in conn.execute(_versions_statement(table, key, version, dialect),
                                             {"ids": list_param(list(ids), dialect)})}


def delete_not_newer(conn: Connection, table: sa.Table, object_id: Any, stamp: datetime, *, key: str = "id",
                     version: str = "updated_at") -> None:
    """Delete the row ``object_id`` if its version is not newer than ``stamp``."""
    conn.execute(_delete_statement(table, key, version), {"object_id": object_id, "stamp": stamp})


def write_tombstone(conn: Connection, kind: str, object_id: Any, stamp: datetime) -> None:
    """Record (or move forward) the tombstone of a deleted object."""
    conn.execute(_tombstone_statement(conn.dialect.name), {"kind": kind, "object_id": str(object_id), "version": stamp})


def stored_state(conn: Connection, table: sa.Table, kind: str, ids: Sequence[Any], *, key: str = "id",
                 version: str = "updated_at") -> tuple[dict[Any, datetime | None], dict[str, datetime]]:
    """``stored_versions`` and ``stored_tombstones`` of ``ids`` at once: one statement on PostgreSQL."""
    if conn.dialect.name != "postgresql":
        return (stored_versions(conn, table, ids, key=key, version=version),
                stored_tombstones(conn, kind, ids))
    stored: dict[Any, datetime | None] = {}
    dead: dict[str, datetime] = {}
    for object_id, tombstone_id, stamp in conn.execute(_state_statement(table, key, version), {
            "ids": list(ids), "kind": kind, "sids": [str(i) for i in ids]}):
        if tombstone_id is None:
            stored[object_id] = stamp
        else:
            dead[tombstone_id] = stamp
    return stored, dead


def write_snapshots(conn: Connection, table: sa.Table, *, kind: str, deletes: Sequence[tuple[Any, datetime]],
                    upserts: Sequence[dict[str, Any]], tombstones: Sequence[tuple[Any, datetime]],
                    key: str = "id", version: str = "updated_at") -> None:
    """A planned batch's writes: its deletes, then its upserts, then its tombstones. Every statement keeps
    its SQL guard, so no write makes a row older. Each object at most once in each list (a plan's).

    PostgreSQL: the deletes in one statement and the tombstones in one, over arrays (``unnest``); the
    upserts by COPY from ``bulk.COPY_FROM`` rows on. SQLite: one executemany each (upserts: per row shape).
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        if deletes:
            ids, stamps = zip(*deletes, strict=True)
            conn.execute(_pg_delete_statement(table, key, version), {"ids": list(ids), "stamps": list(stamps)})
    else:
        execute_many(conn, _batch_delete_statement(table, key, version),
                     [{"object_id": object_id, "stamp": stamp} for object_id, stamp in deletes])
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in upserts:  # a mirror's rows come from one function: the same keys in the same order
        by_shape.setdefault(tuple(row), []).append(row)
    for columns, rows in by_shape.items():
        execute_many(conn, _upsert_statement(dialect, table, columns, key, version, returning=False), rows)
    if dialect == "postgresql":
        if tombstones:
            conn.execute(_pg_tombstones_statement(), {"kind": kind, "ids": [str(i) for i, _ in tombstones],
                                                      "versions": [stamp for _, stamp in tombstones]})
        return
    execute_many(conn, _tombstone_statement(dialect), [{"kind": kind, "object_id": str(object_id), "version": stamp}
                                                       for object_id, stamp in tombstones])


# Statements built once and executed with bound parameters: building the expression per event cost more
# than running it.
_TOMBSTONE_VERSION = sa.select(tombstones.c.version).where(
    tombstones.c.kind == sa.bindparam("kind"), tombstones.c.object_id == sa.bindparam("object_id"))


@functools.lru_cache(maxsize=4)
def _tombstone_versions_statement(dialect: str) -> Any:
    return sa.select(tombstones.c.object_id, tombstones.c.version).where(
        tombstones.c.kind == sa.bindparam("kind"), one_of(tombstones.c.object_id, "ids", dialect))


@functools.lru_cache(maxsize=64)
def _versions_statement(table: sa.Table, key: str, version: str, dialect: str) -> Any:
    return sa.select(table.c[key], table.c[version]).where(one_of(table.c[key], "ids", dialect))


@functools.lru_cache(maxsize=64)
def _delete_statement(table: sa.Table, key: str, version: str) -> Any:
    return sa.delete(table).where(table.c[key] == sa.bindparam("object_id"),
                                  table.c[version] <= sa.bindparam("stamp", type_=table.c[version].type))


@functools.lru_cache(maxsize=64)
def _batch_delete_statement(table: sa.Table, key: str, version: str) -> Any:
    # Also a NULL version: the plan deletes such a row only after an upsert of the batch gave it one, which
    # the batch writes after its deletes.
    return sa.delete(table).where(table.c[key] == sa.bindparam("object_id"), sa.or_(
        table.c[version].is_(None), table.c[version] <= sa.bindparam("stamp", type_=table.c[version].type)))


@functools.lru_cache(maxsize=4)
def _tombstone_statement(dialect: str) -> Any:
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(tombstones)
    insert = insert.values({c: sa.bindparam(c) for c in ("kind", "object_id", "version")})
    return cacheable(insert.on_conflict_do_update(
        index_elements=["kind", "object_id"],
        set_={"version": insert.excluded.version},
        where=tombstones.c.version < insert.excluded.version,
    ), dialect)


# ---- PostgreSQL: one statement per table and kind of write, over arrays ------------------------------------


def _array(name: str, column: sa.Column[Any]) -> Any:
    # Strings without the column's length: a cast to varchar(n) would cut a longer id and match another.
    item = sa.String() if isinstance(column.type, sa.String) else column.type
    return sa.bindparam(name, type_=BinaryArray(item))


@functools.lru_cache(maxsize=64)
def _state_statement(table: sa.Table, key: str, version: str) -> Any:
    # Rows of the table come with a NULL tombstone id, tombstones with a NULL key: one result, two kinds.
    versions = sa.select(table.c[key], sa.null().cast(tombstones.c.object_id.type),
                         sa.cast(table.c[version], tombstones.c.version.type)).where(
        table.c[key] == sa.func.any(_array("ids", table.c[key])))
    dead = sa.select(sa.null().cast(table.c[key].type), tombstones.c.object_id, tombstones.c.version).where(
        tombstones.c.kind == sa.bindparam("kind"),
        tombstones.c.object_id == sa.func.any(_array("sids", tombstones.c.object_id)))
    return sa.union_all(versions, dead)


@functools.lru_cache(maxsize=64)
def _pg_delete_statement(table: sa.Table, key: str, version: str) -> Any:
    # The batch form's guard, NULL version included (see ``_batch_delete_statement``).
    gone = sa.func.unnest(_array("ids", table.c[key]), _array("stamps", table.c[version])).table_valued(
        sa.column("id"), sa.column("stamp")).render_derived(name="gone")
    return sa.delete(table).where(table.c[key] == gone.c.id, sa.or_(
        table.c[version].is_(None), table.c[version] <= gone.c.stamp))


@functools.cache
def _pg_tombstones_statement() -> Any:
    # DO UPDATE may meet each key once per statement: a plan has one tombstone per object.
    given = sa.func.unnest(_array("ids", tombstones.c.object_id), _array("versions", tombstones.c.version)
                           ).table_valued(sa.column("object_id"), sa.column("version")).render_derived(name="given")
    insert = postgresql.insert(tombstones).from_select(
        ["kind", "object_id", "version"],
        sa.select(sa.bindparam("kind", type_=tombstones.c.kind.type), given.c.object_id, given.c.version))
    return cacheable(insert.on_conflict_do_update(
        index_elements=["kind", "object_id"],
        set_={"version": insert.excluded.version},
        where=tombstones.c.version < insert.excluded.version,
    ), "postgresql")
