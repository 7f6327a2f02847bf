"""The run queue on ``syncd_runs``: workers claim due runs, renew their claims, and finish them, fenced.

A run row is its own queue entry (no second table, no broker): a page transaction inserts it ``queued``
and due now; a worker claims it by setting ``running``, its ``claim_owner``, a new ``claim_token`` and a
``claimed_until``; the transaction that commits the run's effects ends the claim with the run's new status,
only while the token is still the one it claimed (``finish``), so a worker that lost its claim (frozen past
its expiry, taken over) commits nothing. Claims die with their owner: each worker pool holds an owner lock
(``syncd.store.owners``) for its life, and a ``running`` run whose owner's lock is free, or whose claim
expired, is due again at once.

On PostgreSQL many replicas claim at the same time: ``SELECT … FOR UPDATE OF syncd_runs SKIP LOCKED``
hands each due run to one of them, without waiting; a workflow with a concurrency limit is claimed under a
transaction-scoped advisory lock of its own, so two replicas cannot both fill its last slot. On SQLite one
writer at a time holds the file: the same statements, serialised by ``BEGIN IMMEDIATE``.

Order: runs with a ``run_key`` (the workflow's ``key=``) are claimable only when no earlier run (``seq``) of
the same workflow and key is still open, so they run one at a time, in the order their events arrived.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.contracts import DUE_STATUSES, OPEN_STATUSES, ClaimedRun, DueRun, RunRecord, RunStatus
from syncd.store.ledger import event_from_ledger, run_row
from syncd.store.tables import events, runs

#: First key of the queue's PostgreSQL advisory locks ('runq'): one per concurrency-limited workflow.
QUEUE_NAMESPACE = 0x72756E71
#: The notification channel a page transaction signals when it enqueues runs (``LISTEN syncd_runs``).
CHANNEL = "syncd_runs"

_DUE = [s.value for s in DUE_STATUSES]
_OPEN = [s.value for s in OPEN_STATUSES]
_RUNNING = RunStatus.RUNNING.value


def owner_lock_key(owner: str) -> str:
    """The owner lock (``syncd.store.owners``) a worker pool holds while it lives."""
    return f"worker:{owner}"


def claim(conn: Connection, *, owner: str, now: datetime, lease_seconds: float, limit: int,
          workflows: Collection[str], limited: Mapping[str, int], dead_owners: Collection[str],
          stream: str | None = None) -> list[ClaimedRun]:
    """Claim up to ``limit`` due runs of ``workflows`` (of ``stream`` only, if given) for ``owner``, earliest
    due first.

    ``limited``: workflows with a concurrency limit (at most N running at once across every owner);
    ``dead_owners``: owners known gone, whose ``running`` runs are due again (as are expired claims).
    """
    free = [w for w in workflows if w not in limited]
    chosen: list[sa.RowMapping] = []
    if free:
        chosen.extend(_candidates(conn, free, now, dead_owners, limit, stream))
    for workflow, most in sorted(limited.items()):
        if workflow not in workflows or len(chosen) >= limit:
            continue
        _lock_workflow(conn, workflow)
        room = most - _in_flight(conn, workflow, now, dead_owners)
        if room > 0:
            chosen.extend(_candidates(conn, [workflow], now, dead_owners, min(room, limit - len(chosen)), stream))
    until = now + timedelta(seconds=lease_seconds)
    claimed: list[ClaimedRun] = []
    for row in chosen[:limit]:
        due = DueRun(row["workflow"], event_from_ledger(row["stream"], row), RunStatus(row["status"]),
                     int(row["attempts"]))
        token = int(row["claim_token"]) + 1
        conn.execute(_claim_statement(), {
            "w": due.workflow, "s": due.event.stream, "e": due.event.id, "old": row["claim_token"],
            "token": token, "owner": owner, "until": until, "attempts": due.next_attempt})
        due_at = None if due.status is RunStatus.RUNNING else row["next_attempt_at"]
        claimed.append(ClaimedRun(due, token, due_at, row["run_key"], row["trace_id"]))
    return claimed


def _candidates(conn: Connection, workflows: Collection[str], now: datetime, dead_owners: Collection[str],
                limit: int, stream: str | None) -> list[sa.RowMapping]:
    """The first ``limit`` claimable runs, earliest due first: due ones, and running ones whose claim
    expired or whose owner died. Two queries, so that each reads an index range and stops at its limit
    (one query with an OR of both had to sort every open run on every claim: O(n^2) over a backlog)."""
    postgres = conn.dialect.name == "postgresql"
    params: dict[str, Any] = {"names": sorted(workflows), "now": now, "lim": limit, "stream": stream,
                              "dead": sorted(dead_owners)}
    found = list(conn.execute(_candidate_statement(False, stream is not None, bool(dead_owners), postgres),
                              params).mappings())
    found += conn.execute(_candidate_statement(True, stream is not None, False, postgres), params).mappings()
    found.sort(key=lambda r: (r["next_attempt_at"] or now, r["seq"] or 0, r["event_id"]))
    return found[:limit]


@functools.cache
def _candidate_statement(due: bool, by_stream: bool, dead: bool, postgres: bool) -> Any:
    """Built once per shape (building and cache-keying the statement cost more than running it)."""
    earlier = runs.alias("earlier")
    blocked = sa.exists().where(earlier.c.workflow == runs.c.workflow, earlier.c.run_key == runs.c.run_key,
                                earlier.c.seq < runs.c.seq, earlier.c.status.in_(_OPEN))
    names: Any = sa.bindparam("names", expanding=True)
    if due:
        # ``status || ''`` and ``workflow || ''``: terms no index can serve (SQLite's documented way is a
        # unary ``+``, which PostgreSQL lacks), so the planner walks ix_syncd_runs_due in the ORDER BY's
        # order and stops at the limit, instead of gathering every open run by status or workflow and
        # sorting them all (what SQLite chose otherwise: O(backlog) per claim).
        where = [runs.c.workflow.concat("").in_(names), runs.c.next_attempt_at <= sa.bindparam("now"),
                 runs.c.status.concat("").in_(_DUE)]
    else:
        reclaim = [runs.c.claimed_until < sa.bindparam("now")]
        if dead:
            reclaim.append(runs.c.claim_owner.in_(sa.bindparam("dead", expanding=True)))
        where = [runs.c.workflow.in_(names), runs.c.status == _RUNNING, sa.or_(*reclaim)]
    if by_stream:
        where.append(runs.c.stream == sa.bindparam("stream"))
    query = (
        sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id, runs.c.status, runs.c.attempts,
                  runs.c.claim_token, runs.c.next_attempt_at, runs.c.run_key, runs.c.seq, runs.c.trace_id,
                  events.c.type, events.c.action, events.c.occurred_at, events.c.payload)
        .join(events, sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id))
        .where(*where, sa.or_(runs.c.run_key.is_(None), ~blocked))
        .order_by(runs.c.next_attempt_at, runs.c.seq, runs.c.event_id)
        .limit(sa.bindparam("lim"))
    )
    return query.with_for_update(skip_locked=True, of=runs) if postgres else query


def _in_flight(conn: Connection, workflow: str, now: datetime, dead_owners: Collection[str]) -> int:
    clauses = [runs.c.workflow == workflow, runs.c.status == _RUNNING, runs.c.claimed_until >= now]
    if dead_owners:
        clauses.append(runs.c.claim_owner.not_in(sorted(dead_owners)))
    return int(conn.execute(sa.select(sa.func.count()).where(*clauses)).scalar_one())


def _lock_workflow(conn: Connection, workflow: str) -> None:
    """PostgreSQL: until this transaction ends, no other claim of ``workflow`` (its slots are counted then
    filled here). SQLite: ``BEGIN IMMEDIATE`` already serialises every claim."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.blake2b(workflow.encode(), digest_size=4).digest()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :key)"),
                     {"space": QUEUE_NAMESPACE, "key": int.from_bytes(digest, "big", signed=True)})


