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

from syncd.store.bulk import _upsert_statement, cacheable, execute_many, list_param, one_of, upsert_newer
from syncd.store.tables import tombstones

__all__ = ["delete_not_newer", "stored_tombstone", "stored_tombstones", "stored_versions", "upsert_newer",
           "write_snapshots", "write_tombstone"]


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


def write_snapshots(conn: Connection, table: sa.Table, *, kind: str, deletes: Sequence[tuple[Any, datetime]],
                    upserts: Sequence[dict[str, Any]], tombstones: Sequence[tuple[Any, datetime]],
                    key: str = "id", version: str = "updated_at") -> None:
    """A planned batch's writes: its deletes, then its upserts, then its tombstones, one executemany each
    (upserts: one per row shape). Every statement keeps its SQL guard, so no write makes a row older."""
    dialect = conn.dialect.name
    execute_many(conn, _batch_delete_statement(table, key, version),
                 [{"object_id": object_id, "stamp": stamp} for object_id, stamp in deletes])
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in upserts:  # a mirror's rows come from one function: the same keys in the same order
        by_shape.setdefault(tuple(row), []).append(row)
    for columns, rows in by_shape.items():
        execute_many(conn, _upsert_statement(dialect, table, columns, key, version, returning=False), rows)
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
