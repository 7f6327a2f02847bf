"""Newer-wins mirroring of provider objects into tables, shared by every built-in mirror workflow.

An event is applied only if its object's version (``updated_at``) is not older than what is stored;
deletes leave a tombstone so a stale, replayed or out-of-order event cannot bring the object back.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncd.db import _dialect_name, cacheable, upsert_newer
from syncd.store.tables import tombstones


def apply_snapshot(session: Session | Connection, table: sa.Table, row: dict[str, Any], *, kind: str,
                   deleted: bool = False, key: str = "id", version: str = "updated_at") -> bool:
    """Upsert (or delete) ``row`` unless the stored object or its tombstone is newer. True if applied."""
    object_id = row[key]
    stamp: datetime = row[version]
    # Core statements on the session's connection (inside its SAVEPOINT): the ORM's execute path costs
    # more than these statements themselves, and they touch no ORM objects.
    conn = session if isinstance(session, Connection) else session.connection()
    found = conn.execute(_TOMBSTONE_VERSION, {"kind": kind, "object_id": str(object_id)})
    dead_at = found.scalar_one_or_none()
    if dead_at is not None and dead_at >= stamp:
        return False
    if not deleted:
        return upsert_newer(conn, table, row, key=key, version=version)
    conn.execute(_delete_statement(table, key, version), {"object_id": object_id, "stamp": stamp})
    conn.execute(_tombstone_statement(_dialect_name(conn)),
                 {"kind": kind, "object_id": str(object_id), "version": stamp})
    return True


# Statements built once and executed with bound parameters: building the expression per event cost more
# than running it.
_TOMBSTONE_VERSION = sa.select(tombstones.c.version).where(
    tombstones.c.kind == sa.bindparam("kind"), tombstones.c.object_id == sa.bindparam("object_id"))


@functools.lru_cache(maxsize=64)
def _delete_statement(table: sa.Table, key: str, version: str) -> Any:
    return sa.delete(table).where(table.c[key] == sa.bindparam("object_id"),
                                  table.c[version] <= sa.bindparam("stamp", type_=table.c[version].type))


@functools.lru_cache(maxsize=4)
def _tombstone_statement(dialect: str) -> Any:
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(tombstones)
    insert = insert.values({c: sa.bindparam(c) for c in ("kind", "object_id", "version")})
    return cacheable(insert.on_conflict_do_update(
        index_elements=["kind", "object_id"],
        set_={"version": insert.excluded.version},
        where=tombstones.c.version < insert.excluded.version,
    ), dialect)
