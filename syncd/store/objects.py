"""The object an event is about (``syncd_events.object_id``), what the dashboard's search finds by index.

One id per event, chosen by a fixed rule over its payload, because "everything that happened to user_123" is the
question people ask (issue #22):

1. ``user_id`` — an event about a user's membership, session or the like is about that user (WorkOS);
2. ``customer`` — a Stripe invoice, charge or subscription is about its customer (an id, or an expanded
   customer object's ``id``);
3. ``number`` — a GitHub issue or pull request (its number, as text);
4. ``id`` — the object itself (a WorkOS user or organization, a Stripe customer, a table row with an ``id``);
5. the event id up to its ``@`` — a table row's key (SQL sources id an event ``<row key>@<version>``) or the
   whole event id when it has no ``@`` (a table keyed otherwise is id'd by its row key).

A value longer than the column (200 characters), empty, or not text or a whole number gives no id (None): the
event is then found by its event id only. The rule is pure and total: it never raises, whatever the payload.

``object_id`` is what ``ledger.ledger_row`` stores with each new event (one call per event, nothing else on the
insert path); migration 0012 fills it for events recorded before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.contracts import Event

#: The width of ``syncd_events.object_id``.
MAX_OBJECT_ID = 200
#: Payload keys tried in order (module docstring).
OBJECT_KEYS = ("user_id", "customer", "number", "id")


def object_id(event: Event) -> str | None:
    """The id of the object ``event`` is about (module docstring: the rule), or None."""
    return object_id_of(event.id, event.data)


def object_id_of(event_id: str, payload: Any) -> str | None:
    """``object_id`` from an event's id and stored payload (migration 0012 reads them from the ledger)."""
    # Called for every event recorded: the cheap checks first (a payload is a dict; most keys are absent).
    if type(payload) is dict or isinstance(payload, Mapping):
        for key in OBJECT_KEYS:
            value = payload.get(key)
            if value is None:
                continue
            if key == "customer" and isinstance(value, Mapping):
                value = value.get("id")
            found = _text(value)
            if found is not None:
                return found
    return _text(event_id.split("@", 1)[0])


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_OBJECT_ID:
        return value
    return None
