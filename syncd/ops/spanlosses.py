"""Spans lost on the way to the collector, told to ``syncd status`` through the database.

``/metrics`` counts the spans this process lost (``syncd_spans_dropped_total``); ``syncd status`` runs in
another process, so each ``syncd run``, ``syncd once`` and ``syncd replay`` adds what it lost to its
replica's row of ``syncd_span_losses`` (:mod:`syncd.store.spanloss`): the daemon every
:data:`REPORT_EVERY_SECONDS` and when it stops, the commands when they exit (after the last flush, so
spans lost while flushing count). Nothing is written while nothing is lost. A report that cannot be
written (database down, not yet migrated) is logged and tried again with the next one: nothing is
counted twice or forgotten.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from syncd.redaction import printable
from syncd.telemetry_spans import COUNTS, SpanCounts

log = logging.getLogger("syncd.telemetry")

#: How often the daemon adds its lost spans to the database (only when it lost some).
REPORT_EVERY_SECONDS = 30.0


class LossReporter:
    """Adds ``counts``' losses since the last successful report to ``replica``'s row. Thread-safe."""

    def __init__(self, counts: SpanCounts = COUNTS) -> None:
        self._counts = counts
        self._lock = threading.Lock()
        self._dropped = self._failed = 0  # reported so far

    def report(self, db: Engine, replica: str) -> int:
        """Write the spans lost since the last report; the number written (0: nothing new, or it failed)."""
        from syncd.store.spanloss import add_losses

        with self._lock:
            dropped, failed = self._counts.dropped - self._dropped, self._counts.failed - self._failed
            if dropped <= 0 and failed <= 0:
                return 0
            try:
                add_losses(db, replica, dropped=dropped, failed=failed, now=datetime.now(UTC))
            except Exception as exc:  # a lost-span report must never fail a tick or an exit
                log.warning("could not record %d lost span(s) for syncd status: %s: %s", dropped + failed,
                            type(exc).__name__, exc)
                return 0
            self._dropped += dropped
            self._failed += failed
            return dropped + failed


#: The process's reporter: ``COUNTS`` are the process's.
REPORTER = LossReporter()


def report_losses(db: Engine, replica: str) -> int:
    """``REPORTER.report``: what ``syncd run``'s chore and the commands' exits call."""
    return REPORTER.report(db, replica)


def status_item(reads: Any) -> dict[str, Any]:
    """``syncd status --json``'s ``spans``: totals over every replica, and each replica's row."""
    db = getattr(reads, "db", None)
    rows = []
    if db is not None:
        from sqlalchemy.exc import DBAPIError

        from syncd.store.spanloss import span_losses

        try:
            rows = span_losses(db)
        except DBAPIError:  # a database not yet migrated to 0016 (status does not migrate): nothing recorded
            rows = []
    return {
        "lost": sum(r.lost for r in rows), "dropped": sum(r.dropped for r in rows),
        "failed": sum(r.failed for r in rows),
        "last_at": rows[0].last_at.isoformat() if rows else None,
        "replicas": [{"replica": r.replica, "dropped": r.dropped, "failed": r.failed,
                      "first_at": r.first_at.isoformat(), "last_at": r.last_at.isoformat()} for r in rows],
    }


def render(item: dict[str, Any] | None) -> list[str]:
    """The human view's line: only when a span was ever lost."""
    if not item or not item["lost"]:
        return []
    where = ", ".join(printable(r["replica"]) for r in item["replicas"][:3])
    more = f" and {len(item['replicas']) - 3} more" if len(item["replicas"]) > 3 else ""
    return [f"spans lost: {item['lost']:,} ({item['dropped']:,} dropped with the export queue full "
            f"(OTEL_BSP_MAX_QUEUE_SIZE), {item['failed']:,} not delivered to the collector); "
            f"last at {item['last_at']}, by {where}{more}"]


def loss_chore(app: Any) -> Any:
    """``syncd run``'s chore reporting the spans lost (a ``syncd.ops.scheduler.Chore``)."""
    import functools

    import syncd.store.spanloss  # noqa: F401  # imported now: not in the stop's short budget
    from syncd.ops.scheduler import Chore

    return Chore("span losses", functools.partial(report_losses, app.db, app.engine.replica_id),
                 every_seconds=REPORT_EVERY_SECONDS, first_after_seconds=REPORT_EVERY_SECONDS)
