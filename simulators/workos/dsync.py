"""Directory Sync in the simulated WorkOS stream: a seeded lifecycle of directories, their users and groups,
and group memberships, with the true state kept beside it (``DirectoryLifecycle.state``).

Event shapes follow WorkOS's Directory Sync events reference: ``dsync.activated`` / ``dsync.deleted`` carry
the directory (``dsync.deleted`` its state *before* deletion, so its ``updated_at`` is not the time of the
deletion: only the event's ``created_at`` says when); ``dsync.user.*`` a directory user, ``dsync.group.*``
a directory group; ``dsync.group.user_added`` / ``user_removed`` ``{"directory_id", "user", "group"}``.

As WorkOS documents, a deleted directory sends a sole ``dsync.deleted``: no ``dsync.user.deleted`` or
``dsync.group.deleted`` follows for what it held. Here a deleted user or group also leaves its memberships
silently (no ``user_removed``), so a mirror must drop them itself.
"""

from __future__ import annotations

import random
from typing import Any

from simulators.workos.ids import ulid

__all__ = ["BUCKETS", "DirectoryLifecycle"]

#: The buckets of ``DirectoryLifecycle.state`` (and of ``oracle.directory_mirror_state``).
BUCKETS = ("directories", "directory_users", "directory_groups", "directory_group_members")

_FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "José", "Zoë", "Chidi", "Mei", "Ravi")
_LAST = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Núñez", "Okafor", "Chen", "Patel", "Rossi")
_DEPARTMENTS = ("Engineering", "Sales", "Support", "Finance", "People")
_PROVIDERS = ("okta scim v2.0", "azure scim v2.0", "gsuite directory", "generic scim v2.0")
_GROUPS = ("Engineering", "Admins", "Sales", "On-call", "Contractors", "Everyone")
#: (cumulative weight, operation) within a live directory; an operation that cannot apply creates a user.
_OPS = ((0.22, "user.created"), (0.40, "user.updated"), (0.46, "user.deleted"), (0.54, "group.created"),
        (0.60, "group.updated"), (0.63, "group.deleted"), (0.85, "group.user_added"),
        (0.95, "group.user_removed"), (0.97, "activated"), (0.98, "deleted"), (1.0, "user.created"))


def member_key(group_id: str, user_id: str) -> str:
    """The key of a membership: ``group|user`` (WorkOS gives memberships no id of their own)."""
    return f"{group_id}|{user_id}"


