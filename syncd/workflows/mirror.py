"""Newer-wins mirroring of provider objects into tables, shared by every built-in mirror workflow.

An event is applied only if its object's version (``updated_at``) is not older than what is stored;
deletes leave a tombstone so a stale, replayed or out-of-order event cannot bring the object back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncd.store import mirrors


def apply_snapshot(session: Session | Connection, table: sa.Table, row: dict[str, Any], *, kind: str,
                   deleted: bool = False, key: str = "id", version: str = "updated_at") -> bool:
    """Upsert (or delete) ``row`` unless the stored object or its tombstone is newer. True if applied."""
    object_id = row[key]
    stamp: datetime = row[version]
    # Core statements on the session's connection (inside its SAVEPOINT): the ORM's execute path costs
    # more than these statements themselves, and they touch no ORM objects.
    conn = session if isinstance(session, Connection) else session.connection()
    dead_at = mirrors.stored_tombstone(conn, kind, object_id)
    if dead_at is not None and dead_at >= stamp:
        return False
    if not deleted:
        return mirrors.upsert_newer(conn, table, row, key=key, version=version)
    mirrors.delete_not_newer(conn, table, object_id, stamp, key=key, version=version)
    mirrors.write_tombstone(conn, kind, object_id, stamp)
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
    stored, dead = mirrors.stored_state(conn, table, kind, ids, key=key, version=version)
    plan = plan_snapshots(items, stored, dead, key=key, version=version)
    mirrors.write_snapshots(conn, table, kind=kind, deletes=plan.deletes, upserts=plan.upserts,
                            tombstones=plan.tombstones, key=key, version=version)
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
