"""WorkOS: the Events API (``GET /events``) as a source, triggers for workflows, and mirror tables.

::

    from connectors import workos

    @workflow(name="welcome", on=workos.events("user.created"))
    def welcome(event, ctx): ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from connectors.workos.client import WorkOSConnector
from connectors.workos.types import KNOWN_TYPES, known_types
from syncd.contracts import Connector, Event
from syncd.errors import ConfigError
from syncd.settings import get_list, get_secret, get_url, http_timeout
from syncd.workflows import Registry, Trigger

NAME = "workos"
DEFAULT_BASE_URL = "https://api.workos.com"


def events(*types: str, where: Callable[[Event], bool] | None = None) -> Trigger:
    """Trigger on WorkOS events of these types (none given: every type syncd requests)."""
    for t in types:
        if not isinstance(t, str) or not t or "," in t:
            raise ValueError(f"not a WorkOS event type: {t!r}")
    return Trigger(provider=NAME, types=frozenset(types) if types else None, where=where)


class _Provider:
    name = NAME

    def known_types(self, environ: Mapping[str, str]) -> frozenset[str]:
        """The event types WorkOS sends (``connectors.workos.types``), checked at start-up."""
        return known_types(environ)

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]:
        api_key = get_secret(environ, "WORKOS_API_KEY")
        if api_key is None:
            return []
        base_url = get_url(environ, "WORKOS_BASE_URL", DEFAULT_BASE_URL)
        requested = get_list(environ, "WORKOS_EVENTS")
        if requested:
            types = sorted(set(requested))
        else:
            wanted = registry.event_types(NAME)
            if wanted is None:
                raise ConfigError("WORKOS_EVENTS", "a workflow listens to every WorkOS event type; "
                                  "list the types to request (the API requires them)")
            if not wanted:
                raise ConfigError("WORKOS_EVENTS", "no workflow listens to WorkOS events; set the types to request "
                                  "or enable the built-in mirror (SYNCD_BUILTINS)")
            types = sorted(wanted)
        timeout = http_timeout(environ)
        return [WorkOSConnector(api_key=api_key, base_url=base_url, event_types=types, timeout=timeout)]

    def builtin_workflows(self, registry: Registry) -> None:
        from connectors.workos import workflows

        workflows.register(registry)


provider = _Provider()

__all__ = ["DEFAULT_BASE_URL", "KNOWN_TYPES", "NAME", "WorkOSConnector", "events", "provider"]
