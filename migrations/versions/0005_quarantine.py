"""quarantined events: syncd_quarantine

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.store.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "syncd_quarantine",
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("event_id", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("occurred_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("times_seen", sa.Integer, nullable=False, server_default="1"),
        sa.PrimaryKeyConstraint("stream", "key", name="pk_syncd_quarantine"),
    )
    op.create_index("ix_syncd_quarantine_last_seen", "syncd_quarantine", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_syncd_quarantine_last_seen", table_name="syncd_quarantine")
    op.drop_table("syncd_quarantine")
