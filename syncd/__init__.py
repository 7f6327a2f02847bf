"""syncd: poll provider events since a stored cursor into idempotent workflows in your own database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.contracts import Event, Page, Window
    from syncd.workflows import Context, Registry, Trigger, workflow

__all__ = ["Context", "Event", "Page", "Registry", "Trigger", "Window", "workflow"]
__version__ = "0.1.0"

_HOMES = {"Event": "syncd.contracts", "Page": "syncd.contracts", "Window": "syncd.contracts",
          "Context": "syncd.workflows", "Registry": "syncd.workflows", "Trigger": "syncd.workflows",
          "workflow": "syncd.workflows"}


def __getattr__(name: str) -> Any:
    # Imported on first use, so commands that need none of it (`syncd check`, every 30 s in a container)
    # do not pay for SQLAlchemy's ORM and the workflow machinery.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'syncd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
