"""Built-in mirror workflows: WorkOS users, organizations and memberships into ``workos_*`` tables (Directory
Sync's mirror is ``connectors.workos.dsync``).

created/updated → upsert, deleted → delete (with a tombstone); an event applies only if its object's
``updated_at`` is not older than the stored one, so replays and out-of-order events never lose data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from connectors.workos import dsync
from connectors.workos.tables import memberships, organizations, users
from syncd.contracts import Event
from syncd.errors import EventError
from syncd.timefmt import parse_time, parse_time_or_none
from syncd.workflows import BatchContext, Context, Registry, Trigger
from syncd.workflows.mirror import apply_snapshot, apply_snapshots

VERSION = "1.0.0"


def _common(data: Mapping[str, Any], event: Event) -> tuple[str, datetime | None, datetime]:
    """The id, created_at and updated_at (the version; the event's time if missing) of an object."""
    object_id = data.get("id")
    if not isinstance(object_id, str) or not object_id:
        raise EventError(f"{event.type} event {event.id} has no data.id")
    try:
        updated = parse_time(data["updated_at"]) if data.get("updated_at") else event.occurred_at
        created = parse_time_or_none(data.get("created_at"))
    except ValueError as exc:
        raise EventError(f"{event.type} event {event.id}: {exc}") from None
    return object_id, created, updated


# Each row is one dict literal: a mirror builds one per event of a catch-up.
def user_row(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    object_id, created, updated = _common(data, event)
    return {
        "id": object_id, "created_at": created, "updated_at": updated,
        "email": data.get("email"), "first_name": data.get("first_name"), "last_name": data.get("last_name"),
        "email_verified": data.get("email_verified"), "profile_picture_url": data.get("profile_picture_url"),
        "external_id": data.get("external_id"),
        "last_sign_in_at": parse_time_or_none(data.get("last_sign_in_at")),
        "metadata": data.get("metadata"),
    }


def organization_row(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    object_id, created, updated = _common(data, event)
    return {
        "id": object_id, "created_at": created, "updated_at": updated,
        "name": data.get("name"), "domains": data.get("domains"), "metadata": data.get("metadata"),
        "external_id": data.get("external_id"),
    }


def membership_row(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    object_id, created, updated = _common(data, event)
    role = data.get("role")
    return {
        "id": object_id, "created_at": created, "updated_at": updated,
        "user_id": data.get("user_id"), "organization_id": data.get("organization_id"),
        "status": data.get("status"), "role": role.get("slug") if isinstance(role, dict) else role,
        "custom_attributes": data.get("custom_attributes"), "directory_managed": data.get("directory_managed"),
    }


MIRRORS: dict[str, tuple[sa.Table, Callable[[Mapping[str, Any], Event], dict[str, Any]]]] = {
    "user": (users, user_row),
    "organization": (organizations, organization_row),
    "organization_membership": (memberships, membership_row),
}


def mirror(event: Event, ctx: Context) -> None:
    prefix, _, verb = event.type.rpartition(".")
    table, to_row = MIRRORS[prefix]
    apply_snapshot(ctx.connection or ctx.db, table, to_row(event.data, event), kind=table.name,
                   deleted=verb == "deleted")


def mirror_batch(events: Sequence[Event], ctx: BatchContext) -> None:
    """``mirror`` on a page's events at once (see ``syncd.workflows.mirror.apply_snapshots``)."""
    by_table: dict[sa.Table, list[tuple[dict[str, Any], bool]]] = {}
    for event in events:
        prefix, _, verb = event.type.rpartition(".")
        table, to_row = MIRRORS[prefix]
        by_table.setdefault(table, []).append((to_row(event.data, event), verb == "deleted"))
    for table, items in by_table.items():
        apply_snapshots(ctx.connection, table, items, kind=table.name)


def register(registry: Registry) -> None:
    """The mirrors of users, organizations and memberships, and of Directory Sync (``dsync``)."""
    for prefix, (table, _) in MIRRORS.items():
        types = frozenset(f"{prefix}.{verb}" for verb in ("created", "updated", "deleted"))
        registry.workflow(f"workos.mirror.{table.name.removeprefix('workos_')}",
                          on=Trigger(provider="workos", types=types), version=VERSION, builtin=True,
                          batch=mirror_batch)(mirror)
    dsync.register(registry)
