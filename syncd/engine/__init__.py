"""The sync engine: for one cursor, claim it, fetch pages from it, dispatch their events to workflows,
run the due runs, release it (``ingest``). Its parts: ``pages`` (grouping, prefetch), ``runner`` (a
workflow on an event or a batch), ``lease`` (the keeper thread), ``decisions`` (pure functions),
``tracing`` (spans), ``results`` (what a tick did).
"""

from __future__ import annotations

from syncd.engine.decisions import (
    MAX_ERROR_LENGTH,
    RUN_BACKOFF_BASE,
    RUN_BACKOFF_CAP,
    check_progress,
    cursor_key,
    default_replica_id,
    error_text,
    interrupt_outcome,
    last_cursor,
    run_backoff,
    run_outcome,
    unique_events,
    window_progress,
)
from syncd.engine.ingest import SyncEngine, Target, warn_slow_page
from syncd.engine.lease import LeaseKeeper
from syncd.engine.pages import PREFETCH_AFTER_SECONDS, Pager, Prefetcher
from syncd.engine.results import PageResult, RunTally, TickResult
from syncd.engine.runner import MAX_RESUME_ROUNDS, Runner, RunScope
from syncd.settings import GROUP_EVENTS, GROUP_SECONDS

__all__ = [
    "GROUP_EVENTS", "GROUP_SECONDS", "MAX_ERROR_LENGTH", "MAX_RESUME_ROUNDS", "PREFETCH_AFTER_SECONDS",
    "RUN_BACKOFF_BASE", "RUN_BACKOFF_CAP", "LeaseKeeper", "PageResult", "Pager", "Prefetcher", "RunScope",
    "RunTally", "Runner", "SyncEngine", "Target", "TickResult", "check_progress", "cursor_key",
    "default_replica_id", "error_text", "interrupt_outcome", "last_cursor",
    "run_backoff", "run_outcome", "unique_events", "warn_slow_page", "window_progress",
]
