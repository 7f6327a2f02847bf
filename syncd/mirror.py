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
from sqlalchemy.orm import Session

from syncd.db import _dialect_name, upsert_newer
from syncd.store.tables import tombstones


def apply_snapshot(session: Session, table: sa.Table, row: dict[str, Any], *, kind: str, deleted: bool = False,
                   key: str = "id", version: str = "updated_at") -> bool:
    """Upsert (or delete) ``row`` unless the stored object or its tombstone is newer. True if applied."""
    object_id = row[key]
    stamp: datetime = row[version]
    dead_at = session.execute(
        sa.select(tombstones.c.version).where(tombstones.c.kind == kind, tombstones.c.object_id == str(object_id))
    ).scalar_one_or_none()
    if dead_at is not None and dead_at >= stamp:
        return False
    if not deleted:
        return upsert_newer(session, table, row, key=key, version=version)
    session.execute(sa.delete(table).where(table.c[key] == object_id, table.c[version] <= stamp))
    session.execute(_tombstone_statement(_dialect_name(session)),
                    {"kind": kind, "object_id": str(object_id), "version": stamp})
    return True


@functools.lru_cache(maxsize=4)
def _tombstone_statement(dialect: str) -> Any:
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(tombstones)
    return insert.on_conflict_do_update(
        index_elements=["kind", "object_id"],
        set_={"version": insert.excluded.version},
        where=tombstones.c.version < insert.excluded.version,
    )
