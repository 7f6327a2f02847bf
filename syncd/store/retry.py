"""Bringing a failed run's retry forward (the dashboard's Replay of a ``failed`` run; ``Store.retry_now``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.contracts import RunKey, RunStatus
from syncd.store.queue import notify
from syncd.store.tables import runs


def retry_now(conn: Connection, key: RunKey, now: datetime) -> bool:
    """Make run ``key`` due at ``now`` if it is ``failed`` (waiting for its retry); True if it was. Its attempts,
    error and claim token stay: the worker that claims it next runs its next attempt, fenced as any other. A run
    in any other status (running, dead, done) is left as it is. Wakes the workers when the caller commits."""
    changed = conn.execute(
        sa.update(runs).where(runs.c.workflow == key.workflow, runs.c.stream == key.stream,
                              runs.c.event_id == key.event_id, runs.c.status == RunStatus.FAILED.value)
        .values(next_attempt_at=now)).rowcount == 1
    if changed:
        notify(conn)
    return changed
