"""Setting a cursor by hand (``syncd cursor reset``): the one write on ``syncd_sources`` made outside a tick.

It is fenced like a takeover: refused while a live lease holds the cursor, and it bumps the fencing token,
so a tick that held an older lease can never commit over it. It also ends a pause and clears the last
error (the operator has acted), and notes the reset in the source's ``meta`` for ``syncd status``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.contracts import CursorSpec
from syncd.store.cursors import ensure_source
from syncd.store.tables import sources


class ResetOutcome(enum.StrEnum):
    DONE = "done"
    LEASED = "leased"


@dataclass(frozen=True, slots=True)
class ResetResult:
    outcome: ResetOutcome
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None


def reset_cursor(db: Engine, spec: CursorSpec, cursor: str, *, now: datetime, note: str) -> ResetResult:
    """Store ``cursor`` on ``spec``'s row (created if new) unless a live lease holds it; see the module doc."""
    with db.begin() as conn:
        ensure_source(conn, spec, now)
        row = conn.execute(sa.select(sources.c.meta, sources.c.lease_owner, sources.c.lease_expires_at)
                           .where(sources.c.key == spec.key)).one()
        meta: dict[str, Any] = {**(row.meta or {}), "cursor_reset": note}
        meta.pop("cursor_healed", None)
        free = sa.or_(sources.c.lease_owner.is_(None), sources.c.lease_expires_at.is_(None),
                      sources.c.lease_expires_at < now)
        result = conn.execute(
            sa.update(sources).where(sources.c.key == spec.key, free)
            .values(cursor=cursor, meta=meta, lease_token=sources.c.lease_token + 1, lease_owner=None,
                    lease_expires_at=None, paused_until=None, pause_reason=None, last_error=None,
                    last_error_at=None, updated_at=now))
        if result.rowcount == 1:
            return ResetResult(ResetOutcome.DONE)
    return ResetResult(ResetOutcome.LEASED, row.lease_owner, row.lease_expires_at)


__all__ = ["ResetOutcome", "ResetResult", "reset_cursor"]
