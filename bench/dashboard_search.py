"""``python -m bench.dashboard_search [--events N]``: the dashboard's search by object id on a large SQLite ledger,
before (the payload scan it used to run) and after (``syncd.store.search``: the object index and the primary
key), for a user and for an organization (named by its memberships). Also: the search while the whole ledger is
still in the index's backlog (the worst case: right after a catch-up), and what indexing it costs. Prints the
medians and PASS/FAIL against the target (indexed); exit 0 on PASS.

The ledger is recorded through the Store contract (pages of 1,000 events, as a sync records them): WorkOS-like
users and memberships, each user named by about 1 in 1,000 events.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from syncd.contracts import CursorSpec, Event, FakeClock, Skip
from syncd.store import SqlStore, objindex
from syncd.store.connect import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.tables import events

T0 = datetime(2025, 1, 1, tzinfo=UTC)
#: The target: one search answers within this on a 500k-event ledger (median, warm cache).
TARGET_MS = 50.0


def ledger_events(n: int) -> list[Event]:
    users = max(1, n // 1000)
    found = []
    for i in range(n):
        user = f"user_{i % users:06d}"
        if i % 4 == 3:
            data: dict[str, Any] = {"object": "organization_membership", "id": f"om_{i:08d}", "user_id": user,
                                    "organization_id": f"org_{i % 97:04d}", "status": "active",
                                    "role": {"slug": "member"}, "created_at": "2025-01-01T00:00:00Z"}
        else:
            data = {"object": "user", "id": user, "email": f"first.last.{i}@example-{i % 50}.com",
                    "first_name": "First", "last_name": "Last", "email_verified": True,
                    "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}
        found.append(Event("workos", f"event_{i:09d}", "user.updated", T0 + timedelta(seconds=i), data))
    return found


def record(store: SqlStore, batch: list[Event]) -> None:
    lease = store.claim(CursorSpec("workos", "workos"), owner="bench", lease_seconds=600, clock=FakeClock(T0))
    assert not isinstance(lease, Skip)
    try:
        for i in range(0, len(batch), 1000):
            with lease.page("workos") as txn:
                txn.record_events(batch[i : i + 1000], T0)
                txn.advance(None, meta=None, new_events=len(batch[i : i + 1000]))
    finally:
        lease.release()


def payload_scan(needle: str) -> Any:
    """The search as it was before the index (session 8): the event id, or the needle as a whole JSON string
    anywhere in the payload (a LIKE over every payload of the ledger)."""
    text = sa.cast(events.c.payload, sa.Text)
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace('"', '\\\\"')
    return (sa.select(events.c.stream, events.c.event_id, events.c.type, events.c.occurred_at, events.c.payload)
            .where(sa.or_(events.c.event_id == needle, text.like(f'%"{escaped}"%', escape="\\")))
            .order_by(events.c.occurred_at, events.c.stream, events.c.event_id).limit(100))


def median_ms(action: Callable[[], int], times: int) -> tuple[float, int]:
    samples, found = [], 0
    for _ in range(times):
        started = time.perf_counter()
        found = action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_search")
    parser.add_argument("--events", type=int, default=500_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = create_engine(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        migrate(db)
        store = SqlStore(db)
        started = time.perf_counter()
        record(store, ledger_events(args.events))
        print(f"ledger: {args.events:,} events recorded in {time.perf_counter() - started:.1f} s", flush=True)
        reads = SqlReads(db)
        needles = (f"user_{min(123, max(1, args.events // 1000) - 1):06d}", "org_0042")

        def search(needle: str) -> Callable[[], int]:
            return lambda: len(reads.event_history(needle, 100))

        tail = {n: median_ms(search(n), 5) for n in needles}
        cpu, started = time.process_time(), time.perf_counter()
        objindex.index_backlog(db)
        print(f"object index: {args.events:,} events indexed in {time.perf_counter() - started:.1f} s "
              f"({time.process_time() - cpu:.1f} s CPU)", flush=True)
        ok = True
        for needle in needles:
            def scan(needle: str = needle) -> int:
                with db.connect() as conn:
                    return len(conn.execute(payload_scan(needle)).all())

            old_ms, old_found = median_ms(scan, 5)
            new_ms, new_found = median_ms(search(needle), 25)
            print(f"search {needle}: before (payload scan) {old_ms:.1f} ms, {old_found} events; "
                  f"unindexed (backlog) {tail[needle][0]:.1f} ms, {tail[needle][1]} events; "
                  f"after (object index) {new_ms:.2f} ms, {new_found} events")
            ok = ok and new_ms <= TARGET_MS and new_found == old_found == tail[needle][1]
        store.close()
        db.dispose()
    print(f"{'PASS' if ok else 'FAIL'}: after ≤ {TARGET_MS:.0f} ms and the same events found")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
