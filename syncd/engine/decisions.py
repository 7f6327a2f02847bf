"""The engine's decisions as plain functions: no I/O, no clock of their own; tested by tables."""

from __future__ import annotations

import math
import socket
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from syncd.contracts import Event, Page, RunStatus, Window
from syncd.errors import CursorStuckError, FatalError, LeaseLostError, RetryableError
from syncd.redaction import safe_error
from syncd.workflows.steps import Checkpoint, Interrupt, Sleep

#: Backoff of failed workflow runs: base × 2^(attempt-1), capped.
RUN_BACKOFF_BASE = timedelta(seconds=30)
RUN_BACKOFF_CAP = timedelta(hours=1)
#: The longest pause a provider's wait can impose on a source: a rate-limit reset years away (or beyond what
#: a datetime holds) is a provider fault, not a reason to stop a source for good. One hour is GitHub's own
#: rate-limit window; the next tick after the pause asks again.
MAX_PAUSE = timedelta(hours=1)
MAX_ERROR_LENGTH = 2000


def cursor_key(source: str, window: Window | None, workflow: str | None = None) -> str:
    if window is None:
        return source
    key = f"{source}@{int(window.start.timestamp() * 1000)}-{int(window.end.timestamp() * 1000)}"
    return f"{key}/{workflow}" if workflow else key


def check_progress(source: str, cursor: str | None, page: Page) -> None:
    """The loop guard: a page that promises more must move the cursor."""
    if page.has_more and (page.next_cursor is None or page.next_cursor == cursor):
        raise CursorStuckError(source, cursor)


def last_cursor(cursor: str | None, pages: Sequence[Page]) -> str | None:
    """The cursor after ``pages`` (a page without a next cursor leaves it where it was)."""
    for page in reversed(pages):
        if page.next_cursor is not None:
            return page.next_cursor
    return cursor


def unique_events(events: Iterable[Event]) -> list[Event]:
    """Drop repeats of an event id within one page, keeping the first."""
    events = list(events)
    if len({event.id for event in events}) == len(events):
        return events  # the usual case, found without a Python-level loop of look-ups and appends
    seen: set[str] = set()
    out = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            out.append(event)
    return out


def run_outcome(error: str | None, attempt: int, max_attempts: int,
                now: datetime) -> tuple[RunStatus, datetime | None]:
    """(status, next attempt time) after an attempt: succeeded, failed (retry later) or dead."""
    if error is None:
        return RunStatus.SUCCEEDED, None
    if attempt >= max_attempts:
        return RunStatus.DEAD, None
    return RunStatus.FAILED, now + run_backoff(attempt)


def interrupt_outcome(interrupt: Interrupt, attempt: int, max_attempts: int,
                      now: datetime) -> tuple[dict[str, Any], RunStatus, datetime | None, str | None]:
    """What a step checkpoint or a sleep leaves: (step results to store, status, next attempt, error)."""
    if isinstance(interrupt, Sleep):
        stored = {interrupt.name: interrupt.new} if interrupt.new is not None else {}
        return stored, RunStatus.SLEEPING, interrupt.wake_at, None
    assert isinstance(interrupt, Checkpoint)
    if interrupt.error is not None:
        status, next_at = run_outcome(interrupt.error, attempt, max_attempts, now)
        return interrupt.results, status, next_at, interrupt.error
    return interrupt.results, RunStatus.PENDING, now, None


def run_backoff(attempt: int) -> timedelta:
    # The exponent is capped first: 2 ** (attempt - 1) seconds overflow a timedelta from about attempt 60.
    delay: timedelta = RUN_BACKOFF_BASE * (2 ** min(max(attempt - 1, 0), 32))
    return min(delay, RUN_BACKOFF_CAP)


def window_progress(window: Window, reached: datetime) -> float:
    span = (window.end - window.start).total_seconds()
    return min(1.0, max(0.0, (reached - window.start).total_seconds() / span)) if span > 0 else 1.0


def pause_of(exc: BaseException, now: datetime) -> tuple[datetime | None, str | None]:
    """(paused until, why) after a tick failed with ``exc``: a provider's Retry-After pauses the source.

    Never longer than ``MAX_PAUSE``; a longer (or non-finite) wait is capped and the reason says so. Never
    raises: it runs while a tick's failure is being recorded, where an exception would end the whole pass.
    """
    wait = exc.retry_after if isinstance(exc, RetryableError) else None
    if wait is None or not wait > 0:  # also False for NaN
        return None, None
    reason = safe_error(str(exc))
    if not math.isfinite(wait) or wait > MAX_PAUSE.total_seconds():
        return now + MAX_PAUSE, f"{reason} [pause capped at {_hours(MAX_PAUSE)}: the provider asked for {wait:.6g}s]"
    return now + timedelta(seconds=wait), reason


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}h"


def error_text(exc: BaseException) -> str:
    """The error as syncd stores and logs it: SQL parameter dumps cut and URLs redacted at the source
    (``syncd.redaction.safe_error``), so a user's own exception text cannot put a secret or a payload
    value into ``syncd_runs.last_error``."""
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, (RetryableError, FatalError, CursorStuckError, LeaseLostError)):
        text = f"{type(exc).__name__}: {text}"
    return safe_error(text)[:MAX_ERROR_LENGTH]


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
