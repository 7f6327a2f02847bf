"""Mirror tables for WorkOS objects (users, organizations, memberships; Directory Sync), with the fields WorkOS
sends and ``updated_at`` for newer-wins."""

from __future__ import annotations

import sqlalchemy as sa

from syncd.store.db import UTCDateTime, json_type, metadata

users = sa.Table(
    "workos_users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("first_name", sa.String(200), nullable=True),
    sa.Column("last_name", sa.String(200), nullable=True),
    sa.Column("email_verified", sa.Boolean, nullable=True),
    sa.Column("profile_picture_url", sa.Text, nullable=True),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("last_sign_in_at", UTCDateTime, nullable=True),
    sa.Column("metadata", json_type(), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

organizations = sa.Table(
    "workos_organizations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(300), nullable=True),
    sa.Column("domains", json_type(), nullable=True),
    sa.Column("metadata", json_type(), nullable=True),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

memberships = sa.Table(
    "workos_organization_memberships",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=True, index=True),
    sa.Column("organization_id", sa.String(64), nullable=True, index=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("role", sa.String(100), nullable=True),  # role.slug
    sa.Column("custom_attributes", json_type(), nullable=True),
    sa.Column("directory_managed", sa.Boolean, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# ---- Directory Sync (``connectors.workos.dsync``; revision 0013) ------------------------------------------
# Every row keeps ``updated_at``, its version for newer-wins (a membership's: the time of the event that
# added it), and the directory it belongs to, so a deleted directory takes what it held with it.

directories = sa.Table(
    "workos_directories",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("organization_id", sa.String(64), nullable=True, index=True),
    sa.Column("name", sa.String(300), nullable=True),
    sa.Column("type", sa.String(100), nullable=True),
    sa.Column("state", sa.String(50), nullable=True),
    sa.Column("domains", json_type(), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

directory_users = sa.Table(
    "workos_directory_users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("directory_id", sa.String(64), nullable=True, index=True),
    sa.Column("organization_id", sa.String(64), nullable=True),
    sa.Column("idp_id", sa.String(200), nullable=True),
    sa.Column("email", sa.String(320), nullable=True),  # ``email``, or the primary of ``emails``
    sa.Column("first_name", sa.String(200), nullable=True),
    sa.Column("last_name", sa.String(200), nullable=True),
    sa.Column("username", sa.String(320), nullable=True),
    sa.Column("state", sa.String(50), nullable=True),
    sa.Column("role", sa.String(100), nullable=True),  # role.slug
    sa.Column("custom_attributes", json_type(), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

directory_groups = sa.Table(
    "workos_directory_groups",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("directory_id", sa.String(64), nullable=True, index=True),
    sa.Column("organization_id", sa.String(64), nullable=True),
    sa.Column("idp_id", sa.String(200), nullable=True),
    sa.Column("name", sa.String(300), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

directory_group_members = sa.Table(
    "workos_directory_group_members",
    metadata,
    sa.Column("id", sa.String(160), primary_key=True),  # "<group id>|<user id>": WorkOS gives it no id
    sa.Column("group_id", sa.String(64), nullable=False, index=True),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    sa.Column("directory_id", sa.String(64), nullable=True, index=True),
    sa.Column("organization_id", sa.String(64), nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
