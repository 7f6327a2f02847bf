"""Read-only views of syncd's state for ``syncd status`` (human and ``--json``).

Much of what is shown comes from providers (cursors, event ids, error messages), so neither view
trusts it: stored errors lose SQL parameter dumps and URL paths and queries in both
(:func:`syncd.redaction.safe_error`); the human view shows each error as one line and escapes control
characters in every value (a provider's escape sequence cannot rewrite the terminal).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from syncd.contracts import FailedRun, Reads, SourceRow, TickRow
from syncd.ops import spanlosses
from syncd.ops.statusparts import (
    Filters,
    cursor_text,
    group_item,
    quarantine_item,
    render_groups,
    render_quarantine,
    render_retention,
    retention_item,
)
from syncd.redaction import error_summary, printable, safe_error

RUN_STATES = ("succeeded", "queued", "running", "pending", "failed", "dead", "sleeping")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _error(text: str | None) -> str | None:
    return safe_error(text) if text else text


def collect(reads: Reads, *, run_limit: int = 20, jaeger_url: str | None = None,
            filters: Filters | None = None, retention_days: int | None = None) -> dict[str, Any]:
    """The report ``syncd status --json`` prints: the cursors, the failed and dead runs (the newest, and
    grouped by error with counts), totals, what retention keeps (``retention_days``: the setting shown);
    only what ``filters`` pick. Raises ``statusparts.NoMatch`` when ``--source`` matches no cursor."""
    f = filters or Filters()
    with reads.snapshot() as snap:
        run_counts = snap.run_counts(workflow=f.workflow)
        rows = [(row, snap.last_tick(row.key)) for row in f.pick(snap.sources())]
        streams = {row.source for row, _ in rows} if f.source is not None else None
        failures = [run for run in snap.recent_failures(run_limit)
                    if (streams is None or run.stream in streams) and f.workflow in (None, run.workflow)
                    and f.status in (None, run.status)]
        groups = snap.failure_groups(run_limit, workflow=f.workflow, streams=streams, status=f.status)
        events = snap.event_count()
        held, quarantined = snap.quarantined(run_limit, streams=streams)
        queue = snap.queue(datetime.now(UTC))
        kept = snap.retention()
    return {
        "queue": {"due": queue.depth, "oldest_due_at": _iso(queue.oldest_due_at),
                  "oldest_wait_seconds": round(queue.oldest_age(datetime.now(UTC)), 3),
                  "in_flight": dict(sorted(queue.in_flight.items())), "later": queue.later},
        "sources": [_source(row, last_tick, run_counts) for row, last_tick in rows],
        "problem_runs": [_problem_run(run, jaeger_url) for run in failures],
        "problem_groups": [group_item(group, jaeger_url) for group in groups],
        "quarantined": {"total": held, "events": [quarantine_item(row) for row in quarantined]},
        "retention": retention_item(kept, retention_days),
        "budgets": _budgets(reads),
        "spans": spanlosses.status_item(reads),  # spans lost on the way to the collector, every replica
        "totals": {"events": events,
                   "runs": {s: sum(n for (_, st), n in run_counts.items() if st == s) for s in RUN_STATES}},
    }


def _budgets(reads: Reads) -> list[dict[str, Any]]:
    """Each provider credential's request budget (``syncd_budgets``; a credential is a hash, never a secret)."""
    db = getattr(reads, "db", None)
    if db is None:
        return []
    from sqlalchemy.exc import DBAPIError

    from syncd.store.budget import SqlBudgets

    try:
        found = SqlBudgets(db).all()
    except DBAPIError:  # a database not yet migrated to 0011 (status does not migrate): no budget to show
        return []
    return [{"credential": b.credential, "limit": b.limit, "remaining": b.remaining,
             "reset_at": _iso(datetime.fromtimestamp(b.reset_at, UTC)) if b.limit else None,
             "spend_per_hour": round(b.spend_per_hour), "poll_interval_seconds": round(b.interval, 1),
             "sources": b.sources,
             # a Retry-After credential (WorkOS, Stripe: no limit headers) held after a 429 until then
             "held_until": _iso(datetime.fromtimestamp(b.reset_at, UTC))
             if not b.limit and b.reset_at > time.time() else None} for b in found]


