"""Built-in mirror workflow: every issue and pull request version into ``github_issues``, newer wins.

A version applies only if its ``updated_at`` is not older than the stored row's, so replays, backfills and
out-of-order versions never overwrite newer data. GitHub's listing never shows a deleted issue; the
reconciliation (``connectors.github.reconcile``) finds them and emits ``deleted`` or ``transferred``
events whose data is the last mirrored version: the row goes, and a tombstone at that version's
``updated_at`` keeps a stale or replayed older version from bringing it back (a newer one, such as the
issue listed again after a transfer back, still applies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.github.actions import REMOVALS
from connectors.github.client import is_pull_request
from connectors.github.tables import issues
from syncd.contracts import Event
from syncd.errors import EventError
from syncd.timefmt import parse_time, parse_time_or_none
from syncd.workflows import BatchContext, Context, Registry
from syncd.workflows.mirror import apply_snapshot, apply_snapshots

NAME = "github.mirror.issues"
VERSION = "1.0.0"


def issue_row(data: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """The ``github_issues`` row of one issue snapshot; ``EventError`` if it lacks its identity."""
    issue_id, number = data.get("id"), data.get("number")
    if not isinstance(issue_id, int) or not isinstance(number, int):
        raise EventError(f"{event.type} event {event.id} has no numeric id and number")
    user = data.get("user")
    labels = data.get("labels") or []
    updated = data.get("updated_at")
    try:
        times = {"created_at": parse_time_or_none(data.get("created_at")),
                 "updated_at": parse_time(updated) if updated else event.occurred_at,
                 "closed_at": parse_time_or_none(data.get("closed_at"))}
    except ValueError as exc:
        raise EventError(f"{event.type} event {event.id}: {exc}") from None
    return {
        "id": issue_id, "repo": event.stream.split(":", 1)[1], "number": number, "title": data.get("title"),
        "state": data.get("state"),
        "labels": [label.get("name") if isinstance(label, dict) else str(label) for label in labels],
        "author": user.get("login") if isinstance(user, dict) else None,
        "is_pull_request": is_pull_request(data), **times,
    }


def mirror(event: Event, ctx: Context) -> None:
    apply_snapshot(ctx.connection or ctx.db, issues, issue_row(event.data, event), kind=issues.name,
                   deleted=event.action in REMOVALS)


def mirror_batch(events: Sequence[Event], ctx: BatchContext) -> None:
    """``mirror`` on a page's events at once (see ``syncd.workflows.mirror.apply_snapshots``)."""
    items = [(issue_row(e.data, e), e.action in REMOVALS) for e in events]
    apply_snapshots(ctx.connection, issues, items, kind=issues.name)


def register(registry: Registry) -> None:
    from connectors.github import issues as on_issues

    registry.workflow(NAME, on=on_issues(), version=VERSION, builtin=True, batch=mirror_batch)(mirror)
