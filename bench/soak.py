"""Retention soak (issue 23): a year of traffic through the clock seam, pruned daily; database size over time.

``python -m bench.soak`` feeds 5,000,000 events spread over 400 simulated days into syncd's engine, one simulated
day at a time: the clock (a ``FakeClock``) moves to the end of the day, the source is ticked until caught up (its
events go through the ledger and a batch workflow's run rows, as in production), then the daily prune runs as
``syncd run`` does it (``PruneJob``: due once a day by the prune's own schedule). The database's size is read
after each day (SQLite: the file, with its free pages; PostgreSQL: syncd's tables). Target: once the retention
window is past, the size stays flat: every one of the last 100 days within ±15% of their mean.

    python -m bench.soak                                  # full size, SQLite in a temporary directory
    python -m bench.soak --events 400000 --days 200       # quicker
    python -m bench.soak --database postgresql+psycopg://…/soak   # an empty PostgreSQL database

The events come from an in-process source (``DaySource``) rather than the HTTP simulator: a year of pages over
loopback would measure HTTP, not retention. Exit status 0 when the target holds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncd.contracts import Event, FakeClock, Page, Window
from syncd.ops.app import App
from syncd.ops.retention import PruneJob, pruner_for
from syncd.settings import Settings
from syncd.store import retention
from syncd.workflows import Registry, Trigger

START = datetime(2025, 1, 1, tzinfo=UTC)
PAGE = 1000
#: The target: the last FLAT_DAYS days' sizes within FLAT_TOLERANCE of their mean.
FLAT_DAYS = 100
FLAT_TOLERANCE = 0.15


@dataclass
class DaySource:
    """A provider of ``events`` events evenly spread over ``days`` days from START, serving those that occurred
    by ``clock.now()``; the cursor is the number of events served. Payloads are like a WorkOS user's."""

    clock: FakeClock
    events: int
    days: int
    key: str = "soak"

    def time_of(self, n: int) -> datetime:
        return START + timedelta(days=self.days) * (n / self.events)

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        first = int(cursor or 0)
        now = self.clock.now()
        found = []
        for n in range(first, min(first + PAGE, self.events)):
            at = self.time_of(n)
            if at > now:
                break
            found.append(Event(stream=self.key, id=f"event_{n:09d}", type="user.updated", occurred_at=at,
                               data={"id": f"user_{n % 50_000:06d}", "email": f"person{n % 50_000}@example.com",
                                     "first_name": "Ada", "last_name": "Lovelace", "email_verified": True,
                                     "created_at": START.isoformat(), "updated_at": at.isoformat()}))
        last = first + len(found)
        more = last < self.events and self.time_of(last) <= now
        return Page(events=tuple(found), next_cursor=str(last) if found else None, has_more=more)

    def close(self) -> None:
        pass


def build(database_url: str, days_kept: int, source: DaySource, clock: FakeClock) -> App:
    registry = Registry()
    registry.workflow("soak-count", on=Trigger("soak"), batch=lambda events, ctx: None)(lambda event, ctx: None)
    settings = Settings.from_env({"DATABASE_URL": database_url, "SYNCD_RETENTION_DAYS": str(days_kept),
                                  "SYNCD_BUILTINS": "none", "SYNCD_HTTP_PORT": "0", "LOG_LEVEL": "WARNING"})
    return App.build(settings, providers=[], registry=registry, clock=clock, connectors=[source])


def soak(database_url: str, *, events: int, days: int, days_kept: int, every: int) -> list[tuple[int, int, int]]:
    """(day, events in the ledger, bytes) after each simulated day; prints a line every ``every`` days."""
    clock = FakeClock(START)
    source = DaySource(clock, events, days)
    app = build(database_url, days_kept, source, clock)
    job = PruneJob(pruner_for(app))
    sizes: list[tuple[int, int, int]] = []
    started = time.monotonic()
    try:
        for day in range(1, days + 1):
            clock.set(START + timedelta(days=day))
            while True:
                tick = app.tick(source)
                if not tick.ok:
                    raise SystemExit(f"day {day}: the tick failed: {tick.error}")
                if tick.caught_up:
                    break
            job()
            with app.db.connect() as conn:
                space = retention.space(conn)
                ledger = sum(n for _, n, _ in retention.ledger_by_stream(conn))
            sizes.append((day, ledger, space.used))
            if day % every == 0 or day == days:
                print(f"day {day:>4}: {ledger:>9,} events kept, {space.used / 1e6:8.1f} MB "
                      f"({space.free / 1e6:.1f} MB free inside), {time.monotonic() - started:6.0f} s", flush=True)
    finally:
        app.close()
    return sizes


def flat(sizes: list[tuple[int, int, int]]) -> tuple[bool, float, float]:
    """Whether the last FLAT_DAYS sizes are within FLAT_TOLERANCE of their mean; the worst deviation and mean."""
    tail = [size for _, _, size in sizes[-FLAT_DAYS:]]
    mean = statistics.fmean(tail)
    worst = max(abs(s - mean) / mean for s in tail)
    return worst <= FLAT_TOLERANCE, worst, mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--retention-days", type=int, default=35)
    parser.add_argument("--every", type=int, default=10, help="print the size every N days")
    parser.add_argument("--database", help="an empty database URL (default: a SQLite file in a temporary directory)")
    args = parser.parse_args(argv)
    if args.days < args.retention_days + FLAT_DAYS:
        parser.error(f"--days must be at least --retention-days + {FLAT_DAYS}")
    with tempfile.TemporaryDirectory(prefix="syncd-soak-") as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'soak.db'}"
        print(f"soak: {args.events:,} events over {args.days} days, retention {args.retention_days} days, "
              f"{url.split('://')[0]}")
        sizes = soak(url, events=args.events, days=args.days, days_kept=args.retention_days, every=args.every)
    ok, worst, mean = flat(sizes)
    print(f"{'PASS' if ok else 'FAIL'}: the last {FLAT_DAYS} days' sizes within ±{worst:.1%} of {mean / 1e6:.1f} MB "
          f"(target ±{FLAT_TOLERANCE:.0%}); peak {max(s for _, _, s in sizes) / 1e6:.1f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