def _pk(table: Any = runs) -> Any:
    return sa.and_(table.c.workflow == sa.bindparam("w"), table.c.stream == sa.bindparam("s"),
                   table.c.event_id == sa.bindparam("e"))


@functools.cache
def _claim_statement() -> Any:
    return sa.update(runs).where(_pk(), runs.c.claim_token == sa.bindparam("old")).values(
        status=_RUNNING, attempts=sa.bindparam("attempts"), claim_owner=sa.bindparam("owner"),
        claim_token=sa.bindparam("token"), claimed_until=sa.bindparam("until"))


#: What finishing an attempt writes (its key, first start, key and order stay).
_FINISHED = ("status", "attempts", "next_attempt_at", "last_error", "trace_id", "finished_at", "duration_ms",
             "workflow_version")


def finish(conn: Connection, claimed: ClaimedRun, record: RunRecord) -> bool:
    """End ``claimed``'s claim with ``record``'s state, in the caller's transaction (the one holding the
    run's effects). False, and nothing written, if the claim is no longer ours (the caller rolls back)."""
    row = run_row(record)
    values = {k: row[k] for k in _FINISHED}
    result = conn.execute(
        sa.update(runs).where(_pk(), runs.c.claim_token == claimed.token, runs.c.status == _RUNNING)
        .values(**values, claimed_until=None),  # claim_owner stays: who ran it last (status, dashboard)
        {"w": record.workflow, "s": record.stream, "e": record.event_id})
    return result.rowcount == 1


