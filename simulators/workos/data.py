"""Lifecycle generation of the simulated WorkOS stream.

Organizations, users and organization memberships are created, updated 0..k times and sometimes
deleted (memberships before their user or organization), plus a small share of other event types.
Everything is drawn from one seeded RNG, so a seed alone determines every event.
"""

from __future__ import annotations

import bisect
import random
from collections import defaultdict, deque
from typing import Any

from simulators.workos.ids import ulid

__all__ = ["MEMBERSHIP", "ORG", "USER", "Lifecycle"]

_FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "José", "Zoë", "Chidi", "Mei", "Ravi",
          "Sofia", "Hiro", "Amara", "Lukas", "Nia", "Omar", "Priya", "Tomás", "Yuki", "Elena")
_LAST = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Núñez", "Okafor", "Chen", "Patel",
         "Rossi", "Tanaka", "Mensah", "Müller", "Diallo", "Haddad", "Iyer", "García", "Sato", "Petrova",
         "Kim")
_WORDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell",
          "Cyberdyne")
_SUFFIX = ("Labs", "Inc", "Group", "Systems", "Partners", "Health", "Bank", "Studio")
_AGENTS = ("Mozilla/5.0 (Macintosh)", "Mozilla/5.0 (Windows NT 10.0)", "curl/8.5.0")
_TIERS = ("free", "pro", "enterprise")
_PLANS = ("free", "pro")
_ROLES = ("member", "admin", "owner")
# Types no built-in mirror reads (Directory Sync has its own lifecycle: ``dsync``, off unless asked for).
_OTHER_TYPES = ("session.created", "role.created", "authentication.email_verification_succeeded",
                "connection.activated", "connection.deactivated")
USER, ORG, MEMBERSHIP = "user", "organization", "organization_membership"
_PREFIX = {USER: "user_", ORG: "org_", MEMBERSHIP: "om_"}


_ASCII = str.maketrans("éëáúñüíó", "eeaunuio")


def _ascii(text: str) -> str:
    return text.lower().translate(_ASCII)


