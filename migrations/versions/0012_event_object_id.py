"""the object an event is about, indexed: syncd_events.object_id (the dashboard's search by object id)

Revision ID: 0012
Revises: 0011

Events already in the ledger get their object id here, in batches (``syncd.store.objects`` is the rule; new
events get it when they are recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from syncd.store.objects import object_id_of
from syncd.store.types import json_type

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Ledger rows read and updated per statement while filling the column.
BATCH = 5_000


def upgrade() -> None:
    op.add_column("syncd_events", sa.Column("object_id", sa.String(200), nullable=True))
    _fill(op.get_bind())
    op.create_index("ix_syncd_events_object_id", "syncd_events", ["object_id"])


def downgrade() -> None:
    op.drop_index("ix_syncd_events_object_id", table_name="syncd_events")
    with op.batch_alter_table("syncd_events") as batch:
        batch.drop_column("object_id")


def _fill(conn: sa.Connection) -> None:
    """Set ``object_id`` of every event, walking the primary key in batches (before the index exists, so each
    update costs no index write)."""
    ledger = sa.table("syncd_events", sa.column("stream"), sa.column("event_id"), sa.column("payload", json_type()),
                      sa.column("object_id"))
    update = (sa.update(ledger).where(ledger.c.stream == sa.bindparam("s"), ledger.c.event_id == sa.bindparam("e"))
              .values(object_id=sa.bindparam("o")))
    after: tuple[str, str] | None = None
    while True:
        query = sa.select(ledger.c.stream, ledger.c.event_id, ledger.c.payload)
        if after is not None:
            query = query.where(sa.tuple_(ledger.c.stream, ledger.c.event_id) > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
        rows: list[Any] = list(conn.execute(query.order_by(ledger.c.stream, ledger.c.event_id).limit(BATCH)))
        if not rows:
            return
        values = [{"s": r.stream, "e": r.event_id, "o": object_id_of(r.event_id, r.payload)} for r in rows]
        known = [v for v in values if v["o"] is not None]
        if known:
            conn.execute(update, known)
        after = (rows[-1].stream, rows[-1].event_id)
