"""What a page transaction writes for a run it hands to the workers: a ``queued`` run row, due now."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from syncd.contracts import Event, RunRecord, RunStatus
from syncd.engine.decisions import error_text
from syncd.workflows import Workflow

_lock = threading.Lock()
_last = 0

#: Longest ``key=`` value kept (the column's width); a longer one is cut, which only merges keys.
MAX_KEY_LENGTH = 200


def next_seq(count: int) -> int:
    """Reserve ``count`` order numbers; returns the one before the first. Microseconds since the epoch, and
    never less than the last one handed out in this process: pages of one stream get increasing numbers even
    when the clock steps back. (Across replicas, a stream's consecutive pages are committed by one lease
    holder at a time; only a clock skew larger than a lease takeover could misorder them.)"""
    global _last
    with _lock:
        first = max(time.time_ns() // 1000, _last + 1)
        _last = first + count
        return first - 1


def queued_run(wf: Workflow, event: Event, now: datetime, seq: int) -> RunRecord:
    """The run row of ``wf`` on ``event`` for the workers: due now, no attempt yet, with its ``key=`` value.

    A ``key=`` function that raises cannot order the run: it is recorded dead with the error, so it shows in
    ``syncd status`` and ``syncd replay`` runs it once the key function is fixed."""
    run_key: str | None = None
    if wf.key is not None:
        try:
            run_key = str(wf.key(event))[:MAX_KEY_LENGTH]
        except Exception as exc:
            return RunRecord(wf.name, event.stream, event.id, wf.version, RunStatus.DEAD, 0, None,
                             f"key= raised {error_text(exc)}", None, now, now, 0.0, None, seq)
    return RunRecord(wf.name, event.stream, event.id, wf.version, RunStatus.QUEUED, 0, now, None, None, now, None,
                     None, run_key, seq)
