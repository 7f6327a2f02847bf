"""Spans lost by each replica (``syncd_span_losses``), so that ``syncd status`` — another process — can say
how many: one row per replica id that ever lost a span, holding its running totals.

``dropped``: the export queue was full (``OTEL_BSP_MAX_QUEUE_SIZE``); ``failed``: the collector refused the
spans or could not be reached. A process adds what it lost since its last report (:func:`add_losses`,
one ``INSERT … ON CONFLICT DO UPDATE`` adding to the row, atomic under concurrent replicas); a replica that
never lost a span has no row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from syncd.store.connect import reading
from syncd.store.types import UTCDateTime, metadata

__all__ = ["SpanLoss", "add_losses", "span_losses", "span_losses_table"]

span_losses_table = sa.Table(
    "syncd_span_losses",
    metadata,
    sa.Column("replica", sa.String(200), primary_key=True),  # SYNCD_REPLICA_ID, or host-random per process
    sa.Column("dropped", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("first_at", UTCDateTime, nullable=False),  # the first report of a loss
    sa.Column("last_at", UTCDateTime, nullable=False),  # the latest
)


@dataclass(frozen=True)
class SpanLoss:
    """One replica's spans lost, in total, and when they were first and last reported."""

    replica: str
    dropped: int
    failed: int
    first_at: datetime
    last_at: datetime

    @property
    def lost(self) -> int:
        return self.dropped + self.failed


def add_losses(db: Engine, replica: str, *, dropped: int, failed: int, now: datetime) -> None:
    """Add ``dropped`` and ``failed`` to ``replica``'s totals (its row is created by its first loss)."""
    table = span_losses_table
    insert = postgresql.insert if db.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(replica=replica, dropped=dropped, failed=failed, first_at=now, last_at=now)
    statement = statement.on_conflict_do_update(index_elements=[table.c.replica], set_={
        "dropped": table.c.dropped + statement.excluded.dropped, "failed": table.c.failed + statement.excluded.failed,
        "last_at": statement.excluded.last_at})
    with db.begin() as conn:
        conn.execute(statement)


def span_losses(db: Engine | Connection) -> list[SpanLoss]:
    """Every replica's losses, the latest first (raises ``DBAPIError`` on a database without the table)."""
    table = span_losses_table
    query = sa.select(table).order_by(table.c.last_at.desc(), table.c.replica)
    if isinstance(db, Connection):
        rows = db.execute(query).all()
    else:
        with reading(db) as conn:
            rows = conn.execute(query).all()
    return [SpanLoss(r.replica, int(r.dropped), int(r.failed), r.first_at, r.last_at) for r in rows]