class DirectoryLifecycle:
    """Deterministic Directory Sync events; ``next(ms, stamp)`` returns the ``(type, data)`` at ``ms``.

    ``state()`` is the truth after every event returned so far: what WorkOS itself holds.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed ^ 0xD5_1C)
        self.directories: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, dict[str, Any]] = {}  # member_key -> {group_id, user_id, directory_id, added_at}
        self._serial = 0

    def state(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The live objects by bucket (``BUCKETS``), id → latest snapshot (memberships: their record)."""
        return {"directories": dict(self.directories), "directory_users": dict(self.users),
                "directory_groups": dict(self.groups), "directory_group_members": dict(self.members)}

    def next(self, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        self._serial += 1
        if not self.directories:
            return self._activate(ms, stamp)
        directory = self._pick(sorted(self.directories))
        draw = self.rng.random()
        op = next(name for edge, name in _OPS if draw < edge)
        users = sorted(u for u, snap in self.users.items() if snap["directory_id"] == directory)
        groups = sorted(g for g, snap in self.groups.items() if snap["directory_id"] == directory)
        if op == "activated":
            return self._activate(ms, stamp)
        if op == "deleted" and len(self.directories) > 1:
            return self._delete_directory(directory)
        if op in ("user.updated", "user.deleted") and users:
            return self._change_user(self._pick(users), stamp, deleted=op == "user.deleted")
        if op == "group.created" or (op.startswith("group.") and not groups):
            return self._create_group(directory, ms, stamp)
        if op in ("group.updated", "group.deleted"):
            return self._change_group(self._pick(groups), stamp, deleted=op == "group.deleted")
        if op == "group.user_added" and users:
            group_id, user_id = self._pick(groups), self._pick(users)
            if member_key(group_id, user_id) not in self.members:
                return self._add_member(group_id, user_id, stamp)
        if op == "group.user_removed":
            inside = sorted(k for k, m in self.members.items() if m["directory_id"] == directory)
            if inside:
                return self._remove_member(self._pick(inside))
        return self._create_user(directory, ms, stamp)

    def _pick(self, options: list[str]) -> str:
        return options[int(self.rng.random() * len(options))]

    def _new_id(self, prefix: str, ms: int) -> str:
        return prefix + ulid(ms, self.rng.getrandbits(80))

    def _activate(self, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        directory_id, org = self._new_id("directory_", ms), self._new_id("org_", ms)
        name = f"{self._pick(list(_GROUPS))} Corp {self._serial}"
        domain = f"corp-{self._serial}.example.com"
        self.directories[directory_id] = {
            "object": "directory", "id": directory_id, "organization_id": org, "name": name,
            "type": self._pick(list(_PROVIDERS)), "state": "active", "external_key": f"key{self.rng.getrandbits(40)}",
            "domains": [{"object": "organization_domain", "id": self._new_id("org_domain_", ms), "domain": domain}],
            "created_at": stamp, "updated_at": stamp}
        return "dsync.activated", dict(self.directories[directory_id])

    def _delete_directory(self, directory_id: str) -> tuple[str, dict[str, Any]]:
        snap = self.directories.pop(directory_id)
        for bucket in (self.users, self.groups, self.members):
            for key in [k for k, v in bucket.items() if v["directory_id"] == directory_id]:
                del bucket[key]
        data = {key: snap[key] for key in ("object", "id", "organization_id", "type", "name", "created_at",
                                           "updated_at")}
        return "dsync.deleted", {**data, "state": "deleting"}  # the state before deletion, as WorkOS sends

    def _create_user(self, directory_id: str, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        first, last = self._pick(list(_FIRST)), self._pick(list(_LAST))
        email = f"{first.lower()}.{self._serial}@corp.example.com".replace("é", "e").replace("ë", "e")
        user_id = self._new_id("directory_user_", ms)
        self.users[user_id] = {
            "object": "directory_user", "id": user_id, "directory_id": directory_id,
            "organization_id": self.directories[directory_id]["organization_id"],
            "idp_id": str(self.rng.getrandbits(32)), "first_name": first, "last_name": last, "email": email,
            "emails": [{"primary": True, "type": "work", "value": email}], "username": email, "state": "active",
            "role": {"slug": "member"}, "custom_attributes": {"department": self._pick(list(_DEPARTMENTS))},
            "raw_attributes": {}, "created_at": stamp, "updated_at": stamp}
        return "dsync.user.created", dict(self.users[user_id])

    def _change_user(self, user_id: str, stamp: str, *, deleted: bool) -> tuple[str, dict[str, Any]]:
        if deleted:
            snap = {**self.users.pop(user_id), "state": "inactive", "updated_at": stamp}
            self._drop_members(lambda m: m["user_id"] == user_id)
            return "dsync.user.deleted", snap
        which = int(self.rng.random() * 3)
        change: dict[str, Any] = ({"last_name": self._pick(list(_LAST))} if which == 0 else
                                  {"custom_attributes": {"department": self._pick(list(_DEPARTMENTS))}} if which == 1
                                  else {"state": self._pick(["active", "suspended"]),
                                        "role": {"slug": self._pick(["member", "admin"])}})
        previous = {key: self.users[user_id][key] for key in change}
        self.users[user_id] = {**self.users[user_id], **change, "updated_at": stamp}
        return "dsync.user.updated", {**self.users[user_id], "previous_attributes": previous}

    def _create_group(self, directory_id: str, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        group_id = self._new_id("directory_group_", ms)
        self.groups[group_id] = {
            "object": "directory_group", "id": group_id, "idp_id": f"{self.rng.getrandbits(48):x}",
            "directory_id": directory_id, "organization_id": self.directories[directory_id]["organization_id"],
            "name": f"{self._pick(list(_GROUPS))} {self._serial}", "raw_attributes": {},
            "created_at": stamp, "updated_at": stamp}
        return "dsync.group.created", dict(self.groups[group_id])

    def _change_group(self, group_id: str, stamp: str, *, deleted: bool) -> tuple[str, dict[str, Any]]:
        if deleted:
            snap = {**self.groups.pop(group_id), "updated_at": stamp}
            self._drop_members(lambda m: m["group_id"] == group_id)
            return "dsync.group.deleted", snap
        name = f"{self.groups[group_id]['name'].split(' (')[0]} ({self._serial})"
        self.groups[group_id] = {**self.groups[group_id], "name": name, "updated_at": stamp}
        return "dsync.group.updated", dict(self.groups[group_id])

    def _add_member(self, group_id: str, user_id: str, stamp: str) -> tuple[str, dict[str, Any]]:
        group = self.groups[group_id]
        self.members[member_key(group_id, user_id)] = {
            "group_id": group_id, "user_id": user_id, "directory_id": group["directory_id"],
            "organization_id": group["organization_id"], "added_at": stamp}
        return "dsync.group.user_added", {"directory_id": group["directory_id"], "user": dict(self.users[user_id]),
                                          "group": dict(group)}

    def _remove_member(self, key: str) -> tuple[str, dict[str, Any]]:
        member = self.members.pop(key)
        return "dsync.group.user_removed", {"directory_id": member["directory_id"],
                                            "user": dict(self.users[member["user_id"]]),
                                            "group": dict(self.groups[member["group_id"]])}

    def _drop_members(self, which: Any) -> None:
        for key in [k for k, m in self.members.items() if which(m)]:
            del self.members[key]
