"""initial schema: syncd tables and WorkOS mirror

Revision ID: 0001
Revises:
Create Date: 2026-11-25 03:53:57.999856
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import syncd.store.db

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('syncd_events',
    sa.Column('stream', sa.String(length=200), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('recorded_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('stream', 'event_id', name=op.f('pk_syncd_events'))
    )
    with op.batch_alter_table('syncd_events', schema=None) as batch_op:
        batch_op.create_index('ix_syncd_events_stream_occurred', ['stream', 'occurred_at'], unique=False)

    op.create_table('syncd_runs',
    sa.Column('workflow', sa.String(length=200), nullable=False),
    sa.Column('stream', sa.String(length=200), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('workflow_version', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='1', nullable=False),
    sa.Column('next_attempt_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('trace_id', sa.String(length=32), nullable=True),
    sa.Column('started_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('workflow', 'stream', 'event_id', name=op.f('pk_syncd_runs'))
    )
    with op.batch_alter_table('syncd_runs', schema=None) as batch_op:
        batch_op.create_index('ix_syncd_runs_status_next', ['status', 'next_attempt_at'], unique=False)

    op.create_table('syncd_sources',
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), server_default='live', nullable=False),
    sa.Column('state', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('cursor', sa.Text(), nullable=True),
    sa.Column('cursor_version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('meta', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('window_start', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('window_end', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('window_workflow', sa.String(length=200), nullable=True),
    sa.Column('progress', sa.Float(), nullable=True),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_token', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('paused_until', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('pause_reason', sa.Text(), nullable=True),
    sa.Column('events_seen', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('last_success_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_syncd_sources'))
    )
    op.create_table('syncd_ticks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=300), nullable=False),
    sa.Column('replica', sa.String(length=200), nullable=True),
    sa.Column('started_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('pages', sa.Integer(), server_default='0', nullable=False),
    sa.Column('events', sa.Integer(), server_default='0', nullable=False),
    sa.Column('new_events', sa.Integer(), server_default='0', nullable=False),
    sa.Column('runs_ok', sa.Integer(), server_default='0', nullable=False),
    sa.Column('runs_failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('skipped', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lag_seconds', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_syncd_ticks'))
    )
    with op.batch_alter_table('syncd_ticks', schema=None) as batch_op:
        batch_op.create_index('ix_syncd_ticks_source_started', ['source', 'started_at'], unique=False)

    op.create_table('syncd_tombstones',
    sa.Column('kind', sa.String(length=100), nullable=False),
    sa.Column('object_id', sa.String(length=200), nullable=False),
    sa.Column('version', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'object_id', name=op.f('pk_syncd_tombstones'))
    )
    op.create_table('workos_organization_memberships',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=True),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=True),
    sa.Column('role', sa.String(length=100), nullable=True),
    sa.Column('custom_attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('directory_managed', sa.Boolean(), nullable=True),
    sa.Column('created_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workos_organization_memberships'))
    )
    with op.batch_alter_table('workos_organization_memberships', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workos_organization_memberships_organization_id'), ['organization_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_workos_organization_memberships_user_id'), ['user_id'], unique=False)

    op.create_table('workos_organizations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=True),
    sa.Column('domains', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('external_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workos_organizations'))
    )
    op.create_table('workos_users',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('first_name', sa.String(length=200), nullable=True),
    sa.Column('last_name', sa.String(length=200), nullable=True),
    sa.Column('email_verified', sa.Boolean(), nullable=True),
    sa.Column('profile_picture_url', sa.Text(), nullable=True),
    sa.Column('external_id', sa.String(length=200), nullable=True),
    sa.Column('last_sign_in_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', syncd.store.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', syncd.store.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workos_users'))
    )



def downgrade() -> None:

    op.drop_table('workos_users')
    op.drop_table('workos_organizations')
    with op.batch_alter_table('workos_organization_memberships', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workos_organization_memberships_user_id'))
        batch_op.drop_index(batch_op.f('ix_workos_organization_memberships_organization_id'))

    op.drop_table('workos_organization_memberships')
    op.drop_table('syncd_tombstones')
    with op.batch_alter_table('syncd_ticks', schema=None) as batch_op:
        batch_op.drop_index('ix_syncd_ticks_source_started')

    op.drop_table('syncd_ticks')
    op.drop_table('syncd_sources')
    with op.batch_alter_table('syncd_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_syncd_runs_status_next')

    op.drop_table('syncd_runs')
    with op.batch_alter_table('syncd_events', schema=None) as batch_op:
        batch_op.drop_index('ix_syncd_events_stream_occurred')

    op.drop_table('syncd_events')

