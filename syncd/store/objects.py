"""The objects an event is about: the ids the dashboard's search finds it by (issue #22).

Every id an event names is one (``object_ids``), because people search "everything that happened to X" for an X
of any kind: a user, an organization, a Stripe customer or invoice, a directory or group, an issue, a row:

- the payload's own ``id`` (a WorkOS user, organization or membership, a Stripe invoice, a table row) and
  ``number`` (a GitHub issue or pull request, as text);
- the objects it links: ``user_id``, ``organization_id``, ``customer``, ``directory_id``, ``group_id``, and the
  ``id`` inside an embedded ``customer``, ``user`` or ``group`` object (an expanded Stripe customer, a
  Directory Sync membership's user and group);
- a SQL source's row key: its event id ``<row key>@<version>`` up to the ``@`` (an event id without ``@`` is
  found by the search's event-id look-up already).

An id is text or a whole number (as text), not empty, at most 200 characters, without NUL; anything else is no
id. The rule is pure and total: it never raises, whatever the payload. Where the ids go and when
(``syncd.store.objindex``): not on the ingest path's hot statements, only as one backlog row per page.

``object_id_of`` is the rule before migration 0014 (one id per event, in ``syncd_events.object_id``), kept for
migration 0012, which fills that column, and 0014's downgrade.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.contracts import Event

#: The width of an object id (``syncd_event_objects.object_id``).
MAX_OBJECT_ID = 200
#: Payload keys whose value is an id (text or a whole number).
ID_KEYS = ("id", "user_id", "organization_id", "customer", "number", "directory_id", "group_id")
#: Payload keys whose value may be an embedded object with an ``id``.
EMBEDDED_KEYS = ("customer", "user", "group")
#: Before 0014: the payload keys tried in order, the first id found wins (``object_id_of``).
OBJECT_KEYS = ("user_id", "customer", "number", "id")


def object_ids(event: Event) -> list[str]:
    """The ids of the objects ``event`` is about (module docstring: the rule), each once."""
    return object_ids_of(event.id, event.data)


def object_ids_of(event_id: str, payload: Any) -> list[str]:
    """``object_ids`` from an event's id and stored payload (migration 0014 reads them from the ledger)."""
    found: list[str] = []
    # Called for every event recorded: the cheap checks first (a payload is a dict; most keys are absent).
    if type(payload) is dict or isinstance(payload, Mapping):
        get = payload.get
        for key in ID_KEYS:
            value = get(key)
            if value is not None:
                _add(found, value)
        for key in EMBEDDED_KEYS:
            value = get(key)
            if value is not None and isinstance(value, Mapping):
                _add(found, value.get("id"))
    if "@" in event_id:
        _add(found, event_id.split("@", 1)[0])
    return found


def _add(found: list[str], value: Any) -> None:
    if type(value) is not str:
        if type(value) is not int:  # a bool is an int but no id; a float, list or object neither
            return
        value = str(value)
    if 0 < len(value) <= MAX_OBJECT_ID and "\x00" not in value and value not in found:
        found.append(value)


def object_id_of(event_id: str, payload: Any) -> str | None:
    """Before migration 0014: the one object id of an event (``user_id`` > ``customer`` > ``number`` > ``id`` >
    the event id up to its ``@``), or None."""
    if isinstance(payload, Mapping):
        for key in OBJECT_KEYS:
            value = payload.get(key)
            if value is None:
                continue
            if key == "customer" and isinstance(value, Mapping):
                value = value.get("id")
            found = _old_text(value)
            if found is not None:
                return found
    return _old_text(event_id.split("@", 1)[0])


def _old_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_OBJECT_ID:
        return value
    return None
