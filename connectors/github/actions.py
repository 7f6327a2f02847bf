"""GitHub issue snapshots → events: reading a listed issue, and the action a version stands for."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.github.cursor import canonical_second

EVENT_TYPE = "github.issue"
#: Found by reconciliation (``connectors.github.reconcile``), never by the listing: the issue is gone.
DELETED, TRANSFERRED = "deleted", "transferred"
REMOVALS = frozenset({DELETED, TRANSFERRED})
ACTIONS = frozenset({"opened", "edited", "closed", "reopened"}) | REMOVALS
_MEMORY_LIMIT = 100_000

#: What ``derive_action`` remembers of an older version of an issue: ``(state, state_reason)``.
Previous = tuple[str | None, str | None]


def derive_action(issue: Mapping[str, Any], updated: str, previous: Previous | None) -> str:
    """The action a version stands for, from its snapshot and, when this process has seen an older version
    of the issue, that version's ``(state, state_reason)``. No ledger is read; pure.

    - ``opened``: ``created_at == updated_at`` — GitHub stamps both at creation, so this is the first version.
    - ``closed``: now closed and either ``closed_at == updated_at`` (the close is what changed) or the
      older version seen was open.
    - ``reopened``: now open and either the older version seen was closed, or the snapshot says
      ``state_reason == "reopened"`` and the older version seen did not (none seen counts as "did not").
      GitHub keeps that reason until the next close, so after a restart the first later edit of a reopened
      issue is reported ``reopened`` once more: a reopen is never reported as a mere edit.
    - ``edited``: anything else.
    """
    state, reason = issue.get("state"), issue.get("state_reason")
    if _second_or_none(issue.get("created_at")) == updated:
        return "opened"
    was_state, was_reason = previous if previous is not None else (None, None)
    if state == "closed" and (was_state == "open" or _second_or_none(issue.get("closed_at")) == updated):
        return "closed"
    if state == "open" and (was_state == "closed" or (reason == "reopened" and was_reason != "reopened")):
        return "reopened"
    return "edited"


def _second_or_none(value: Any) -> str | None:
    try:
        return canonical_second(value) if value else None
    except ValueError:
        return None


@dataclass
class StateMemory:
    """The last version of each issue this process turned into an event: ``id → (updated, previous,
    action)``. Lets ``derive_action`` see state changes, and gives a re-fetched version (after a rolled
    back page) the same action. Bounded: the oldest entries go first. Lost on restart, by design."""

    limit: int = _MEMORY_LIMIT
    _last: dict[int, tuple[str, Previous, str]] = field(default_factory=dict)

    def action(self, issue_id: int, issue: Mapping[str, Any], updated: str) -> str:
        known = self._last.get(issue_id)
        if known is not None and known[0] == updated:
            return known[2]
        if known is not None and known[0] > updated:  # an older version (a backfill): the snapshot alone
            return derive_action(issue, updated, None)
        action = derive_action(issue, updated, known[1] if known else None)
        self._last.pop(issue_id, None)
        self._last[issue_id] = (updated, (issue.get("state"), issue.get("state_reason")), action)
        if len(self._last) > self.limit:
            del self._last[next(iter(self._last))]
        return action


def parse_issue(raw: Any) -> tuple[int, str]:
    """``(id, canonical updated_at)`` of a listed issue; ``ValueError`` names what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"issue is not an object: {type(raw).__name__}")
    issue_id = raw.get("id")
    if not isinstance(issue_id, int) or isinstance(issue_id, bool):
        raise ValueError(f"issue #{raw.get('number')} has no numeric id")
    try:
        return issue_id, canonical_second(raw.get("updated_at"))
    except ValueError as exc:
        raise ValueError(f"issue {issue_id}: updated_at {exc}") from None



def is_pull_request(issue: Mapping[str, Any]) -> bool:
    """GitHub lists pull requests as issues carrying a ``pull_request`` key."""
    return issue.get("pull_request") is not None


def valid_actions(actions: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(actions)
    unknown = chosen - ACTIONS
    if unknown:
        close = [m for u in sorted(unknown) for m in difflib.get_close_matches(u, sorted(ACTIONS), n=1)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"unknown GitHub issue action(s) {sorted(unknown)}; "
                         f"expected some of {sorted(ACTIONS)}{hint}")
    return chosen




__all__ = ["ACTIONS", "DELETED", "EVENT_TYPE", "REMOVALS", "TRANSFERRED", "Previous", "StateMemory", "derive_action",
           "is_pull_request", "parse_issue", "valid_actions"]
