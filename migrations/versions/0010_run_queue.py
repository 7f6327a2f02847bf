"""the run queue: keys, order and worker claims on syncd_runs

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import syncd.store.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("syncd_runs") as batch:
        batch.add_column(sa.Column("run_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("claim_owner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("claim_token", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("claimed_until", syncd.store.db.UTCDateTime(timezone=True), nullable=True))
    op.create_index("ix_syncd_runs_key_seq", "syncd_runs", ["workflow", "run_key", "seq"])
    # The claim's order: a claim walks due runs earliest first and stops at its limit. Finished runs have
    # no next_attempt_at, so they are outside the range it reads.
    op.create_index("ix_syncd_runs_due", "syncd_runs", ["next_attempt_at", "seq", "event_id"])


def downgrade() -> None:
    op.drop_index("ix_syncd_runs_due", table_name="syncd_runs")
    op.drop_index("ix_syncd_runs_key_seq", table_name="syncd_runs")
    with op.batch_alter_table("syncd_runs") as batch:
        for column in ("claimed_until", "claim_token", "claim_owner", "seq", "run_key"):
            batch.drop_column(column)
