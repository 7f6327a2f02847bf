"""The oracle: what a newer-wins mirror holds after a stream, computed apart from syncd's own code."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from simulators.workos.data import MEMBERSHIP, ORG, USER
from simulators.workos.ids import parse_timestamp

__all__ = ["mirror_state"]

_BUCKETS = {USER: "users", ORG: "organizations", MEMBERSHIP: "organization_memberships"}
_Key = tuple[str, str]


def mirror_state(events: Iterable[dict[str, Any]],
                 types: set[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Objects a newer-wins mirror holds after applying ``events`` in order (only types in ``types``).

    Returns ``{"users": {id: data}, "organizations": …, "organization_memberships": …}``. Rules match
    syncd's mirror: an upsert applies unless the stored object is newer or its tombstone is not older;
    a delete removes the object unless it is newer, and leaves a tombstone. Events whose data lacks a
    string ``id`` or a parseable ``updated_at`` are skipped (a mirror would fail them).
    """
    state: dict[str, dict[str, dict[str, Any]]] = {bucket: {} for bucket in _BUCKETS.values()}
    versions: dict[_Key, datetime] = {}
    tombs: dict[_Key, datetime] = {}
    for event in events:
        target = _mirror_target(event, types)
        if target is None:
            continue
        kind, deleted, data, stamp = target
        key, objects = (kind, data["id"]), state[_BUCKETS[kind]]
        if key in tombs and tombs[key] >= stamp:
            continue
        if not deleted:
            if key not in versions or versions[key] <= stamp:
                objects[data["id"]], versions[key] = data, stamp
            continue
        if key in versions and versions[key] <= stamp:
            del objects[data["id"]], versions[key]
        tombs[key] = stamp
    return state


def _mirror_target(event: dict[str, Any],
                   types: set[str] | None) -> tuple[str, bool, dict[str, Any], datetime] | None:
    """(kind, is_delete, data, updated_at) for a mirrorable event, else None."""
    etype, data = event.get("event"), event.get("data")
    if not isinstance(etype, str) or (types is not None and etype not in types) or not isinstance(data, dict):
        return None
    kind, _, action = etype.rpartition(".")
    if kind not in _BUCKETS or action not in ("created", "updated", "deleted") or \
            not isinstance(data.get("id"), str) or not isinstance(data.get("updated_at"), str):
        return None
    try:
        stamp = parse_timestamp(data["updated_at"])
    except ValueError:
        return None
    return kind, action == "deleted", data, stamp

