"""An empty end of a tick (an idle poll's 304): nothing to record, so no page transaction of its own.

Its cursor move and meta (the provider's rate-limit headers, notes) are held on the lease and written by
the lease's release, in the same UPDATE and fenced the same way as a page's (``Lease.advance_on_release``):
one write transaction less per idle tick (bench/README.md, "G: many sources"). A crash before the release
loses nothing: the cursor stays where it was, and the empty page is read again.
"""

from __future__ import annotations

from syncd.contracts import Lease
from syncd.engine.decisions import last_cursor
from syncd.engine.pages import Group
from syncd.engine.results import PageResult, RunTally


def empty_end(group: Group) -> bool:
    """Whether ``group`` has nothing to record (no events, no quarantined or skipped ones) and no page after it."""
    return not group[-1][1].has_more and not any(page.events or page.quarantined or page.skipped
                                                 for _, page in group)


def hold_for_release(lease: Lease, group: Group) -> PageResult:
    """Hold ``group``'s cursor move and meta for the lease's release; what the tick reports of it."""
    pages = [page for _, page in group]
    lease.advance_on_release(last_cursor(None, pages), next((p.meta for p in reversed(pages) if p.meta), None))
    return PageResult(pages=len(group), events=0, new_events=0, skipped=0, runs=RunTally(), lag_seconds=None)
