"""WorkOS Directory Sync mirror: workos_directories, workos_directory_users, workos_directory_groups,
workos_directory_group_members

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 13:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import syncd.store.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _times() -> list[sa.Column[object]]:
    return [sa.Column("created_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
            sa.Column("updated_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "workos_directories",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("type", sa.String(length=100), nullable=True),
        sa.Column("state", sa.String(length=50), nullable=True),
        sa.Column("domains", _json(), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workos_directories")),
    )
    op.create_index(op.f("ix_workos_directories_organization_id"), "workos_directories", ["organization_id"])
    op.create_table(
        "workos_directory_users",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("directory_id", sa.String(length=64), nullable=True),
        sa.Column("organization_id", sa.String(length=64), nullable=True),
        sa.Column("idp_id", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("username", sa.String(length=320), nullable=True),
        sa.Column("state", sa.String(length=50), nullable=True),
        sa.Column("role", sa.String(length=100), nullable=True),
        sa.Column("custom_attributes", _json(), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workos_directory_users")),
    )
    op.create_index(op.f("ix_workos_directory_users_directory_id"), "workos_directory_users", ["directory_id"])
    op.create_table(
        "workos_directory_groups",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("directory_id", sa.String(length=64), nullable=True),
        sa.Column("organization_id", sa.String(length=64), nullable=True),
        sa.Column("idp_id", sa.String(length=200), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workos_directory_groups")),
    )
    op.create_index(op.f("ix_workos_directory_groups_directory_id"), "workos_directory_groups", ["directory_id"])
    op.create_table(
        "workos_directory_group_members",
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("directory_id", sa.String(length=64), nullable=True),
        sa.Column("organization_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workos_directory_group_members")),
    )
    for column in ("group_id", "user_id", "directory_id"):
        op.create_index(op.f(f"ix_workos_directory_group_members_{column}"), "workos_directory_group_members",
                        [column])


def downgrade() -> None:
    for column in ("group_id", "user_id", "directory_id"):
        op.drop_index(op.f(f"ix_workos_directory_group_members_{column}"),
                      table_name="workos_directory_group_members")
    op.drop_table("workos_directory_group_members")
    op.drop_index(op.f("ix_workos_directory_groups_directory_id"), table_name="workos_directory_groups")
    op.drop_table("workos_directory_groups")
    op.drop_index(op.f("ix_workos_directory_users_directory_id"), table_name="workos_directory_users")
    op.drop_table("workos_directory_users")
    op.drop_index(op.f("ix_workos_directories_organization_id"), table_name="workos_directories")
    op.drop_table("workos_directories")
