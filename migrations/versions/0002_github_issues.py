"""GitHub issues mirror: the github_issues table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 04:02:00.156582
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import syncd.store.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "github_issues",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("repo", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("labels", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                  nullable=True),
        sa.Column("author", sa.String(length=100), nullable=True),
        sa.Column("is_pull_request", sa.Boolean(), nullable=False),
        sa.Column("created_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_github_issues")),
        sa.UniqueConstraint("repo", "number", name=op.f("uq_github_issues_repo")),
    )


def downgrade() -> None:
    op.drop_table("github_issues")
