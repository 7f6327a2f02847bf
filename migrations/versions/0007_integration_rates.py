"""integration call slots (rate limits and Retry-After pauses shared by replicas): syncd_integration_slots

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "syncd_integration_slots",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_syncd_integration_slots"),
    )


def downgrade() -> None:
    op.drop_table("syncd_integration_slots")
