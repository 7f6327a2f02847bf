"""Deletions and transfers, which GitHub's issue listing never shows: one request per step.

The connector (``client``) runs a reconciliation as pages of its own cursor when one is due (the state
machine is ``recstate``): so its requests and events go through the engine as any page does (ledger,
runs, the page transaction that moves the cursor, fenced by the lease; one ``page.fetch`` span each,
marked ``syncd.github.reconcile``), a ``SIGKILL`` resumes from the last committed step, and it runs in
``syncd once`` as in ``syncd run``. Each step is one request:

1. **List** page k of ``GET /repos/{owner}/{repo}/issues?state=all&sort=created&direction=asc&per_page=100
   &page=k`` with the ETag page k had in the last walk (a 304 means the same issues as then). Pages are
   asked by number rather than by following ``Link`` so that each keeps its ETag from walk to walk; the
   walk ends at the page without ``rel="next"`` (or, on a 304, where the last walk ended).
2. At the end of the walk, the mirrored numbers (``github_issues``, read in batches) missing from it are
   the ones to **check**: ``GET /repos/{owner}/{repo}/issues/{number}``, one per step. 410 or 404: the issue
   was deleted; 301 (or any redirect, followed or not): it was transferred; 200: it exists (it moved
   within the listing while the walk went on, which only costs this request). A 404 is believed only once
   ``GET /repos/{owner}/{repo}`` still answers (else the repository is gone or out of reach: the tick
   fails with "repository not found" and nothing is deleted).
3. A deleted or transferred issue becomes a ``github.issue`` event with ``action`` ``deleted`` or
   ``transferred``, ``data`` the last mirrored version (``mirrorindex.as_issue``; a transferred one also
   has ``transferred_to``, the path of its new URL as the redirect gave it) and the stable id
   ``{issue id}:{action}@{updated_at}``: a replay, a repeated check or a step run again after a crash is
   the same event, which the ledger keeps once.

Rate limits: the requests go through the connector's status policy (a throttle pauses the source; the
state is kept), count in the credential's shared budget, and no step starts while the token's
remaining requests are at or below ``ratebudget.RECONCILE_RESERVE`` of its limit (the client checks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from opentelemetry import trace

from connectors.github.actions import DELETED, EVENT_TYPE, TRANSFERRED
from connectors.github.mirrorindex import MirrorIndex
from connectors.github.recstate import Rec, missing, page_text
from syncd.contracts import Event
from syncd.errors import RetryableError
from syncd.http import decode_json

#: Redirects GitHub answers for a transferred issue (301; the others are treated alike).
MOVED = frozenset({301, 302, 307, 308})
#: The answers a check expects besides errors: exists, moved, gone.
CHECK_ANSWERS = frozenset({200, 404, 410} | MOVED)


class Request(Protocol):
    """The connector's request: retried, counted in the budget, status policy applied except to ``answers``."""

    def __call__(self, path: str, *, params: list[tuple[str, str]] | None = None,
                 headers: Mapping[str, str] | None = None,
                 answers: frozenset[int] = frozenset()) -> httpx.Response: ...


def answer(response: httpx.Response) -> str | None:
    """What a ``GET …/issues/{number}`` says of the issue: ``transferred`` (a redirect anywhere in the chain,
    so whether or not the client follows it), ``deleted`` (410, 404), None (it exists). Pure."""
    if any(r.status_code in MOVED for r in (*response.history, response)):
        return TRANSFERRED
    if response.status_code in (404, 410):
        return DELETED
    return None


class Reconciler:
    """The steps of one repository's reconciliation (see the module docstring)."""

    def __init__(self, *, key: str, repo: str, every: float, mirror: MirrorIndex, request: Request,
                 clock: Callable[[], float], page_size: int) -> None:
        self.key, self.repo, self.every, self.mirror = key, repo, every, mirror
        self._request, self._clock, self._page_size = request, clock, page_size

    def step(self, rec: Rec) -> tuple[list[Event], Rec]:
        """One request of the reconciliation under way (``rec.active``): the events found and the new state."""
        span = trace.get_current_span()
        if rec.page:
            span.set_attributes({"syncd.github.reconcile": "list", "syncd.github.reconcile.page": rec.page})
            return [], self._list(rec)
        span.set_attributes({"syncd.github.reconcile": "check", "syncd.github.reconcile.left": len(rec.check)})
        return self._check(rec)

    def _list(self, rec: Rec) -> Rec:
        before = rec.previous(rec.page)
        headers = {"If-None-Match": before[0]} if before is not None and before[0] else {}
        params = [("state", "all"), ("sort", "created"), ("direction", "asc"), ("per_page", str(self._page_size)),
                  ("page", str(rec.page))]
        response = self._request(f"/repos/{self.repo}/issues", params=params, headers=headers)
        if response.status_code == 304 and before is not None:
            listed = rec.listed(rec.last[rec.page - 1], more=rec.page < len(rec.last))
        else:
            body = decode_json(self.key, response)
            if not isinstance(body, list):
                raise RetryableError(self.key, "response is not an issue list (no JSON array)")
            numbers = tuple(n for item in body if isinstance(item, dict)
                            and isinstance(n := item.get("number"), int) and not isinstance(n, bool))
            more = bool(body) and "next" in response.links
            listed = rec.listed(page_text(response.headers.get("etag"), numbers), more=more)
        if listed.page:
            return listed
        return listed.checking(missing(listed.last, self.mirror.numbers(self.repo)))

    def _check(self, rec: Rec) -> tuple[list[Event], Rec]:
        number = rec.check[0]
        response = self._request(f"/repos/{self.repo}/issues/{number}", answers=CHECK_ANSWERS)
        action = answer(response)
        if action == DELETED and response.status_code == 404:
            self._request(f"/repos/{self.repo}")  # the repository itself: a 404 here fails the tick instead
        if action is None:
            return [], rec.checked()
        issue = self.mirror.snapshot(self.repo, number)
        if issue is None:  # no longer mirrored (a newer page's delete already took it)
            return [], rec.checked()
        return [self._event(issue, action, response)], rec.checked()

    def _event(self, issue: dict[str, Any], action: str, response: httpx.Response) -> Event:
        data = dict(issue)
        if action == TRANSFERRED:
            moved = next((r for r in (*response.history, response) if r.status_code in MOVED), response)
            location = moved.headers.get("location")
            if location:  # its path only (``/repositories/{id}/issues/{number}``): a query could hold anything
                data["transferred_to"] = urlsplit(location.strip()).path[:300]
        return Event(stream=self.key, id=f"{issue['id']}:{action}@{issue['updated_at']}", type=EVENT_TYPE,
                     occurred_at=datetime.fromtimestamp(self._clock(), UTC), data=data, action=action)


__all__ = ["CHECK_ANSWERS", "MOVED", "Reconciler", "Request", "answer"]
