"""durable workflow steps: syncd_steps

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import syncd.store.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "syncd_steps",
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("stream", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("result", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                  nullable=False),
        sa.Column("created_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workflow", "stream", "event_id", "step", name=op.f("pk_syncd_steps")),
    )


def downgrade() -> None:
    op.drop_table("syncd_steps")
