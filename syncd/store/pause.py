"""An operator's pause of a cursor (the dashboard's Pause and Resume buttons).

A pause is the same ``paused_until`` the provider's rate limits set, so the engine skips the cursor's ticks
(``SkipReason.PAUSED``) on every replica and the health rule reports it; an operator's pause just lasts
until it is resumed (:data:`OPERATOR_PAUSE`) and says who paused it. Resuming clears any pause, the
provider's too: the next tick asks the provider again and honours its answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.store.tables import sources

#: How long "until resumed" lasts; far enough that nobody waits for it, near enough for every datetime type.
OPERATOR_PAUSE = timedelta(days=3650)
PAUSE_REASON = "paused by an operator from the dashboard (Resume there)"


def pause_source(db: Engine, key: str, now: datetime) -> bool:
    """Pause cursor ``key`` until resumed. False when there is no such cursor."""
    return _set(db, key, now, paused_until=now + OPERATOR_PAUSE, pause_reason=PAUSE_REASON)


def resume_source(db: Engine, key: str, now: datetime) -> bool:
    """Clear cursor ``key``'s pause. False when there is no such cursor."""
    return _set(db, key, now, paused_until=None, pause_reason=None)


def _set(db: Engine, key: str, now: datetime, **values: object) -> bool:
    with db.begin() as conn:
        done = conn.execute(sa.update(sources).where(sources.c.key == key).values(updated_at=now, **values))
    return bool(done.rowcount)
