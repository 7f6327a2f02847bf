"""Provider packages. Each exposes a ``provider`` object (see ``syncd.contracts.Provider``) and trigger helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.contracts import Provider


def providers() -> list[Provider]:
    """Every bundled provider, in the order their sources are listed."""
    from connectors import github, sql, workos

    return [workos.provider, github.provider, sql.provider]
