"""The ledger (``syncd_events``), runs (``syncd_runs``) and step results (``syncd_steps``).

Every function takes a ``Connection`` inside a transaction the caller (``SqlStore``) owns. The dialects
differ here, privately: PostgreSQL says which ledger rows were new in the insert itself (a catch-up's
group goes by a plain ``COPY`` that takes them all, or else by ``ON CONFLICT … RETURNING``), and serialises
a stream's run-creating transactions with an advisory lock; SQLite reads lists from one JSON parameter.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd import jsoncodec
from syncd.contracts import Event, Quarantined, Recorded, RunKey, RunRecord, RunStatus
from syncd.store import quarantine, retention
from syncd.store.bulk import BinaryArray, insert_ignore, list_param, one_of
from syncd.store.pgcopy import copy_insert, copy_new
from syncd.store.tables import events, object_backlog, runs, steps

# ---- the ledger ---------------------------------------------------------------------------------------


def record_events(conn: Connection, batch: Sequence[Event], now: datetime) -> Recorded:
    """Insert the events not in the ledger yet; quarantine those it cannot hold (``quarantine.unstorable``)
    instead; skip those older than the stream's retention horizon (``Recorded.expired``). Events that land remove
    their own quarantine rows (fetched again after a fix)."""
    if not batch:
        return Recorded(set())
    batch, expired = retention.drop_expired(conn, batch)  # up to the horizon: history pruned, never run again
    refused: list[Quarantined] = []
    refused_ids: list[str] = []
    kept: list[Event] = []
    texts: list[str | None] = []  # each kept payload's JSON text, when the check wrote it
    for event in batch:
        reason, text = quarantine.check(event)
        if reason is None:
            kept.append(event)
            texts.append(text)
        else:
            refused.append(quarantine.from_event(event, reason))
            refused_ids.append(event.id)
    if refused:
        quarantine.record(conn, refused, now)
    new = _insert_new(conn, kept, texts, now) if kept else set()
    if new:
        quarantine.release(conn, batch[0].stream, new)
        queue_objects(conn, batch[0].stream, list(new))
    return Recorded(new, frozenset(refused_ids), expired)


def queue_objects(conn: Connection, stream: str, event_ids: Sequence[str]) -> None:
    """Queue new events for the ledger's object index, with their page: one ``syncd_object_backlog`` row, the
    event ids as a JSON array, which ``syncd.store.objindex`` indexes later (its docstring says why)."""
    conn.execute(_QUEUE_OBJECTS, {"stream": stream, "entries": jsoncodec.dumps(event_ids)})


_QUEUE_OBJECTS = sa.insert(object_backlog).values(stream=sa.bindparam("stream"), entries=sa.bindparam("entries"))


#: From this many events on, PostgreSQL first tries to COPY a batch straight into the ledger (``copy_new``): a
#: catch-up's groups, whose events are new. Smaller batches (a live tick's page, which may meet an event again
#: at its boundary) go the ``ON CONFLICT`` way at once.
COPY_NEW_FROM = 100


def _insert_new(conn: Connection, batch: Sequence[Event], texts: Sequence[str | None], now: datetime) -> set[str]:
    if conn.dialect.name == "postgresql":
        values = [copy_values(e, text, now) for e, text in zip(batch, texts, strict=True)]
        if len(batch) >= COPY_NEW_FROM:
            fresh: dict[str, tuple[Any, ...]] = {}
            for event, row in zip(batch, values, strict=True):  # the first of repeated ids, as ON CONFLICT
                fresh.setdefault(event.id, row)                 # DO NOTHING keeps it
            if copy_new(conn, events, LEDGER_COLUMNS, list(fresh.values()), serialized=_PAYLOAD):
                return set(fresh)
        # the insert itself says which events were new
        return _record_new_events(conn, values)
    seen = _existing_event_ids(conn, batch[0].stream, [e.id for e in batch])
    rows = [ledger_row(e, now) for e in batch if e.id not in seen]
    insert_ignore(conn, events, rows, ["stream", "event_id"])
    return {r["event_id"] for r in rows}


#: The ledger's columns, in the order of ``ledger_values``. A column added here is added there too.
LEDGER_COLUMNS = ("stream", "event_id", "type", "action", "occurred_at", "recorded_at", "payload")


def ledger_values(event: Event, now: datetime) -> tuple[Any, ...]:
    """``event``'s ledger row as values in ``LEDGER_COLUMNS`` order."""
    return (event.stream, event.id, event.type, event.action, event.occurred_at, now,
            event.data if type(event.data) is dict else dict(event.data))