def _source(row: SourceRow, last_tick: TickRow | None, run_counts: dict[tuple[str, str], int]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "key": row.key, "source": row.source, "kind": row.kind, "state": row.state, "cursor": row.cursor,
        "events_processed": row.events_seen, "last_success_at": _iso(row.last_success_at),
        "last_error": _error(row.last_error), "last_error_at": _iso(row.last_error_at),
        "paused_until": _iso(row.paused_until), "pause_reason": _error(row.pause_reason),
        "lease_owner": row.lease_owner, "lease_expires_at": _iso(row.lease_expires_at),
        "meta": row.meta or {},
        "last_tick": None if last_tick is None else {
            "at": _iso(last_tick.started_at), "ok": last_tick.ok, "error": _error(last_tick.error),
            "lag_seconds": last_tick.lag_seconds},
    }
    if row.kind == "live":
        item["runs"] = {s: run_counts.get((row.source, s), 0) for s in RUN_STATES}
    else:
        item["window"] = {"start": _iso(row.window_start), "end": _iso(row.window_end),
                          "workflow": row.window_workflow, "progress": row.progress}
    return item


def _problem_run(run: FailedRun, jaeger_url: str | None) -> dict[str, Any]:
    trace_url = f"{jaeger_url.rstrip('/')}/trace/{run.trace_id}" if jaeger_url and run.trace_id else None
    return {"workflow": run.workflow, "stream": run.stream, "event_id": run.event_id, "status": run.status,
            "attempts": run.attempts, "next_attempt_at": _iso(run.next_attempt_at), "error": _error(run.error),
            "trace_id": run.trace_id, "event_type": run.event_type, "trace_url": trace_url}


def _shown(value: Any) -> str:
    """A value for the human view: control characters escaped."""
    return printable(str(value))


def render(report: dict[str, Any], *, limit: int = 20) -> str:
    """The human view of :func:`collect`'s report (module docstring: what it escapes and cuts)."""
    if not report["sources"]:
        return "No source has synced yet. Run `syncd once` (or `syncd demo`)."
    lines: list[str] = []
    for s in report["sources"]:
        lines += _render_source(s)
    lines += _render_queue(report.get("queue"))
    lines += render_groups(report.get("problem_groups", []), limit)
    lines += render_quarantine(report.get("quarantined"))
    lines += render_retention(report.get("retention"))
    lines += _render_budgets(report.get("budgets") or [])
    lines += spanlosses.render(report.get("spans"))
    return "\n".join(lines)


def _render_budgets(budgets: list[dict[str, Any]]) -> list[str]:
    lines = []
    for b in budgets:
        left = (f"{b['remaining']:,} of {b['limit']:,} requests left until {b['reset_at']}" if b["limit"]
                else f"rate-limited (429), no request until {b['held_until']}" if b.get("held_until")
                else "no rate limit seen yet")
        lines.append(f"budget {_shown(b['credential'])}: {left}, spending {b['spend_per_hour']:,}/h; each of its "
                     f"{b['sources']} sources polled every {b['poll_interval_seconds']:.0f}s")
    return lines


def _render_source(s: dict[str, Any]) -> list[str]:
    head = f"{_shown(s['key'])}  [{s['kind']}{', ' + _shown(s['state']) if s['state'] != 'active' else ''}]"
    lines = [head]
    lines.append(f"  cursor:              {_shown(cursor_text(s['cursor']))}")
    lines.append(f"  events processed:    {s['events_processed']}")
    lines.append(f"  last success:        {s['last_success_at'] or 'never'}")
    if "runs" in s:
        r = s["runs"]
        lines.append(f"  runs:                {r['succeeded']} succeeded, {r['failed']} failed (retrying), "
                     f"{r['dead']} dead, {r['sleeping']} sleeping, "
                     f"{r['queued'] + r['pending'] + r['running']} queued or running")
    if "window" in s:
        w = s["window"]
        pct = f"{100 * (w['progress'] or 0):.0f}%"
        only = f", workflow {_shown(w['workflow'])}" if w["workflow"] else ""
        lines.append(f"  window:              {w['start']} → {w['end']} ({pct}{only})")
    if s["paused_until"]:
        lines.append(f"  PAUSED until:        {s['paused_until']} ({error_summary(s['pause_reason'] or '')})")
    if s["last_error"]:
        lines.append(f"  last error:          {s['last_error_at']}: {error_summary(s['last_error'])}")
    for k, v in sorted(s["meta"].items()):
        lines.append(f"  {_shown(k.replace('_', ' ')) + ':':<20} {_shown(v)}")
    if s["lease_owner"]:
        lines.append(f"  lease:               {_shown(s['lease_owner'])} until {s['lease_expires_at']}")
    return lines


def _render_queue(queue: dict[str, Any] | None) -> list[str]:
    if not queue:
        return []
    flying = sum(queue["in_flight"].values())
    by_workflow = ", ".join(f"{_shown(w)}: {n}" for w, n in queue["in_flight"].items())
    line = f"run queue: {queue['due']} due now"
    if queue["due"]:
        line += f" (oldest waiting {queue['oldest_wait_seconds']:.0f}s)"
    line += f", {flying} in flight" + (f" ({by_workflow})" if by_workflow else "")
    return [line + f", {queue['later']} due later"]
