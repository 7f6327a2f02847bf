"""syncd's own tables. Declared once here; Alembic revisions in ``migrations/`` create them."""

from __future__ import annotations

import sqlalchemy as sa

from syncd.store.types import UTCDateTime, json_type, ledger_json_type, metadata

#: One row per cursor: a live source (``workos``, ``github:o/r``) or a backfill window of one.
sources = sa.Table(
    "syncd_sources",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("source", sa.String(200), nullable=False),  # the connector's key; == key for live cursors
    sa.Column("kind", sa.String(16), nullable=False, server_default="live"),  # live | backfill
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),  # active | done | failed
    sa.Column("cursor", sa.Text, nullable=True),
    sa.Column("cursor_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("meta", json_type(), nullable=True),  # provider state shown by status (rate limits…)
    sa.Column("window_start", UTCDateTime, nullable=True),
    sa.Column("window_end", UTCDateTime, nullable=True),
    sa.Column("window_workflow", sa.String(200), nullable=True),  # backfill --workflow
    # backfills: the workflows a finished window ran for; one registered since re-opens it
    sa.Column("window_workflows", json_type(), nullable=True),
    sa.Column("progress", sa.Float, nullable=True),  # backfills: share of the window covered, 0..1
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("lease_token", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("paused_until", UTCDateTime, nullable=True),
    sa.Column("pause_reason", sa.Text, nullable=True),
    sa.Column("events_seen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_success_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_error_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

#: The ledger: every event ever received, once. Payload kept for retries, replay and dead letters.
events = sa.Table(
    "syncd_events",
    metadata,
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("payload", ledger_json_type(), nullable=False),  # json, not jsonb, on PostgreSQL: see its docstring
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Index("ix_syncd_events_stream_occurred", "stream", "occurred_at"),
)

#: The ledger's object index: one row per (object id, event) for every object an event is about
#: (``syncd.store.objects``), in the order the dashboard's search shows them. See ``syncd.store.objindex``.
event_objects = sa.Table(
    "syncd_event_objects",
    metadata,
    sa.Column("object_id", sa.String(200), primary_key=True),
    sa.Column("occurred_at", UTCDateTime, primary_key=True),
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sqlite_with_rowid=False,  # the key is the row: one B-tree per entry, not a table and an index
)

#: Events recorded but not in ``event_objects`` yet: one row per page transaction, its (event id, object id)
#: pairs as a JSON array. See ``syncd.store.objindex``.
object_backlog = sa.Table(
    "syncd_object_backlog",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(200), nullable=False),
    sa.Column("entries", sa.Text, nullable=False),
)

#: One row per (workflow, event): the idempotency key of every effect.
runs = sa.Table(
    "syncd_runs",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("workflow_version", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # succeeded | failed | dead | sleeping
    sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=True),
    # the run queue (syncd.store.queue): the workflow's key= value and the insertion order it runs in,
    # and the worker's claim: who, fenced on which token, until when (renewed while it runs)
    sa.Column("run_key", sa.String(200), nullable=True),
    sa.Column("seq", sa.BigInteger, nullable=True),
    sa.Column("claim_owner", sa.String(200), nullable=True),
    sa.Column("claim_token", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    # Partial (migration 0017): a run finished inline is succeeded, with no next_attempt_at and no run_key, so
    # it writes no entry that no query could read; the queries state the conditions or imply them (on
    # PostgreSQL ``status IN (consts)`` implies ``<> 'succeeded'``; SQLite's planner cannot prove that one).
    sa.Index("ix_syncd_runs_status_next", "status", "next_attempt_at",
             postgresql_where=sa.text("status <> 'succeeded'")),
    sa.Index("ix_syncd_runs_key_seq", "workflow", "run_key", "seq",
             postgresql_where=sa.text("run_key IS NOT NULL"), sqlite_where=sa.text("run_key IS NOT NULL")),
    sa.Index("ix_syncd_runs_due", "next_attempt_at", "seq", "event_id",
             postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
             sqlite_where=sa.text("next_attempt_at IS NOT NULL")),
)

#: History of ticks, for ``syncd status``, health and metrics.
ticks = sa.Table(
    "syncd_ticks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(300), nullable=False),
    sa.Column("replica", sa.String(200), nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("events", sa.Integer, nullable=False, server_default="0"),
    sa.Column("new_events", sa.Integer, nullable=False, server_default="0"),
    sa.Column("runs_ok", sa.Integer, nullable=False, server_default="0"),
    sa.Column("runs_failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lag_seconds", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_syncd_ticks_source_started", "source", "started_at"),
)

#: Deleted mirror objects and the version at which they died, so a stale event cannot resurrect them.
tombstones = sa.Table(
    "syncd_tombstones",
    metadata,
    sa.Column("kind", sa.String(100), primary_key=True),
    sa.Column("object_id", sa.String(200), primary_key=True),
    sa.Column("version", UTCDateTime, nullable=False),
)

#: Results of completed durable steps (and sleeps' wake times), per run. See ``syncd.workflows.steps``.
steps = sa.Table(
    "syncd_steps",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("step", sa.String(200), primary_key=True),
    sa.Column("result", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: Events that could not be processed (malformed, or holding values the database cannot store), held apart
#: so their stream goes on; one row per (stream, key), key = a digest of the event id (or of the raw form
#: when there is no id). See ``syncd.store.quarantine``.
quarantine = sa.Table(
    "syncd_quarantine",
    metadata,
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.Text, nullable=True),  # its safe printable form, whole
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),  # safe text form of what the provider sent, bounded
    sa.Column("occurred_at", UTCDateTime, nullable=True),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("times_seen", sa.Integer, nullable=False, server_default="1"),
    sa.Index("ix_syncd_quarantine_last_seen", "last_seen_at"),
)

#: Per stream, the retention horizon: the newest event pruned from it (``syncd prune``), so an event that old or
#: older that arrives again is skipped rather than run as new. See ``syncd.store.retention``.
horizons = sa.Table(
    "syncd_horizons",
    metadata,
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("horizon", UTCDateTime, nullable=False),
    sa.Column("pruned_at", UTCDateTime, nullable=False),
)