def copy_values(event: Event, text: str | None, now: datetime) -> tuple[Any, ...]:
    """``ledger_values`` with the payload as its JSON text: ``text`` (``quarantine.check`` wrote it, the same
    as ``jsoncodec.dumps``) or else serialized here. ``COPY`` takes the text as it is (``serialized``)."""
    data = event.data if type(event.data) is dict else dict(event.data)
    return (event.stream, event.id, event.type, event.action, event.occurred_at, now,
            jsoncodec.dumps(data) if text is None else text)


#: The ledger's column that ``copy_values`` gives as JSON text already.
_PAYLOAD = frozenset({"payload"})


def ledger_row(event: Event, now: datetime) -> dict[str, Any]:
    """``event``'s ledger row as a mapping of ``LEDGER_COLUMNS`` (the same values as ``ledger_values``, built
    directly: SQLite's catch-up makes one per event)."""
    return {"stream": event.stream, "event_id": event.id, "type": event.type, "action": event.action,
            "occurred_at": event.occurred_at, "recorded_at": now,
            "payload": event.data if type(event.data) is dict else dict(event.data)}


def event_from_ledger(stream: str, row: Mapping[str, Any] | sa.RowMapping) -> Event:
    return Event(stream=stream, id=row["event_id"], type=row["type"], occurred_at=row["occurred_at"],
                 data=row["payload"], action=row.get("action"))


