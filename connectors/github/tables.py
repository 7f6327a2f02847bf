"""The GitHub mirror table, filled by the built-in ``github.mirror.issues`` workflow (revision 0002).

One row per issue or pull request, keyed by GitHub's issue ``id``; ``(repo, number)`` is unique too.
``repo`` is the source's ``owner/name`` in lower case, as configured in ``GITHUB_REPOS``.
"""

from __future__ import annotations

import sqlalchemy as sa

from syncd.store.db import UTCDateTime, json_type, metadata

issues = sa.Table(
    "github_issues",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("repo", sa.String(200), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("state", sa.String(16), nullable=True),  # open | closed
    sa.Column("labels", json_type(), nullable=True),  # list of label names
    sa.Column("author", sa.String(100), nullable=True),  # user.login
    sa.Column("is_pull_request", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("repo", "number"),
)
