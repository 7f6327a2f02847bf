"""hot path: partial run-queue indexes; the ledger's payload as json (not jsonb) on PostgreSQL

Revision ID: 0017
Revises: 0016

Every page transaction inserts one ``syncd_runs`` row per (workflow, event) and one ``syncd_events`` row per
event, so their per-row server cost is most of a PostgreSQL catch-up's (issue 26, bench/README.md §D):

- ``ix_syncd_runs_due`` and ``ix_syncd_runs_key_seq`` become partial (``next_attempt_at IS NOT NULL``,
  ``run_key IS NOT NULL``) on both dialects: a run that finished inline has neither, so it no longer writes
  two index entries that no query can ever read (the claim's ``next_attempt_at <= :now`` and the order
  check's ``run_key = run_key`` imply the conditions).
- PostgreSQL: ``ix_syncd_runs_status_next`` leaves out succeeded runs (``status <> 'succeeded'``): every
  query reading it names other statuses as constants, which PostgreSQL's planner proves imply the condition
  (syncd forces custom plans). SQLite's planner cannot prove that from ``status IN (...)``: full there.
- PostgreSQL: ``syncd_events.payload`` becomes ``json``: the server then validates the text COPY sends
  instead of building a jsonb tree, and keeps the text as written (``syncd.store.types.ledger_json_type``).
  SQLite stores text already. **This rewrites syncd_events and its indexes under an ACCESS EXCLUSIVE
  lock**: the upgrade (and a downgrade) takes time in proportion to the ledger's size, needs room for a
  second copy of it, and blocks every reader and writer of the ledger until it ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: index name -> (columns, the partial condition)
_PARTIAL = {
    "ix_syncd_runs_due": (["next_attempt_at", "seq", "event_id"], "next_attempt_at IS NOT NULL"),
    "ix_syncd_runs_key_seq": (["workflow", "run_key", "seq"], "run_key IS NOT NULL"),
}
#: PostgreSQL only, see the docstring
_STATUS_NEXT = ("ix_syncd_runs_status_next", ["status", "next_attempt_at"], "status <> 'succeeded'")


def upgrade() -> None:
    for name, (columns, where) in _PARTIAL.items():
        op.drop_index(name, table_name="syncd_runs")
        op.create_index(name, "syncd_runs", columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))
    if op.get_bind().dialect.name == "postgresql":
        name, columns, where = _STATUS_NEXT
        op.drop_index(name, table_name="syncd_runs")
        op.create_index(name, "syncd_runs", columns, postgresql_where=sa.text(where))
        op.alter_column("syncd_events", "payload", type_=postgresql.JSON(), existing_type=postgresql.JSONB(),
                        existing_nullable=False, postgresql_using="payload::json")


def downgrade() -> None:
    partial = [(name, columns) for name, (columns, _) in _PARTIAL.items()]
    if op.get_bind().dialect.name == "postgresql":
        partial.append(_STATUS_NEXT[:2])
        op.alter_column("syncd_events", "payload", type_=postgresql.JSONB(), existing_type=postgresql.JSON(),
                        existing_nullable=False, postgresql_using="payload::jsonb")
    for name, columns in partial:
        op.drop_index(name, table_name="syncd_runs")
        op.create_index(name, "syncd_runs", columns)
