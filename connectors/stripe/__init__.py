"""Stripe: the Events API (``GET /v1/events``) as a source, triggers for workflows, and a mirror of customers
and subscriptions (``workflows``).

::

    from connectors import stripe

    @workflow(name="welcome", on=stripe.events("customer.created"), version="1")
    def welcome(event, ctx):
        ...   # event.id is the evt_… id, event.type the Stripe type, event.data the event's data.object,
              # stripe.api_version(event) the API version it was rendered with

Settings: ``STRIPE_API_KEY`` (enables the source ``stripe``; sent as a bearer token, never logged),
``STRIPE_BASE_URL`` (default ``https://api.stripe.com``), ``STRIPE_EVENTS`` (a comma list of at most 20
event types sent as ``types[]``; unset: the types syncd's workflows listen to when they are at most 20,
else every type).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from connectors.stripe.client import MAX_TYPES, StripeConnector
from syncd.contracts import Connector, Event
from syncd.errors import ConfigError
from syncd.settings import get_list, get_secret, get_url, http_timeout
from syncd.workflows import Registry, Trigger

NAME = "stripe"
DEFAULT_BASE_URL = "https://api.stripe.com"
_TYPE = re.compile(r"^[a-z0-9_]+(?:\.[a-z0-9_]+)+$")


def events(*types: str, where: Callable[[Event], bool] | None = None) -> Trigger:
    """Trigger on Stripe events of these types (none given: every type syncd requests)."""
    for t in types:
        if not isinstance(t, str) or not _TYPE.match(t):
            raise ValueError(f"not a Stripe event type: {t!r}")
    return Trigger(provider=NAME, types=frozenset(types) if types else None, where=where)


def api_version(event: Event) -> str | None:
    """The Stripe API version ``event`` was rendered with (kept in the ledger's ``action`` column)."""
    return event.action if event.provider == NAME else None


def event_types(environ: Mapping[str, str], registry: Registry) -> list[str] | None:
    """The types to send as ``types[]``: ``STRIPE_EVENTS`` (at most 20, ``ConfigError`` otherwise), else
    the workflows' types when there are 1..20 of them, else None (every type)."""
    requested = get_list(environ, "STRIPE_EVENTS")
    if requested:
        bad = [t for t in requested if not _TYPE.match(t)]
        if bad:
            raise ConfigError("STRIPE_EVENTS", f"not a Stripe event type: {bad[0][:80]!r}")
        chosen = sorted(set(requested))
        if len(chosen) > MAX_TYPES:
            raise ConfigError("STRIPE_EVENTS", f"lists {len(chosen)} event types; Stripe accepts at most "
                                               f"{MAX_TYPES} (leave it unset to fetch every type)")
        return chosen
    wanted = registry.event_types(NAME)
    if wanted is None or not wanted or len(wanted) > MAX_TYPES:
        return None
    return sorted(wanted)


class _Provider:
    name = NAME

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]:
        api_key = get_secret(environ, "STRIPE_API_KEY")
        if api_key is None:
            return []
        types = event_types(environ, registry)
        base_url = get_url(environ, "STRIPE_BASE_URL", DEFAULT_BASE_URL)
        return [StripeConnector(api_key=api_key, base_url=base_url, event_types=types,
                                timeout=http_timeout(environ))]

    def builtin_workflows(self, registry: Registry) -> None:
        from connectors.stripe import workflows

        workflows.register(registry)


provider = _Provider()

__all__ = ["DEFAULT_BASE_URL", "NAME", "StripeConnector", "api_version", "event_types", "events", "provider"]
