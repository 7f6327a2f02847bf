"""The built-in Directory Sync mirror: ``dsync.*`` events into ``workos_directories``,
``workos_directory_users``, ``workos_directory_groups`` and ``workos_directory_group_members``.

The rules of the other WorkOS mirror (``syncd.workflows.mirror.apply_snapshot``): an event applies only if
its object's version is not older than the stored one, and a delete leaves a tombstone that stops older
events from bringing the object back. Directory Sync adds what its events leave out:

- **Versions.** An object's version is its ``updated_at``. A delete's is the later of that and the event's
  time: ``dsync.deleted`` carries the directory as it was *before* deletion, so only the event says when.
  A membership (``dsync.group.user_added`` / ``user_removed``) has no time of its own; its version is its
  event's time, and its key ``<group id>|<user id>``.
- **Cascades.** WorkOS sends a sole ``dsync.deleted`` for a deleted directory: its users, groups and
  memberships go with it here. A deleted user or group takes its memberships. Only rows not newer than
  the delete go, as for the object itself.
- **Guards.** An event about a directory, user or group whose tombstone is not older than the event is
  dropped (a stale ``dsync.user.updated`` after ``dsync.deleted``, a ``user_added`` after the user's
  deletion), so replays and out-of-order events leave the same tables as the events in order.

A page's events are applied in order inside the page transaction (``batch``), a few statements each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connectors.workos.tables import directories, directory_group_members, directory_groups, directory_users
from syncd.contracts import Event
from syncd.errors import EventError
from syncd.store import mirrors
from syncd.timefmt import parse_time, parse_time_or_none
from syncd.workflows import BatchContext, Context, Registry, Trigger
from syncd.workflows.mirror import apply_snapshot

VERSION = "1.0.0"

#: event type → (table, is a delete)
TARGETS: dict[str, tuple[sa.Table, bool]] = {
    "dsync.activated": (directories, False), "dsync.deleted": (directories, True),
    "dsync.user.created": (directory_users, False), "dsync.user.updated": (directory_users, False),
    "dsync.user.deleted": (directory_users, True),
    "dsync.group.created": (directory_groups, False), "dsync.group.updated": (directory_groups, False),
    "dsync.group.deleted": (directory_groups, True),
    "dsync.group.user_added": (directory_group_members, False),
    "dsync.group.user_removed": (directory_group_members, True),
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _versions(data: Mapping[str, Any], event: Event, deleted: bool) -> tuple[str, datetime | None, datetime]:
    """The id, created_at and version of an object (see the module docstring)."""
    object_id = _text(data.get("id"))
    if object_id is None:
        raise EventError(f"{event.type} event {event.id} has no data.id")
    try:
        updated = parse_time(data["updated_at"]) if data.get("updated_at") else event.occurred_at
        created = parse_time_or_none(data.get("created_at"))
    except (ValueError, OverflowError) as exc:
        raise EventError(f"{event.type} event {event.id}: {exc}") from None
    return object_id, created, max(updated, event.occurred_at) if deleted else updated


def directory_row(data: Mapping[str, Any], event: Event, deleted: bool) -> dict[str, Any]:
    object_id, created, version = _versions(data, event, deleted)
    domains = data.get("domains")
    if domains is None and data.get("domain"):  # the Directory object has one domain, the event a list
        domains = [{"domain": data.get("domain")}]
    return {"id": object_id, "organization_id": _text(data.get("organization_id")), "name": data.get("name"),
            "type": data.get("type"), "state": data.get("state"), "domains": domains,
            "created_at": created, "updated_at": version}


def primary_email(data: Mapping[str, Any]) -> str | None:
    """``email`` (current payloads), else the primary (or first) of ``emails`` (older ones)."""
    if _text(data.get("email")):
        return str(data["email"])
    emails = [e for e in data.get("emails") or () if isinstance(e, dict) and _text(e.get("value"))]
    chosen = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    return str(chosen["value"]) if chosen else None


def user_row(data: Mapping[str, Any], event: Event, deleted: bool) -> dict[str, Any]:
    object_id, created, version = _versions(data, event, deleted)
    role = data.get("role")
    return {"id": object_id, "directory_id": _text(data.get("directory_id")),
            "organization_id": _text(data.get("organization_id")), "idp_id": data.get("idp_id"),
            "email": primary_email(data), "first_name": data.get("first_name"), "last_name": data.get("last_name"),
            "username": data.get("username"), "state": data.get("state"),
            "role": role.get("slug") if isinstance(role, dict) else role,
            "custom_attributes": data.get("custom_attributes"), "created_at": created, "updated_at": version}


def group_row(data: Mapping[str, Any], event: Event, deleted: bool) -> dict[str, Any]:
    object_id, created, version = _versions(data, event, deleted)
    return {"id": object_id, "directory_id": _text(data.get("directory_id")),
            "organization_id": _text(data.get("organization_id")), "idp_id": data.get("idp_id"),
            "name": data.get("name"), "created_at": created, "updated_at": version}


def member_row(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    user, group = data.get("user"), data.get("group")
    user_id = _text(user.get("id")) if isinstance(user, dict) else None
    group_id = _text(group.get("id")) if isinstance(group, dict) else None
    if user_id is None or group_id is None:
        raise EventError(f"{event.type} event {event.id} has no data.user.id or data.group.id")
    assert isinstance(group, dict)  # for mypy: group_id came from it
    return {"id": f"{group_id}|{user_id}", "group_id": group_id, "user_id": user_id,
            "directory_id": _text(data.get("directory_id")) or _text(group.get("directory_id")),
            "organization_id": _text(group.get("organization_id")), "updated_at": event.occurred_at}


def _dead(conn: Connection, table: sa.Table, object_id: str | None, stamp: datetime) -> bool:
    """Whether ``object_id`` of ``table`` was deleted at or after ``stamp``."""
    if object_id is None:
        return False
    tomb = mirrors.stored_tombstone(conn, table.name, object_id)
    return tomb is not None and tomb >= stamp


def _cascade(conn: Connection, tables: Sequence[sa.Table], column: str, value: str, stamp: datetime) -> None:
    """Delete the rows of ``tables`` whose ``column`` is ``value`` and whose version is not newer."""
    for table in tables:
        conn.execute(sa.delete(table).where(table.c[column] == value, table.c.updated_at <= stamp))


def apply_event(conn: Connection, event: Event) -> bool:
    """Apply one ``dsync.*`` event by the rules of the module docstring. True if it applied."""
    table, deleted = TARGETS[event.type]
    if table is directory_group_members:
        row = member_row(event.data, event)
        guards = ((directories, row["directory_id"]), (directory_users, row["user_id"]),
                  (directory_groups, row["group_id"]))
        if any(_dead(conn, guard, object_id, row["updated_at"]) for guard, object_id in guards):
            return False
        return apply_snapshot(conn, table, row, kind=table.name, deleted=deleted)
    builder = directory_row if table is directories else user_row if table is directory_users else group_row
    row = builder(event.data, event, deleted)
    if table is not directories and _dead(conn, directories, row["directory_id"], row["updated_at"]):
        return False
    if not apply_snapshot(conn, table, row, kind=table.name, deleted=deleted):
        return False
    if deleted and table is directories:
        _cascade(conn, (directory_group_members, directory_users, directory_groups), "directory_id", row["id"],
                 row["updated_at"])
    elif deleted:
        column = "user_id" if table is directory_users else "group_id"
        _cascade(conn, (directory_group_members,), column, row["id"], row["updated_at"])
    return True


def mirror(event: Event, ctx: Context) -> None:
    apply_event(ctx.connection or ctx.db.connection(), event)


def mirror_batch(events: Sequence[Event], ctx: BatchContext) -> None:
    """``mirror`` on a page's events, in order, in the page transaction."""
    for event in events:
        apply_event(ctx.connection, event)


def register(registry: Registry) -> None:
    registry.workflow("workos.mirror.directory_sync", on=Trigger(provider="workos", types=frozenset(TARGETS)),
                      version=VERSION, builtin=True, batch=mirror_batch)(mirror)


__all__ = ["TARGETS", "VERSION", "apply_event", "mirror", "mirror_batch", "primary_email", "register"]
