"""The parts of ``syncd status`` that keep it readable at scale: filters (``--source``, ``--workflow``,
``--status``), provider cursors summarised for people, and failed runs grouped by error with counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from syncd.contracts import SourceRow
from syncd.contracts.reads import FailureGroup, QuarantineRow, RetentionState
from syncd.redaction import error_summary, printable, safe_error

#: Run states ``--status`` may pick (those ``syncd status`` lists run by run).
PROBLEM_STATES = ("failed", "dead")


class NoMatch(Exception):
    """A filter that matches no cursor: a usage error (exit 2) with a one-line message."""


@dataclass(frozen=True)
class Filters:
    """What ``syncd status`` shows: cursors of ``source`` (a key, or a provider name for all its sources),
    runs of ``workflow``, run lists of one ``status``. None: everything, except backfill windows finished
    more than a day ago (``everything``: those too)."""

    source: str | None = None
    workflow: str | None = None
    status: str | None = None
    everything: bool = False  # --all: backfill windows finished long ago too (``SourceRow.retired``)

    def wants(self, row: SourceRow, now: datetime) -> bool:
        if self.source is None:
            return self.everything or not row.retired(now)
        if self.source == row.key:  # a window named by its key is shown however old
            return True
        return (self.everything or not row.retired(now)) and self.source in (row.source, row.source.split(":", 1)[0])

    def pick(self, rows: list[SourceRow], now: datetime | None = None) -> list[SourceRow]:
        """The rows wanted at ``now``; NoMatch naming the known sources when a ``--source`` matches none."""
        at = now or datetime.now(UTC)
        chosen = [row for row in rows if self.wants(row, at)]
        if self.source is not None and not chosen:
            known = ", ".join(sorted({row.source for row in rows})) or "none yet"
            raise NoMatch(f"no source matches --source {self.source!r} (sources: {known})")
        return chosen


# ---- cursors ------------------------------------------------------------------------------------------

_NAMED = {"since": "since {}", "next": "following a next-page link", "etag": "ETag kept (idle polls are free)"}


def cursor_text(cursor: str | None, limit: int = 96) -> str:
    """A cursor as people read it. Opaque strings (WorkOS event ids) as they are, cut at ``limit``; a JSON
    object (GitHub's ``{"v":1,"since":…,"seen":{…},"next":…,"etag":…}``) as its parts: values, the size
    of collections, and that a link or an ETag is held (not the link itself). ``--json`` keeps it whole."""
    if not cursor:
        return "(start)"
    try:
        body = json.loads(cursor)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return cursor if len(cursor) <= limit else f"{cursor[:limit]}… ({len(cursor)} chars; --json shows it all)"
    parts = [part for key, value in body.items() if (part := _cursor_part(key, value))]
    return " · ".join(parts) or "(start)"


def _cursor_part(key: str, value: Any) -> str | None:
    if key in ("v", "version") or value in (None, "", [], {}):
        return None
    if isinstance(value, dict):
        n = sum(len(v) if isinstance(v, list) else 1 for v in value.values())
        return f"{key}: {n} entr{'y' if n == 1 else 'ies'}"
    if isinstance(value, list):
        return f"{key}: {len(value)} item{'' if len(value) == 1 else 's'}"
    if key in _NAMED:
        return _NAMED[key].format(value)
    text = str(value)
    return f"{key} {text if len(text) <= 40 else text[:40] + '…'}"


# ---- failed runs, grouped -----------------------------------------------------------------------------


def group_item(group: FailureGroup, jaeger_url: str | None) -> dict[str, Any]:
    """One group of ``syncd status --json``'s ``problem_groups``."""
    run = group.example
    trace_url = f"{jaeger_url.rstrip('/')}/trace/{run.trace_id}" if jaeger_url and run.trace_id else None
    return {"workflow": group.workflow, "status": group.status, "error": safe_error(group.error or ""),
            "runs": group.runs,
            "example": {"stream": run.stream, "event_id": run.event_id, "event_type": run.event_type,
                        "attempts": run.attempts,
                        "next_attempt_at": run.next_attempt_at.isoformat() if run.next_attempt_at else None,
                        "trace_id": run.trace_id, "trace_url": trace_url}}


def render_groups(groups: list[dict[str, Any]], limit: int) -> list[str]:
    """The text of the grouped failures: the newest run of each group, then how many more share its error."""
    if not groups:
        return []
    lines = ["", "Failed and dead runs, grouped by error (largest group first):"]
    for g in groups:
        run = g["example"]
        when = f", next try {run['next_attempt_at']}" if g["status"] == "failed" and run["next_attempt_at"] else ""
        lines.append(f"  {g['status']:<6} {printable(g['workflow'])} ← {printable(run['stream'])} "
                     f"{printable(run['event_id'])} (attempt {run['attempts']}{when}): {error_summary(g['error'])}")
        if g["runs"] > 1:
            lines.append(f"         … and {g['runs'] - 1} more like it")
        if run.get("trace_url"):
            lines.append(f"         trace: {printable(run['trace_url'])}")
    if len(groups) >= limit:
        lines.append(f"  (the {limit} largest groups; narrow with --source, --workflow or --status)")
    return lines


def quarantine_item(row: QuarantineRow) -> dict[str, Any]:
    """A quarantined event for ``--json``: its id and why, never its payload (personal data)."""
    return {"stream": row.stream, "event_id": row.event_id, "reason": row.reason,
            "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
            "first_seen_at": row.first_seen_at.isoformat(), "last_seen_at": row.last_seen_at.isoformat(),
            "times_seen": row.times_seen}


def render_quarantine(held: dict[str, Any] | None) -> list[str]:
    """The text of the quarantined events: each by id with its reason, and how to fetch them again."""
    if not held or not held["total"]:
        return []
    lines = ["", f"Quarantined events ({held['total']}; their streams went on without them):"]
    for item in held["events"]:
        when = f" at {item['occurred_at']}" if item["occurred_at"] else ""
        lines.append(f"  {printable(item['stream'])} {printable(item['event_id'] or '(no id)')}{when}: "
                     f"{error_summary(item['reason'])}")
    if held["total"] > len(held["events"]):
        lines.append(f"  … and {held['total'] - len(held['events'])} more (syncd status --json)")
    lines.append("  after a fix, fetch them again: syncd cursor reset SOURCE --to TIME (before the first)")
    return lines


# ---- retention ----------------------------------------------------------------------------------------


def retention_item(state: RetentionState, days: int | None) -> dict[str, Any]:
    """What retention keeps, for ``--json``: per stream its horizon, events and oldest event; the size."""
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"days": days, "used_bytes": state.used_bytes, "free_bytes": state.free_bytes,
            "returns_space": state.returns_space, "last_prune_at": iso(state.last_prune_at),
            "next_prune_at": iso(state.next_prune_at), "last_prune": state.last_prune,
            "streams": [{"stream": s.stream, "horizon": iso(s.horizon), "events": s.events, "oldest": iso(s.oldest)}
                        for s in state.streams]}


def render_retention(item: dict[str, Any] | None) -> list[str]:
    """The text of ``retention_item``."""
    if not item:
        return []
    days = f"{item['days']} days (SYNCD_RETENTION_DAYS)" if item["days"] else "SYNCD_RETENTION_DAYS"
    last = item["last_prune_at"] or "never"
    lines = ["", f"Retention: {days}; last prune {last}"
                 + (f", next after {item['next_prune_at']}" if item["next_prune_at"] else "")]
    size = f"  database: {item['used_bytes'] / 1_000_000:.1f} MB"
    if item["free_bytes"]:
        size += f" ({item['free_bytes'] / 1_000_000:.1f} MB free inside)"
    if not item["returns_space"]:
        size += "; this SQLite file does not shrink when pruned (run `syncd prune --vacuum` once)"
    lines.append(size)
    for s in item["streams"]:
        horizon = f"history up to {s['horizon']} pruned" if s["horizon"] else "nothing pruned yet"
        lines.append(f"  {printable(s['stream'])}: {s['events']} events kept (oldest {s['oldest'] or '-'}), {horizon}")
    return lines
