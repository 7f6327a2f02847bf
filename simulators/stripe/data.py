"""Generated Stripe traffic: customers and their subscriptions through their lifecycles, plus other
event types (invoices, charges) a mirror ignores; and ``mirror_state``, what a newer-wins mirror holds."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Lifecycle", "mirror_state"]

_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
_STATUSES = ("active", "past_due", "trialing", "unpaid")


class Lifecycle:
    """Deterministic from its seed: ``next(created)`` gives one event's (type, object). Constant time per
    event (a history of a million events is generated in seconds)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._customers: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []  # live customer ids, for a uniform choice; removal swaps with the last
        self._where: dict[str, int] = {}
        self._subscriptions: dict[str, dict[str, Any]] = {}
        self._subs_of: dict[str, list[str]] = {}  # customer id → its subscriptions that have not ended
        self._serial = 0

    def _id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}_{self._serial:06d}{self.rng.getrandbits(32):08x}"

    def next(self, created: int) -> tuple[str, dict[str, Any]]:
        roll = self.rng.random()
        if not self._order or roll < 0.25:
            return self._new_customer(created)
        customer_id = self._order[self.rng.randrange(len(self._order))]
        if roll < 0.45:
            customer = {**self._customers[customer_id], "name": self.rng.choice(_NAMES),
                        "balance": self.rng.randrange(-500, 500)}
            self._customers[customer_id] = customer
            return "customer.updated", dict(customer)
        if roll < 0.52 and not self._subs_of.get(customer_id):
            self._forget(customer_id)
            return "customer.deleted", {"id": customer_id, "object": "customer", "deleted": True}
        if roll < 0.85:
            return self._subscription_event(customer_id, created)
        kind = "invoice.paid" if roll < 0.95 else "charge.succeeded"
        prefix = "in" if kind == "invoice.paid" else "ch"
        return kind, {"id": self._id(prefix), "object": kind.split(".")[0], "customer": customer_id,
                      "amount": self.rng.randrange(100, 10_000), "currency": "eur", "created": created}

    def _forget(self, customer_id: str) -> None:
        del self._customers[customer_id]
        self._subs_of.pop(customer_id, None)
        index, last = self._where.pop(customer_id), self._order.pop()
        if last != customer_id:
            self._order[index], self._where[last] = last, index

    def _new_customer(self, created: int) -> tuple[str, dict[str, Any]]:
        name = self.rng.choice(_NAMES)
        customer: dict[str, Any] = {"id": self._id("cus"), "object": "customer", "name": name,
                                    "email": f"{name.lower()}.{self._serial}@example.com", "balance": 0,
                                    "currency": "eur", "created": created, "metadata": {}, "livemode": False}
        self._customers[customer["id"]] = customer
        self._where[customer["id"]] = len(self._order)
        self._order.append(customer["id"])
        return "customer.created", dict(customer)

    def _subscription_event(self, customer_id: str, created: int) -> tuple[str, dict[str, Any]]:
        mine = self._subs_of.setdefault(customer_id, [])
        if not mine or self.rng.random() < 0.3:
            sub: dict[str, Any] = {"id": self._id("sub"), "object": "subscription", "customer": customer_id,
                                   "status": "active", "created": created,
                                   "current_period_end": created + 30 * 86_400,
                                   "cancel_at_period_end": False, "metadata": {}}
            self._subscriptions[sub["id"]] = sub
            mine.append(sub["id"])
            return "customer.subscription.created", dict(sub)
        sub_id = mine[self.rng.randrange(len(mine))]
        if self.rng.random() < 0.25:
            mine.remove(sub_id)
            gone = {**self._subscriptions.pop(sub_id), "status": "canceled", "ended_at": created}
            return "customer.subscription.deleted", gone
        sub = {**self._subscriptions[sub_id], "status": self.rng.choice(_STATUSES),
               "cancel_at_period_end": self.rng.random() < 0.2}
        self._subscriptions[sub_id] = sub
        return "customer.subscription.updated", dict(sub)


_KINDS = {"customer": "customers", "customer.subscription": "subscriptions"}


def mirror_state(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """What a mirror of customers and subscriptions holds after ``events`` (oldest first): the newest
    snapshot of every object, by kind (``customers``, ``subscriptions``). A deleted customer is gone; an
    ended subscription (``customer.subscription.deleted``) stays, with its final snapshot."""
    state: dict[str, dict[str, dict[str, Any]]] = {"customers": {}, "subscriptions": {}}
    for event in events:
        prefix, _, verb = str(event.get("type", "")).rpartition(".")
        kind = _KINDS.get(prefix)
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if kind is None or not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            continue
        if verb == "deleted" and kind == "customers":
            state[kind].pop(obj["id"], None)
        else:
            state[kind][obj["id"]] = dict(obj)
    return state
