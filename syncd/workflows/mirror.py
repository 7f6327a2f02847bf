"""Newer-wins mirroring of provider objects into tables, shared by every built-in mirror workflow.

An event is applied only if its object's version (``updated_at``) is not older than what is stored;
deletes leave a tombstone so a stale, replayed or out-of-order event cannot bring the object back.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncd.store.db import _dialect_name, _upsert_statement, cacheable, execute_many, list_param, one_of, upsert_newer
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


def apply_snapshots(conn: Connection, table: sa.Table, items: Sequence[tuple[dict[str, Any], bool]], *, kind: str,
                    key: str = "id", version: str = "updated_at") -> int:
    """``apply_snapshot`` on each ``(row, deleted)`` in order, in a handful of statements: same end state.

    Reads the stored versions and tombstones of the batch's objects (two queries), replays the newer-wins
    rules in memory (``plan_snapshots``), then writes each object's final state once: one executemany of
    deletes, one of upserts, one of tombstones. The statements keep their SQL guards (``version <=``), so
    a write can never make a stored object older. Returns how many items applied.
    """
    if not items:
        return 0
    ids = list(dict.fromkeys(row[key] for row, _ in items))
    dialect = _dialect_name(conn)
    stored = {r[0]: r[1] for r in conn.execute(_versions_statement(table, key, version, dialect),
                                               {"ids": list_param(ids, dialect)})}
    dead = {r[0]: r[1] for r in conn.execute(_tombstone_versions_statement(dialect), {
        "kind": kind, "ids": list_param([str(i) for i in ids], dialect)})}
    plan = plan_snapshots(items, stored, dead, key=key, version=version)
    execute_many(conn, _batch_delete_statement(table, key, version),
                 [{"object_id": object_id, "stamp": stamp} for object_id, stamp in plan.deletes])
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in plan.upserts:  # a mirror's rows come from one function: the same keys in the same order
        by_shape.setdefault(tuple(row), []).append(row)
    for columns, rows in by_shape.items():
        execute_many(conn, _upsert_statement(dialect, table, columns, key, version, returning=False), rows)
    execute_many(conn, _tombstone_statement(dialect), [{"kind": kind, "object_id": str(object_id), "version": stamp}
                                                       for object_id, stamp in plan.tombstones])
    return plan.applied


@dataclass(slots=True)
class _Object:
    present: bool
    version: datetime | None
    tombstone: datetime | None
    row: dict[str, Any] | None = None  # the row to write, if an item applied and the object still exists
    deleted_at: datetime | None = None  # the stamp of the delete that removed the stored row, if one did
    tombstone_moved: bool = False


@dataclass
class SnapshotPlan:
    upserts: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[tuple[Any, datetime]] = field(default_factory=list)  # (id, stamp), run before the upserts
    tombstones: list[tuple[Any, datetime]] = field(default_factory=list)
    applied: int = 0


def plan_snapshots(items: Sequence[tuple[dict[str, Any], bool]], stored: Mapping[Any, datetime | None],
                   dead: Mapping[str, datetime], *, key: str = "id", version: str = "updated_at") -> SnapshotPlan:
    """The writes that leave the tables as ``apply_snapshot`` on each item in order would.

    ``stored``: id → stored version of the objects that exist; ``dead``: str(id) → tombstone version. The
    rules, item by item, as the SQL of ``apply_snapshot`` has them: skip if the tombstone is not older; an
    upsert applies over a missing row, a NULL version or a version not newer (so the later of two equal
    versions wins); a delete removes a row whose version is not newer, and moves the tombstone forward.
    """
    objects: dict[Any, _Object] = {}
    plan = SnapshotPlan()
    for row, deleted in items:
        object_id, stamp = row[key], row[version]
        obj = objects.get(object_id)
        if obj is None:
            obj = objects[object_id] = _Object(present=object_id in stored, version=stored.get(object_id),
                                               tombstone=dead.get(str(object_id)))
        if obj.tombstone is not None and obj.tombstone >= stamp:
            continue
        if not deleted:
            if not obj.present or obj.version is None or obj.version <= stamp:
                obj.present, obj.version, obj.row = True, stamp, row
                plan.applied += 1
            continue
        plan.applied += 1
        if obj.present and obj.version is not None and obj.version <= stamp:
            if object_id in stored:  # the stored row goes (a row created within the batch was never written)
                obj.deleted_at = stamp
            obj.present, obj.version, obj.row = False, None, None
        if obj.tombstone is None or obj.tombstone < stamp:
            obj.tombstone, obj.tombstone_moved = stamp, True
    for object_id, obj in objects.items():
        if obj.deleted_at is not None:
            plan.deletes.append((object_id, obj.deleted_at))
        if obj.row is not None:
            plan.upserts.append(obj.row)
        if obj.tombstone_moved and obj.tombstone is not None:
            plan.tombstones.append((object_id, obj.tombstone))
    return plan


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
