"""Read-only views of syncd's state for ``syncd status`` (human and ``--json``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd import store
from syncd.store.db import reading
from syncd.store.tables import events, runs, ticks


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def collect(db: Engine, *, run_limit: int = 20, jaeger_url: str | None = None) -> dict[str, Any]:
    with reading(db) as conn:
        run_counts: dict[tuple[str, str], int] = {
            (r.stream, r.status): int(r.n)
            for r in conn.execute(sa.select(runs.c.stream, runs.c.status, sa.func.count().label("n"))
                                  .group_by(runs.c.stream, runs.c.status))
        }
        out_sources = []
        for row in store.all_sources(conn):
            last_tick = conn.execute(
                sa.select(ticks.c.started_at, ticks.c.ok, ticks.c.error, ticks.c.lag_seconds)
                .where(ticks.c.source == row.key).order_by(ticks.c.id.desc()).limit(1)
            ).first()
            stream = row.source
            item: dict[str, Any] = {
                "key": row.key, "source": row.source, "kind": row.kind, "state": row.state, "cursor": row.cursor,
                "events_processed": row.events_seen, "last_success_at": _iso(row.last_success_at),
                "last_error": row.last_error, "last_error_at": _iso(row.last_error_at),
                "paused_until": _iso(row.paused_until), "pause_reason": row.pause_reason,
                "lease_owner": row.lease_owner, "lease_expires_at": _iso(row.lease_expires_at),
                "meta": row.meta or {},
                "last_tick": None if last_tick is None else {
                    "at": _iso(last_tick.started_at), "ok": last_tick.ok, "error": last_tick.error,
                    "lag_seconds": last_tick.lag_seconds},
            }
            if row.kind == "live":
                item["runs"] = {s: run_counts.get((stream, s), 0) for s in ("succeeded", "failed", "dead", "sleeping")}
            else:
                item["window"] = {"start": _iso(row.window_start), "end": _iso(row.window_end),
                                  "workflow": row.window_workflow, "progress": row.progress}
            out_sources.append(item)
        problem_runs = [
            {"workflow": r.workflow, "stream": r.stream, "event_id": r.event_id, "status": r.status,
             "attempts": r.attempts, "next_attempt_at": _iso(r.next_attempt_at), "error": r.last_error,
             "trace_id": r.trace_id, "event_type": r.type,
             "trace_url": f"{jaeger_url.rstrip('/')}/trace/{r.trace_id}" if jaeger_url and r.trace_id else None}
            for r in conn.execute(
                sa.select(runs, events.c.type)
                .join(events, sa.and_(events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id),
                      isouter=True)
                .where(runs.c.status.in_(("failed", "dead")))
                .order_by(runs.c.status.desc(), runs.c.finished_at.desc()).limit(run_limit))
        ]
        totals = {
            "events": conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one(),
            "runs": {s: sum(n for (_, st), n in run_counts.items() if st == s)
                     for s in ("succeeded", "failed", "dead", "sleeping")},
        }
    return {"sources": out_sources, "problem_runs": problem_runs, "totals": totals}


def short(text: str, limit: int = 96) -> str:
    """Long opaque cursors (GitHub's JSON) cut for people; ``--json`` keeps them whole."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars; --json shows it all)"


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if not report["sources"]:
        return "No source has synced yet. Run `syncd once` (or `syncd demo`)."
    for s in report["sources"]:
        head = f"{s['key']}  [{s['kind']}{', ' + s['state'] if s['state'] != 'active' else ''}]"
        lines.append(head)
        lines.append(f"  cursor:              {short(s['cursor']) if s['cursor'] else '(start)'}")
        lines.append(f"  events processed:    {s['events_processed']}")
        lines.append(f"  last success:        {s['last_success_at'] or 'never'}")
        if "runs" in s:
            r = s["runs"]
            lines.append(f"  runs:                {r['succeeded']} succeeded, {r['failed']} failed (retrying), "
                         f"{r['dead']} dead, {r['sleeping']} sleeping")
        if "window" in s:
            w = s["window"]
            pct = f"{100 * (w['progress'] or 0):.0f}%"
            only = f", workflow {w['workflow']}" if w["workflow"] else ""
            lines.append(f"  window:              {w['start']} → {w['end']} ({pct}{only})")
        if s["paused_until"]:
            lines.append(f"  PAUSED until:        {s['paused_until']} ({s['pause_reason']})")
        if s["last_error"]:
            lines.append(f"  last error:          {s['last_error_at']}: {s['last_error']}")
        for k, v in sorted(s["meta"].items()):
            lines.append(f"  {k.replace('_', ' ') + ':':<20} {v}")
        if s["lease_owner"]:
            lines.append(f"  lease:               {s['lease_owner']} until {s['lease_expires_at']}")
    if report["problem_runs"]:
        lines.append("")
        lines.append("Failed and dead runs (newest first):")
        for r in report["problem_runs"]:
            when = f", next try {r['next_attempt_at']}" if r["status"] == "failed" and r["next_attempt_at"] else ""
            lines.append(f"  {r['status']:<6} {r['workflow']} ← {r['stream']} {r['event_id']} "
                         f"(attempt {r['attempts']}{when}): {r['error']}")
            if r.get("trace_url"):
                lines.append(f"         trace: {r['trace_url']}")
    return "\n".join(lines)
