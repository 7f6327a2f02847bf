"""retention: syncd_horizons (per stream, the time before which its history was pruned)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.store.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "syncd_horizons",
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("horizon", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("pruned_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream", name="pk_syncd_horizons"),
    )


def downgrade() -> None:
    op.drop_table("syncd_horizons")
