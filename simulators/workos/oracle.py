"""The oracle: what a newer-wins mirror holds after a stream, computed apart from syncd's own code."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from simulators.workos.data import MEMBERSHIP, ORG, USER
from simulators.workos.ids import parse_timestamp

__all__ = ["directory_mirror_state", "mirror_state"]

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



# ---- Directory Sync ---------------------------------------------------------------------------------

_DSYNC = {"dsync.activated": ("directories", False), "dsync.deleted": ("directories", True),
          "dsync.user.created": ("directory_users", False), "dsync.user.updated": ("directory_users", False),
          "dsync.user.deleted": ("directory_users", True), "dsync.group.created": ("directory_groups", False),
          "dsync.group.updated": ("directory_groups", False), "dsync.group.deleted": ("directory_groups", True),
          "dsync.group.user_added": ("directory_group_members", False),
          "dsync.group.user_removed": ("directory_group_members", True)}


class _Directory:
    """The replay of ``directory_mirror_state``: objects, their versions and tombstones, per bucket."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {bucket: {} for bucket, _ in _DSYNC.values()}
        self.versions: dict[_Key, datetime] = {}
        self.tombs: dict[_Key, datetime] = {}

    def dead(self, bucket: str, key: Any, stamp: datetime) -> bool:
        tomb = self.tombs.get((bucket, key)) if isinstance(key, str) else None
        return tomb is not None and tomb >= stamp

    def apply(self, bucket: str, key: str, data: dict[str, Any], stamp: datetime, deleted: bool) -> bool:
        """Newer wins; a delete leaves a tombstone. True when a delete went through (so it cascades)."""
        if self.dead(bucket, key, stamp):
            return False
        held = self.versions.get((bucket, key))
        if not deleted:
            if held is None or held <= stamp:
                self.objects[bucket][key], self.versions[(bucket, key)] = data, stamp
            return False
        if held is not None and held <= stamp:
            del self.objects[bucket][key], self.versions[(bucket, key)]
        self.tombs[(bucket, key)] = max(stamp, self.tombs.get((bucket, key), stamp))
        return True

    def cascade(self, field: str, value: str, stamp: datetime, buckets: tuple[str, ...]) -> None:
        """Drop the objects of ``buckets`` whose ``field`` is ``value`` and whose version is not newer."""
        for bucket in buckets:
            for key, data in list(self.objects[bucket].items()):
                if data.get(field) == value and self.versions[(bucket, key)] <= stamp:
                    del self.objects[bucket][key], self.versions[(bucket, key)]


def directory_mirror_state(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """What a newer-wins Directory Sync mirror holds after applying ``events`` in order.

    Buckets: ``directories``, ``directory_users``, ``directory_groups`` (id → the event's data, without
    ``previous_attributes``) and ``directory_group_members`` (``group|user`` → ``{group_id, user_id,
    directory_id, organization_id, added_at}``). Versions: an object's ``updated_at``; a delete's, the later
    of that and the event's ``created_at`` (``dsync.deleted`` carries the directory as it was before); a
    membership's, its event's ``created_at``. A deleted directory takes its users, groups and memberships
    with it, and a deleted user or group its memberships (not newer than the delete); an event about a
    directory, user or group whose tombstone is not older is dropped.
    """
    replay = _Directory()
    for event in events:
        target = _dsync_target(event)
        if target is None:
            continue
        bucket, deleted, data, stamp = target
        directory = data.get("directory_id")
        if bucket != "directories" and replay.dead("directories", directory, stamp):
            continue
        if bucket == "directory_group_members":
            user, group = data["user"], data["group"]
            if replay.dead("directory_users", user["id"], stamp) or replay.dead("directory_groups", group["id"], stamp):
                continue
            key = f"{group['id']}|{user['id']}"
            record = {"group_id": group["id"], "user_id": user["id"], "directory_id": directory,
                      "organization_id": group.get("organization_id"), "added_at": event["created_at"]}
            replay.apply(bucket, key, record, stamp, deleted)
            continue
        snapshot = {k: v for k, v in data.items() if k != "previous_attributes"}
        if not replay.apply(bucket, data["id"], snapshot, stamp, deleted):
            continue
        if bucket == "directories":
            replay.cascade("directory_id", data["id"], stamp,
                           ("directory_users", "directory_groups", "directory_group_members"))
        else:
            field = "user_id" if bucket == "directory_users" else "group_id"
            replay.cascade(field, data["id"], stamp, ("directory_group_members",))
    return replay.objects


def _dsync_target(event: dict[str, Any]) -> tuple[str, bool, dict[str, Any], datetime] | None:
    """(bucket, is_delete, data, version) of a Directory Sync event a mirror applies, else None."""
    etype, data = event.get("event"), event.get("data")
    if etype not in _DSYNC or not isinstance(data, dict):
        return None
    bucket, deleted = _DSYNC[str(etype)]
    try:
        occurred = parse_timestamp(event["created_at"])
        if bucket == "directory_group_members":
            ok = isinstance(data.get("user"), dict) and isinstance(data.get("group"), dict)
            return (bucket, deleted, data, occurred) if ok else None
        if not isinstance(data.get("id"), str):
            return None
        stamp = parse_timestamp(data["updated_at"]) if data.get("updated_at") else occurred
    except (KeyError, TypeError, ValueError):
        return None
    return bucket, deleted, data, max(stamp, occurred) if deleted else stamp