def _record_new_events(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> set[str]:
    """Insert the ledger rows (``copy_values``) not recorded yet; return their event ids
    (PostgreSQL: ``COPY`` and one INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING, ``pgcopy.copy_insert``).

    One statement instead of a look-up and an insert, and no ``event_id IN (…)`` query: on a young table
    without statistics PostgreSQL planned that one as a scan of the stream's whole ledger, every page.
    """
    return set(copy_insert(conn, events, LEDGER_COLUMNS, rows, conflict="(stream, event_id) DO NOTHING",
                           returning="event_id", serialized=_PAYLOAD))


def _existing_event_ids(conn: Connection, stream: str, event_ids: Sequence[str]) -> set[str]:
    dialect = conn.dialect.name
    return {r[0] for r in conn.execute(_existing_events_statement(dialect),
                                       {"stream": stream, "ids": list_param(event_ids, dialect)})}


@functools.lru_cache(maxsize=4)
def _existing_events_statement(dialect: str) -> Any:
    return sa.select(events.c.event_id).where(events.c.stream == sa.bindparam("stream"),
                                              one_of(events.c.event_id, "ids", dialect))


# ---- runs ---------------------------------------------------------------------------------------------


def existing_runs(conn: Connection, stream: str, workflows: Iterable[str],
                  event_ids: Iterable[str]) -> set[tuple[str, str]]:
    """The (workflow, event id) pairs among these that already have a run.

    The workflow names lead the run table's primary key (workflow, stream, event_id): without them this
    lookup scanned the whole table on every page, and a catch-up slowed down as the table grew.
    """
    names = sorted(set(workflows))
    ids = list(event_ids)
    if not names or not ids:
        return set()
    dialect = conn.dialect.name
    return {(r[0], r[1]) for r in conn.execute(_existing_runs_statement(dialect), {
        "names": list_param(names, dialect), "stream": stream, "ids": list_param(ids, dialect)})}


@functools.lru_cache(maxsize=4)
def _existing_runs_statement(dialect: str) -> Any:
    return sa.select(runs.c.workflow, runs.c.event_id).where(
        one_of(runs.c.workflow, "names", dialect), runs.c.stream == sa.bindparam("stream"),
        one_of(runs.c.event_id, "ids", dialect))


def run_row(record: RunRecord) -> dict[str, Any]:
    """``record`` as a ``syncd_runs`` row (the status as its plain text)."""
    return {
        "workflow": record.workflow, "stream": record.stream, "event_id": record.event_id,
        "workflow_version": record.workflow_version, "status": record.status.value, "attempts": record.attempts,
        "next_attempt_at": record.next_attempt_at, "last_error": record.last_error, "trace_id": record.trace_id,
        "started_at": record.started_at, "finished_at": record.finished_at, "duration_ms": record.duration_ms,
        "run_key": record.run_key, "seq": record.seq,
    }


#: The columns ``run_row`` fills (the claim columns keep their defaults until a worker claims the run).
RUN_COLUMNS = ("workflow", "stream", "event_id", "workflow_version", "status", "attempts", "next_attempt_at",
               "last_error", "trace_id", "started_at", "finished_at", "duration_ms", "run_key", "seq")


_RUNS_CONFLICT = "(workflow, stream, event_id) DO NOTHING"


#: From this many run rows on, PostgreSQL gets them by COPY (three round trips, then nothing per row).
COPY_RUNS_FROM = 100


def insert_runs(conn: Connection, records: Sequence[RunRecord]) -> None:
    if conn.dialect.name == "postgresql" and len(records) >= COPY_RUNS_FROM:
        # A RunRecord's fields are RUN_COLUMNS, in order (tests/test_pg_copy.py holds it).
        copy_insert(conn, runs, RUN_COLUMNS, [(*r[:4], r.status.value, *r[5:]) for r in records],
                    conflict=_RUNS_CONFLICT)
        return
    insert_ignore(conn, runs, [run_row(r) for r in records], ["workflow", "stream", "event_id"])


def insert_batch_runs(conn: Connection, template: RunRecord, event_ids: Sequence[str]) -> None:
    """The run rows of a batch: ``template`` for each of ``event_ids``.

    The same rows ``insert_runs`` writes, by one ``INSERT … SELECT`` over the ids given as one parameter (an
    array on PostgreSQL, a JSON array on SQLite), so no row is built in Python nor bound per row (a
    thousand rows of fourteen values each per catch-up transaction) and it is one round trip.

    On PostgreSQL the insert is a plain one, in a SAVEPOINT, and only if the primary key refuses it is it
    made again with ``ON CONFLICT DO NOTHING``: that clause's speculative insertion cost the server about a
    tenth more for these rows (bench/README.md, scenario D, session 10), and in a page transaction the
    conflict does not happen: it holds the stream's lock (``lock_stream``) from its first statement, as
    every transaction that creates or deletes a stream's runs does, and the engine passes only events new to
    the ledger in it (a run is only created with or after its event's ledger row, and retention deletes an
    event's runs with it) or those ``existing_runs`` found without a run under the same lock. A run that
    exists anyway (another caller; a write outside syncd) is still left as it is.
    """
    if not event_ids:
        return
    dialect = conn.dialect.name
    common = run_row(template)
    if dialect not in ("postgresql", "sqlite"):
        insert_ignore(conn, runs, [{**common, "event_id": event_id} for event_id in event_ids],
                      ["workflow", "stream", "event_id"])
        return
    del common["event_id"]
    params = {**common, "event_ids": list_param(event_ids, dialect)}
    if dialect == "postgresql":
        try:
            with conn.begin_nested():
                conn.execute(_batch_runs_statement(dialect, conflict=False), params)
            return
        except sa.exc.IntegrityError:  # a run exists (or an id repeats): rolled back to the SAVEPOINT
            pass
    conn.execute(_batch_runs_statement(dialect, conflict=True), params)


@functools.cache
def _batch_runs_statement(dialect: str, *, conflict: bool) -> Any:
    columns = RUN_COLUMNS
    selected = ", ".join("ids.value" if c == "event_id" else f":{c}" for c in columns)
    ids_type: sa.types.TypeEngine[Any]
    if dialect == "postgresql":
        source, ids_type = "unnest(:event_ids) AS ids(value)", BinaryArray(sa.String())
    else:  # WHERE: SQLite's parser needs it before ON CONFLICT
        source, ids_type = "json_each(:event_ids) AS ids WHERE true", sa.String()
    guard = " ON CONFLICT (workflow, stream, event_id) DO NOTHING" if conflict else ""
    return sa.text(
        f"INSERT INTO {runs.name} ({', '.join(columns)}) SELECT {selected} FROM {source}{guard}"
    ).bindparams(*[sa.bindparam(c, type_=runs.c[c].type) for c in columns if c != "event_id"],
                 sa.bindparam("event_ids", type_=ids_type))


#: What a later attempt changes in a run's row (its key and first start stay).
_UPDATED = ("status", "attempts", "next_attempt_at", "last_error", "trace_id", "finished_at", "duration_ms",
            "workflow_version")


def update_run(conn: Connection, record: RunRecord) -> None:
    row = run_row(record)
    conn.execute(sa.update(runs).where(runs.c.workflow == record.workflow, runs.c.stream == record.stream,
                                       runs.c.event_id == record.event_id).values({k: row[k] for k in _UPDATED}))


def waiting_runs(conn: Connection, stream: str) -> tuple[int, datetime | None]:
    """Runs of ``stream`` queued, pending or sleeping, and the earliest ``next_attempt_at`` among them."""
    waiting = [RunStatus.QUEUED.value, RunStatus.PENDING.value, RunStatus.SLEEPING.value]
    count, first = conn.execute(
        sa.select(sa.func.count(), sa.func.min(runs.c.next_attempt_at))
        .where(runs.c.stream == stream, runs.c.status.in_(waiting))
    ).one()
    return int(count), first


# ---- steps --------------------------------------------------------------------------------------------


def step_results(conn: Connection, key: RunKey) -> dict[str, Any]:
    rows = conn.execute(sa.select(steps.c.step, steps.c.result).where(
        steps.c.workflow == key.workflow, steps.c.stream == key.stream, steps.c.event_id == key.event_id))
    return {r.step: r.result for r in rows}


def store_steps(conn: Connection, key: RunKey, results: Mapping[str, Any], now: datetime) -> None:
    """Persist completed steps in the caller's transaction (outside the rolled-back SAVEPOINT)."""
    insert_ignore(conn, steps, [
        {"workflow": key.workflow, "stream": key.stream, "event_id": key.event_id, "step": name,
         "result": result, "created_at": now}
        for name, result in results.items()
    ], ["workflow", "stream", "event_id", "step"])


# ---- PostgreSQL's transaction guards ------------------------------------------------------------------

#: First key of syncd's PostgreSQL advisory locks ('sync'), so they cannot collide with other applications'.
ADVISORY_NAMESPACE = 0x73796E63


def lock_stream(conn: Connection, stream: str) -> None:
    """Serialize, until this transaction ends, the transactions that create runs for ``stream``'s events.

    Several cursors feed one stream (the live one and backfill windows), and each decides which runs are
    missing by reading the run table: without this, two of them meeting on an event already in the ledger
    could both run a workflow on it. PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do,
    ``BEGIN IMMEDIATE`` already serializes writers.
    """
    if conn.dialect.name == "postgresql":
        digest = hashlib.blake2b(stream.encode(), digest_size=4).digest()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :key)"),
                     {"space": ADVISORY_NAMESPACE, "key": int.from_bytes(digest, "big", signed=True)})


def bound_idle_time(conn: Connection, lease_seconds: float) -> None:
    """On PostgreSQL, have the server end this transaction if it sits idle for two lease lengths.

    A replica paused or cut off in the middle of a page keeps that page's row locks (its ledger rows), and
    the replica that took its expired lease over would wait on them for as long as the pause lasts; the
    paused one's commit is fenced out anyway. Two leases, not one: a live replica's keeper holds its lease
    through slow pages, so a handler may legitimately spend a while without SQL (an HTTP call). ``SET
    LOCAL`` is scoped to the transaction, so it also works through transaction-mode connection poolers.
    (SQLite has one writer at a time: nothing to bound.)
    """
    if conn.dialect.name == "postgresql":
        millis = max(1000, int(2 * lease_seconds * 1000))
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {millis}")
