"""Built-in mirror workflows: Stripe customers and subscriptions into ``stripe_customers`` and
``stripe_subscriptions``, newer event wins.

An event applies only if its ``created`` is not older than that of the event that wrote the stored row,
so replays, backfills and stale events never overwrite newer data. Stripe's ``created`` is whole seconds
and its ids carry no order: events of one second apply in the order syncd hands them on, which is
Stripe's own list order (the later one wins). ``customer.deleted`` deletes the row and leaves a tombstone,
so an older event cannot bring it back. ``customer.subscription.deleted`` is Stripe's "the subscription
ended": the subscription still exists (status ``canceled``), so its row is kept, updated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from connectors.stripe.tables import customers, subscriptions
from syncd.contracts import Event
from syncd.errors import EventError
from syncd.workflows import BatchContext, Context, Registry, Trigger
from syncd.workflows.mirror import apply_snapshot, apply_snapshots

VERSION = "1.0.0"
CUSTOMER_TYPES = frozenset({"customer.created", "customer.updated", "customer.deleted"})
SUBSCRIPTION_TYPES = frozenset(f"customer.subscription.{verb}" for verb in (
    "created", "updated", "deleted", "paused", "resumed", "pending_update_applied", "pending_update_expired"))


def _epoch(value: Any) -> datetime | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _identity(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    object_id = data.get("id")
    if not isinstance(object_id, str) or not object_id:
        raise EventError(f"{event.type} event {event.id} has no data.object.id")
    return {"id": object_id, "updated_at": event.occurred_at, "event_id": event.id,
            "created_at": _epoch(data.get("created")), "metadata": data.get("metadata"),
            "livemode": data.get("livemode")}


def customer_row(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    balance = data.get("balance")
    return {**_identity(data, event), "email": data.get("email"), "name": data.get("name"),
            "balance": balance if isinstance(balance, int) and not isinstance(balance, bool) else None,
            "currency": data.get("currency"), "delinquent": data.get("delinquent")}


def subscription_row(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    customer = data.get("customer")
    if isinstance(customer, dict):  # an expanded customer object
        customer = customer.get("id")
    return {**_identity(data, event), "customer": customer if isinstance(customer, str) else None,
            "status": data.get("status"), "cancel_at_period_end": data.get("cancel_at_period_end"),
            "current_period_end": _epoch(data.get("current_period_end")),
            "canceled_at": _epoch(data.get("canceled_at")), "ended_at": _epoch(data.get("ended_at"))}


Mirror = tuple[sa.Table, Callable[[Mapping[str, Any], Event], dict[str, Any]], frozenset[str]]
MIRRORS: dict[str, Mirror] = {
    "customers": (customers, customer_row, CUSTOMER_TYPES),
    "subscriptions": (subscriptions, subscription_row, SUBSCRIPTION_TYPES),
}


def _item(event: Event) -> tuple[sa.Table, dict[str, Any], bool]:
    table, to_row, _ = MIRRORS["customers" if event.type in CUSTOMER_TYPES else "subscriptions"]
    return table, to_row(event.data, event), event.type == "customer.deleted"


def mirror(event: Event, ctx: Context) -> None:
    table, row, deleted = _item(event)
    apply_snapshot(ctx.connection or ctx.db, table, row, kind=table.name, deleted=deleted)


def mirror_batch(events: Sequence[Event], ctx: BatchContext) -> None:
    """``mirror`` on a page's events at once (see ``syncd.workflows.mirror.apply_snapshots``)."""
    by_table: dict[sa.Table, list[tuple[dict[str, Any], bool]]] = {}
    for event in events:
        table, row, deleted = _item(event)
        by_table.setdefault(table, []).append((row, deleted))
    for table, items in by_table.items():
        apply_snapshots(ctx.connection, table, items, kind=table.name)


def register(registry: Registry) -> None:
    for name, (_, _, types) in MIRRORS.items():
        registry.workflow(f"stripe.mirror.{name}", on=Trigger(provider="stripe", types=types), version=VERSION,
                          builtin=True, batch=mirror_batch)(mirror)
