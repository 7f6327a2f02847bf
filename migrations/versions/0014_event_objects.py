"""the ledger's object index: every object id an event names (syncd_event_objects), filled off the page's path
from a backlog (syncd_object_backlog); syncd_events.object_id and its index go

Revision ID: 0014
Revises: 0013

Events already in the ledger get their entries here, in batches (``syncd.store.objects`` is the rule; new
events are queued by their page and indexed by ``syncd.store.objindex``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import syncd.store.db
from syncd.store.objects import object_id_of, object_ids_of
from syncd.store.types import json_type

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Ledger rows read per batch while filling the index.
BATCH = 5_000


def upgrade() -> None:
    op.create_table(
        "syncd_event_objects",
        sa.Column("object_id", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stream", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("object_id", "occurred_at", "stream", "event_id", name=op.f("pk_syncd_event_objects")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "syncd_object_backlog",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(length=200), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_syncd_object_backlog")),
    )
    _fill(op.get_bind())
    op.drop_index("ix_syncd_events_object_id", table_name="syncd_events")
    with op.batch_alter_table("syncd_events") as batch:
        batch.drop_column("object_id")


def downgrade() -> None:
    op.add_column("syncd_events", sa.Column("object_id", sa.String(200), nullable=True))
    _fill_column(op.get_bind())
    op.create_index("ix_syncd_events_object_id", "syncd_events", ["object_id"])
    op.drop_table("syncd_object_backlog")
    op.drop_table("syncd_event_objects")


def _ledger() -> Any:
    return sa.table("syncd_events", sa.column("stream"), sa.column("event_id"),
                    sa.column("occurred_at", syncd.store.db.UTCDateTime(timezone=True)),
                    sa.column("payload", json_type()), sa.column("object_id"))


def _batches(conn: sa.Connection) -> Any:
    """The ledger's rows in primary-key order, ``BATCH`` at a time (a keyset walk: each batch one index range)."""
    ledger = _ledger()
    after: tuple[str, str] | None = None
    while True:
        query = sa.select(ledger.c.stream, ledger.c.event_id, ledger.c.occurred_at, ledger.c.payload)
        if after is not None:
            query = query.where(sa.tuple_(ledger.c.stream, ledger.c.event_id)
                                > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
        rows: list[Any] = list(conn.execute(query.order_by(ledger.c.stream, ledger.c.event_id).limit(BATCH)))
        if not rows:
            return
        yield rows
        after = (rows[-1].stream, rows[-1].event_id)


def _fill(conn: sa.Connection) -> None:
    """The index entries of every event in the ledger (the table is new: nothing to conflict with)."""
    index = sa.table("syncd_event_objects", sa.column("object_id"),
                     sa.column("occurred_at", syncd.store.db.UTCDateTime(timezone=True)), sa.column("stream"),
                     sa.column("event_id"))
    for rows in _batches(conn):
        entries = [{"object_id": found, "occurred_at": r.occurred_at, "stream": r.stream, "event_id": r.event_id}
                   for r in rows for found in object_ids_of(r.event_id, r.payload)]
        if entries:
            conn.execute(sa.insert(index), entries)


def _fill_column(conn: sa.Connection) -> None:
    """``syncd_events.object_id`` as migration 0012 set it (before the index exists: no index write each)."""
    ledger = _ledger()
    update = (sa.update(ledger).where(ledger.c.stream == sa.bindparam("s"), ledger.c.event_id == sa.bindparam("e"))
              .values(object_id=sa.bindparam("o")))
    for rows in _batches(conn):
        known = [{"s": r.stream, "e": r.event_id, "o": object_id_of(r.event_id, r.payload)} for r in rows]
        known = [v for v in known if v["o"] is not None]
        if known:
            conn.execute(update, known)

