"""span losses: syncd_span_losses (per replica: spans dropped or not delivered, for `syncd status`)

Revision ID: 0016
Revises: 0014
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.store.db

revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "syncd_span_losses",
        sa.Column("replica", sa.String(200), nullable=False),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("first_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica", name="pk_syncd_span_losses"),
    )


def downgrade() -> None:
    op.drop_table("syncd_span_losses")
