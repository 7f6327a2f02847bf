"""Stripe mirror: the stripe_customers and stripe_subscriptions tables

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 11:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import syncd.store.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "stripe_customers",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("delinquent", sa.Boolean(), nullable=True),
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=True),
        sa.Column("created_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_customers")),
    )
    op.create_table(
        "stripe_subscriptions",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("customer", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=True),
        sa.Column("current_period_end", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=True),
        sa.Column("created_at", syncd.store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", syncd.store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_subscriptions")),
    )
    op.create_index(op.f("ix_stripe_subscriptions_customer"), "stripe_subscriptions", ["customer"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_stripe_subscriptions_customer"), table_name="stripe_subscriptions")
    op.drop_table("stripe_subscriptions")
    op.drop_table("stripe_customers")
