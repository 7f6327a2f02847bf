"""``python -m bench.github_reconcile [--issues 50000] [--deleted 20]``: one GitHub reconciliation of a big
repository, measured: requests, CPU time, the connector's traced memory peak, the cursor's size, then an idle
reconciliation of the same repository (every listing page a 304). PASS/FAIL against the targets below.

The simulator runs in a process of its own (so its memory is not counted); the mirror is a SQLite file
holding every issue number; the connector is driven page by page, as the engine drives it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import PYTHON, ROOT
from connectors.github.client import GitHubConnector, with_rec
from connectors.github.cursor import Cursor, canonical_second
from connectors.github.mirrorindex import SqlMirrorIndex
from connectors.github.recstate import Rec
from connectors.github.tables import issues
from syncd.settings import Secret
from syncd.store.db import create_engine
from syncd.store.schema import migrate

#: Targets for 50,000 issues: the connector's traced peak, and CPU per reconciliation.
MAX_PEAK_MB = 16.0
MAX_CPU_SECONDS = 10.0
TOKEN = "ghp_bench_reconcile"
REPO = "big/repo"

_SIM = """
import sys
from simulators.github import GitHubSimulator
sim = GitHubSimulator(repos={%r: %d}, seed=3, tokens=(%r,))
sim.start()
for number in range(1, %d * 997, 997):
    sim.delete(%r, number %% %d + 1)
print(sim.url, flush=True)
sys.stdin.read()
sim.stop()
"""


def drive(connector: GitHubConnector, cursor: str, *, traced: bool) -> tuple[str, int, list[int], float, float]:
    """fetch_page until the reconciliation is over: (cursor, pages, numbers removed, cpu seconds, traced peak
    MB). CPU is measured untraced (tracemalloc slows allocations several times): ``traced`` gives the peak."""
    if traced:
        tracemalloc.start()
    cpu = time.process_time()
    pages, removed = 0, []
    while True:
        page = connector.fetch_page(cursor)
        pages += 1
        removed += [int(e.data["number"]) for e in page.events]
        cursor = page.next_cursor or cursor
        if not page.has_more:
            break
    cpu = time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] / 1e6 if traced else 0.0
    tracemalloc.stop()
    return cursor, pages, removed, cpu, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.github_reconcile")
    parser.add_argument("--issues", type=int, default=50_000)
    parser.add_argument("--deleted", type=int, default=20)
    args = parser.parse_args(argv)
    code = _SIM % (REPO, args.issues, TOKEN, args.deleted, REPO, args.issues)
    sim = subprocess.Popen([PYTHON, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            db_url = f"sqlite:///{Path(tmp) / 'mirror.db'}"
            engine = create_engine(db_url)
            migrate(engine)
            now = datetime.now(UTC)
            with engine.begin() as conn:  # the mirror holds every issue, the deleted ones included
                conn.execute(issues.insert(), [
                    {"id": 1_000_000_000 + n, "repo": REPO, "number": n, "is_pull_request": False, "updated_at": now}
                    for n in range(1, args.issues + 1)])
            engine.dispose()
            clock = [time.time()]
            connector = GitHubConnector(repo=REPO, base_url=url, token=Secret(TOKEN), reconcile_seconds=3600,
                                        mirror=SqlMirrorIndex(db_url), clock=lambda: clock[0])
            start = with_rec(Cursor(since=canonical_second(now)).dumps(), Rec(at=0.0))
            started = time.monotonic()
            cursor, pages, events, cpu, _ = drive(connector, start, traced=False)
            wall = time.monotonic() - started
            peak = drive(connector, start, traced=True)[4]  # the same walk again, for its memory
            print(f"first reconcile of {args.issues:,} issues: {pages} steps, {len(events)} removals found, "
                  f"CPU {cpu:.1f} s, wall {wall:.1f} s, traced peak {peak:.1f} MB, cursor {len(cursor):,} bytes")
            engine = create_engine(db_url)
            with engine.begin() as conn:  # what the mirror workflow does with the events
                conn.execute(issues.delete().where(issues.c.number.in_(events)))
            engine.dispose()
            clock[0] += 3601
            before = connector.fetch_page(cursor)  # the poll (a 304) that starts it
            remaining = before.meta.get("ratelimit_remaining")
            started = time.monotonic()
            cursor, pages2, events2, cpu2, _ = drive(connector, before.next_cursor or cursor, traced=False)
            wall2 = time.monotonic() - started
            after = connector.fetch_page(cursor).meta.get("ratelimit_remaining")
            print(f"idle reconcile: {pages2} steps, {len(events2)} removals, CPU {cpu2:.1f} s, wall {wall2:.1f} s, "
                  f"rate limit remaining {remaining} -> {after} (304s are free)")
            connector.close()
    finally:
        if sim.stdin is not None:
            sim.stdin.close()
        sim.wait(timeout=120)
    ok = (len(events) == args.deleted and not events2 and remaining == after and peak <= MAX_PEAK_MB
          and max(cpu, cpu2) <= MAX_CPU_SECONDS)
    print(f"{'PASS' if ok else 'FAIL'}: removals found once, idle costs nothing, peak <= {MAX_PEAK_MB} MB, "
          f"CPU <= {MAX_CPU_SECONDS} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
