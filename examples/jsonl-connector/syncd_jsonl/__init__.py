"""An example syncd connector package: each JSON Lines file in ``JSONL_FILES`` is a source.

Every line of the file is one event, appended in time order::

    {"id": "evt-1", "type": "login", "time": "2026-01-15T12:00:00Z", "data": {"user": "u1"}}

Configuration: ``JSONL_FILES=/var/log/audit.jsonl,exports/orders.jsonl`` gives the sources
``jsonl:audit`` and ``jsonl:orders`` (the files' stems); ``JSONL_PAGE_SIZE`` (default 500) is the most
lines one page holds. Workflows trigger on ``syncd_jsonl.events("login")``.

syncd finds this package through the entry point in its ``pyproject.toml``; nothing in syncd names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.contracts import Connector, Event
from syncd.errors import ConfigError
from syncd.workflows import Trigger
from syncd_jsonl.connector import JsonlConnector

if TYPE_CHECKING:
    from syncd.workflows import Registry

NAME = "jsonl"
DEFAULT_PAGE_SIZE = 500


def events(*types: str, where: Callable[[Event], bool] | None = None) -> Trigger:
    """Trigger on lines of these types (none given: every line) from any ``JSONL_FILES`` source."""
    return Trigger(provider=NAME, types=frozenset(types) if types else None, where=where)


class _Provider:
    """What syncd asks of a provider (``syncd.contracts.Provider``): a name, its sources, its built-ins."""

    name = NAME

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]:
        """One connector per file; [] when ``JSONL_FILES`` is unset (this provider is then off)."""
        paths = [Path(part.strip()) for part in environ.get("JSONL_FILES", "").split(",") if part.strip()]
        page_size = _page_size(environ.get("JSONL_PAGE_SIZE", ""))
        found: list[Connector] = []
        for path in paths:
            key = f"{NAME}:{path.stem}"
            if any(c.key == key for c in found):
                raise ConfigError("JSONL_FILES", f"two files are named {path.stem!r}; a source key must be unique")
            found.append(JsonlConnector(path, key=key, page_size=page_size))
        return found

    def builtin_workflows(self, registry: Registry) -> None:
        """No mirror tables: lines go to the user's own workflows only."""


def _page_size(text: str) -> int:
    if not text.strip():
        return DEFAULT_PAGE_SIZE
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000:
        raise ConfigError("JSONL_PAGE_SIZE", f"expected a whole number from 1 to 10000, got {text!r}")
    return value


provider = _Provider()

__all__ = ["NAME", "JsonlConnector", "events", "provider"]