def hold(conn: Connection, claimed: ClaimedRun, until: datetime) -> bool:
    """Check ``claimed`` is still ours and push its expiry to ``until`` (before a step's result is stored)."""
    key = claimed.key
    result = conn.execute(
        sa.update(runs).where(_pk(), runs.c.claim_token == claimed.token, runs.c.status == _RUNNING)
        .values(claimed_until=until), {"w": key.workflow, "s": key.stream, "e": key.event_id})
    return result.rowcount == 1


def renew(conn: Connection, claims: Collection[ClaimedRun], until: datetime) -> int:
    """Push the expiry of ``claims`` (those still held) to ``until``; how many were."""
    return sum(hold(conn, claimed, until) for claimed in claims)


def running_owners(conn: Connection) -> set[str]:
    """The owners with runs in flight (or that died with runs in flight)."""
    return {r[0] for r in conn.execute(sa.select(runs.c.claim_owner).where(runs.c.status == _RUNNING)
                                       .distinct()) if r[0] is not None}


def next_due(conn: Connection, workflows: Collection[str]) -> datetime | None:
    """The earliest time a run of ``workflows`` is due (queued, retry, step, wake-up) or a claim expires."""
    names = sorted(workflows)
    if not names:
        return None
    due_statement, expiry_statement = _next_due_statements()  # asked every second by every idle worker pool
    due = conn.execute(due_statement, {"names": names}).scalar_one()
    expiry = conn.execute(expiry_statement, {"names": names}).scalar_one()
    return min((t for t in (due, expiry) if t is not None), default=None)


@functools.cache
def _next_due_statements() -> tuple[Any, Any]:
    names: Any = sa.bindparam("names", expanding=True)
    # ``IS NOT NULL`` changes no answer (min skips NULLs) but states it for SQLite, whose planner does not infer
    # it from min() as PostgreSQL's does: it may then use the partial ix_syncd_runs_due (migration 0017).
    return (sa.select(sa.func.min(runs.c.next_attempt_at)).where(runs.c.workflow.in_(names), runs.c.status.in_(_DUE),
                                                                 runs.c.next_attempt_at.is_not(None)),
            sa.select(sa.func.min(runs.c.claimed_until)).where(runs.c.workflow.in_(names), runs.c.status == _RUNNING))


def due_count(conn: Connection, workflows: Collection[str], now: datetime, stream: str | None = None) -> int:
    """How many runs of ``workflows`` (of ``stream``, if given) are due at ``now`` or in flight."""
    clauses = [runs.c.workflow.in_(sorted(workflows)),
               sa.or_(sa.and_(runs.c.status.in_(_DUE), runs.c.next_attempt_at <= now), runs.c.status == _RUNNING)]
    if stream is not None:
        clauses.append(runs.c.stream == stream)
    return int(conn.execute(sa.select(sa.func.count()).where(*clauses)).scalar_one())


def notify(conn: Connection) -> None:
    """PostgreSQL: wake the listening workers when this transaction commits (a no-op elsewhere)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
