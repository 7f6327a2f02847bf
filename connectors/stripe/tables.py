"""The Stripe mirror tables, filled by the built-in ``stripe.mirror.*`` workflows (revision 0009).

One row per customer and per subscription, keyed by Stripe's id. ``updated_at`` is the ``created`` time of
the event that wrote the row (Stripe's objects carry no update time of their own), ``event_id`` that
event's id. Object times (``created_at``, ``current_period_end``…) are Stripe's epoch seconds as UTC.
"""

from __future__ import annotations

import sqlalchemy as sa

from syncd.store.db import UTCDateTime, json_type, metadata

customers = sa.Table(
    "stripe_customers",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("balance", sa.BigInteger, nullable=True),
    sa.Column("currency", sa.String(16), nullable=True),
    sa.Column("delinquent", sa.Boolean, nullable=True),
    sa.Column("metadata", json_type(), nullable=True),
    sa.Column("livemode", sa.Boolean, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
)

subscriptions = sa.Table(
    "stripe_subscriptions",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("customer", sa.String(255), nullable=True, index=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("cancel_at_period_end", sa.Boolean, nullable=True),
    sa.Column("current_period_end", UTCDateTime, nullable=True),
    sa.Column("canceled_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("metadata", json_type(), nullable=True),
    sa.Column("livemode", sa.Boolean, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
)
