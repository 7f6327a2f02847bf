"""Provider packages. Each exposes a ``provider`` object (see ``syncd.protocols.Provider``) and trigger helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.protocols import Provider


def providers() -> list[Provider]:
    """Every bundled provider, in the order their sources are listed."""
    from connectors import workos

    found: list[Provider] = [workos.provider]
    try:
        from connectors import github
    except ImportError:  # pragma: no cover - while the GitHub connector is being written
        return found
    if hasattr(github, "provider"):
        found.append(github.provider)
    from connectors import sql

    found.append(sql.provider)
    return found