class _Pool:
    """Live object ids with O(1) add, remove and uniform choice."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: str) -> None:
        self._where[item] = len(self._items)
        self._items.append(item)

    def remove(self, item: str) -> None:
        slot = self._where.pop(item)
        last = self._items.pop()
        if last != item:
            self._items[slot] = last
            self._where[last] = slot

    def pick(self, uniform: float) -> str:
        return self._items[int(uniform * len(self._items))]


_EDGES = (0.05, 0.09, 0.25, 0.40, 0.46, 0.76, 0.90, 0.95, 0.985)
_ACTIONS = (("other", ""), ("create", ORG), ("create", USER), ("create", MEMBERSHIP), ("update", ORG),
            ("update", USER), ("update", MEMBERSHIP), ("delete", MEMBERSHIP), ("delete", USER),
            ("delete", ORG))


class Lifecycle:
    """Deterministic source of lifecycle events; ``next(ms, stamp)`` returns the ``(type, data)`` at ``ms``.

    Deletions are planned as a cascade (memberships first, then the user or organization) and emitted one
    per call, so a generation cut at any length is still consistent; the rest follows on the next call.
    Choices use ``random()`` and indexing rather than ``Random.choice``: it is several times faster.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._random = self.rng.random
        self._pools = {kind: _Pool() for kind in _PREFIX}
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._members: defaultdict[str, set[str]] = defaultdict(set)  # user or org id -> membership ids
        self._pairs: set[tuple[str, str]] = set()
        self._pending: deque[tuple[str, str]] = deque()
        self._serial = 0

    def _pick(self, options: tuple[Any, ...]) -> Any:
        return options[int(self._random() * len(options))]

    def next(self, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        """The next event at time ``ms``; ``stamp`` is that time as written into snapshots."""
        if self._pending:
            return self._emit_delete(*self._pending.popleft(), stamp)
        verb, kind = _ACTIONS[bisect.bisect_right(_EDGES, self._random())]
        if verb == "other":
            return self._other(ms, stamp)
        pool = self._pools[kind]
        if verb == "update" and pool:
            return self._update(kind, pool.pick(self._random()), stamp)
        if verb == "delete" and pool:
            self._plan_delete(kind, pool.pick(self._random()))
            return self._emit_delete(*self._pending.popleft(), stamp)
        return self._create(kind, ms, stamp)

    def _new_id(self, prefix: str, ms: int) -> str:
        return prefix + ulid(ms, self.rng.getrandbits(80))

    def _create(self, kind: str, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        users, orgs = self._pools[USER], self._pools[ORG]
        if kind == MEMBERSHIP and not (users and orgs):
            kind = ORG if not orgs else USER
        self._serial += 1
        if kind == MEMBERSHIP:
            user_id, org_id = users.pick(self._random()), orgs.pick(self._random())
            if (user_id, org_id) in self._pairs:
                return self._update(USER, user_id, stamp)
            data = self._membership(self._new_id("om_", ms), user_id, org_id, stamp)
            self._pairs.add((user_id, org_id))
            self._members[user_id].add(data["id"])
            self._members[org_id].add(data["id"])
        elif kind == USER:
            data = self._user(self._new_id("user_", ms), stamp)
        else:
            data = self._organization(self._new_id("org_", ms), stamp)
        self._pools[kind].add(data["id"])
        self._snapshots[data["id"]] = data
        return f"{kind}.created", data

    def _user(self, user_id: str, stamp: str) -> dict[str, Any]:
        rand, serial = self._random, self._serial
        first, last = self._pick(_FIRST), self._pick(_LAST)
        return {"object": "user", "id": user_id,
                "email": f"{_ascii(first)}.{_ascii(last)}.{serial}@example-{int(rand() * 50)}.com",
                "first_name": first, "last_name": last, "email_verified": rand() < 0.7,
                "profile_picture_url": None if rand() < 0.5 else f"https://avatars.example.com/{serial}.png",
                "external_id": None if rand() < 0.6 else f"ext_{serial}",
                "last_sign_in_at": None, "metadata": {}, "created_at": stamp, "updated_at": stamp}

    def _organization(self, org_id: str, stamp: str) -> dict[str, Any]:
        name = f"{self._pick(_WORDS)} {self._pick(_SUFFIX)} {self._serial}"
        domain = {"object": "organization_domain", "id": f"org_domain_{org_id[4:]}",
                  "domain": f"{_ascii(name).replace(' ', '-')}.com", "state": "verified",
                  "verification_strategy": "dns"}
        return {"object": "organization", "id": org_id, "name": name, "domains": [domain],
                "metadata": {"tier": self._pick(_TIERS)},
                "external_id": None if self._random() < 0.5 else f"ext_org_{self._serial}",
                "created_at": stamp, "updated_at": stamp}

    def _membership(self, om_id: str, user_id: str, org_id: str, stamp: str) -> dict[str, Any]:
        rand = self._random
        return {"object": "organization_membership", "id": om_id, "user_id": user_id,
                "organization_id": org_id, "status": "active" if rand() < 0.85 else "pending",
                "role": {"slug": "member" if rand() < 0.8 else "admin"}, "custom_attributes": {},
                "directory_managed": rand() < 0.2, "created_at": stamp, "updated_at": stamp}

    def _update(self, kind: str, object_id: str, stamp: str) -> tuple[str, dict[str, Any]]:
        self._serial += 1
        data = {**self._snapshots[object_id], **self._change(kind, object_id, stamp), "updated_at": stamp}
        self._snapshots[object_id] = data
        return f"{kind}.updated", data

    def _change(self, kind: str, object_id: str, stamp: str) -> dict[str, Any]:
        """One field change, chosen first so only that value is built (and only its draws are made)."""
        which = int(self._random() * (5 if kind == USER else 2 if kind == ORG else 3))
        if kind == USER:
            if which == 0:
                return {"first_name": self._pick(_FIRST)}
            if which == 1:
                return {"last_name": self._pick(_LAST)}
            if which == 2:
                return {"email_verified": True}
            if which == 3:
                return {"last_sign_in_at": stamp}
            return {"metadata": {"plan": self._pick(_PLANS), "rev": self._serial}}
        if kind == ORG:
            if which == 0:
                return {"name": f"{self._snapshots[object_id]['name'].split(' (')[0]} ({self._serial})"}
            return {"metadata": {"tier": self._pick(_TIERS)}}
        if which == 0:
            return {"role": {"slug": self._pick(_ROLES)}}
        if which == 1:
            return {"status": self._pick(("active", "inactive"))}
        return {"custom_attributes": {"team": self._pick(_WORDS).lower()}}

    def _plan_delete(self, kind: str, object_id: str) -> None:
        """Take the object (and its memberships first) out of play and queue their deletion events."""
        if kind != MEMBERSHIP:
            for om_id in sorted(self._members.pop(object_id, ())):
                self._plan_delete(MEMBERSHIP, om_id)
        else:
            snap = self._snapshots[object_id]
            self._pairs.discard((snap["user_id"], snap["organization_id"]))
            self._members[snap["user_id"]].discard(object_id)
            self._members[snap["organization_id"]].discard(object_id)
        self._pools[kind].remove(object_id)
        self._pending.append((kind, object_id))

    def _emit_delete(self, kind: str, object_id: str, stamp: str) -> tuple[str, dict[str, Any]]:
        data = {**self._snapshots.pop(object_id), "updated_at": stamp}
        return f"{kind}.deleted", data

    def _other(self, ms: int, stamp: str) -> tuple[str, dict[str, Any]]:
        etype = self._pick(_OTHER_TYPES)
        users, orgs = self._pools[USER], self._pools[ORG]
        user = users.pick(self._random()) if users else None
        org = orgs.pick(self._random()) if orgs else None
        ip, agent = f"198.51.100.{1 + int(self._random() * 254)}", self._pick(_AGENTS)
        if etype == "session.created":
            return etype, {"object": "session", "id": self._new_id("session_", ms), "user_id": user,
                           "organization_id": org, "ip_address": ip, "user_agent": agent,
                           "created_at": stamp, "updated_at": stamp}
        if etype == "authentication.email_verification_succeeded":
            return etype, {"type": "email_verification", "status": "succeeded", "user_id": user,
                           "email": None if user is None else self._snapshots[user]["email"],
                           "ip_address": ip, "user_agent": agent}
        if etype == "connection.activated":
            return etype, {"object": "connection", "id": self._new_id("conn_", ms), "organization_id": org,
                           "connection_type": "OktaSAML", "name": "Okta", "state": "active",
                           "created_at": stamp, "updated_at": stamp}
        # The same draws as the Directory Sync events these two types replaced, so every seed's stream
        # stays as it was apart from them.
        if etype == "role.created":
            role_id = self._new_id("role_", ms)
            slug = f"role-{self.rng.getrandbits(32):x}"
            return etype, {"object": "role", "id": role_id, "slug": slug, "name": slug.title(), "permissions": [],
                           "type": "EnvironmentRole", "created_at": stamp, "updated_at": stamp}
        conn_id = self._new_id("conn_", ms)
        return etype, {"object": "connection", "id": conn_id, "organization_id": org,
                       "connection_type": "OktaSAML", "name": f"Okta {self.rng.getrandbits(32) % 1000}",
                       "state": "inactive", "created_at": stamp, "updated_at": stamp}

