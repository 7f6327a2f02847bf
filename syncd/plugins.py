"""Connector discovery: the ``syncd.connectors`` entry-point group.

Every connector, the built-in ones included, registers a ``Provider`` (``syncd.contracts``) in that group
of its distribution's metadata::

    [project.entry-points."syncd.connectors"]
    acme = "acme_syncd:provider"

``load_providers()`` imports each entry and checks that it is a provider, so the core never imports a
connector by name. A plugin that fails to import, or is not a provider, stops start-up with a one-line
``ConfigError`` naming the entry point (exit status 2).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import cast

from syncd.contracts import Provider
from syncd.errors import ConfigError

GROUP = "syncd.connectors"

#: The order the built-in providers' sources have always been listed (and ticked) in; other plugins
#: follow, by entry-point name. Names only: nothing here imports a connector.
_FIRST = ("workos", "github", "sql", "stripe")


def _order(entry: EntryPoint) -> tuple[int, str]:
    return (_FIRST.index(entry.name) if entry.name in _FIRST else len(_FIRST), entry.name)


def load_providers(group: str = GROUP) -> list[Provider]:
    """Every provider registered in ``group``, built-ins first (WorkOS, GitHub, SQL, Stripe), then by name.

    Raises ``ConfigError`` when an entry point fails to import, is not a provider, or when two
    distributions register the same name.
    """
    found = sorted(entry_points(group=group), key=_order)
    providers: list[Provider] = []
    seen: dict[str, str] = {}
    for entry in found:
        if entry.name in seen:
            raise ConfigError(group, f"entry point {entry.name!r} is registered twice ({seen[entry.name]} and "
                              f"{entry.value}); uninstall one of the two packages")
        seen[entry.name] = entry.value
        providers.append(load_provider(entry))
    return providers


def load_provider(entry: EntryPoint) -> Provider:
    """Import one entry point and check that it is a provider; ``ConfigError`` naming it otherwise."""
    where = f"entry point {entry.name!r} ({entry.value})"
    try:
        loaded = entry.load()
    except Exception as exc:  # any import-time failure of a plugin is a configuration problem
        raise ConfigError(entry.group, f"{where} failed to import: {_first_line(exc)}") from None
    problem = _not_a_provider(loaded)
    if problem is not None:
        raise ConfigError(entry.group, f"{where} is not a syncd provider: {problem}")
    return cast(Provider, loaded)  # checked above, member by member


def _not_a_provider(candidate: object) -> str | None:
    """What ``candidate`` lacks of the ``Provider`` protocol, or None."""
    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not name:
        return f"{type(candidate).__name__} has no 'name' string"
    for method in ("sources", "builtin_workflows"):
        if not callable(getattr(candidate, method, None)):
            return f"{type(candidate).__name__} has no {method}() method"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["GROUP", "load_provider", "load_providers"]
