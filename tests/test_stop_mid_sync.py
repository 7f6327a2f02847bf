"""A stop in the middle of a sync (issue 27, item 2): SIGTERM to ``syncd run`` between pages (guarantee 8),
and SIGKILL while the next pages are being prefetched (PostgreSQL, the only store where syncd prefetches).

The provider is the WorkOS simulator with a page delay (``latency``), so a catch-up takes many pages and
several commits: the signal lands on a daemon with pages in hand, never on an idle one. The daemon is a
real ``python -m syncd run`` process; the ground truth comes from the simulator's own data.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from simulators.workos import Faults, WorkOSSimulator
from syncd.engine.pages import PREFETCH_AFTER_SECONDS
from syncd.store.db import create_engine
from tests.pgserver import PostgresServer
from tests.test_reliability import MIRROR_TYPES, assert_exact, requested

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk_test_stop_mid_sync_key"
EVENTS = 4000  # 40 pages of 100: at LATENCY a page, the catch-up takes about 10 s
LATENCY = 0.25
PAGE_SIZE = 100  # the WorkOS connector asks for full pages (the API's maximum)


@pytest.fixture
def slow_sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=EVENTS, seed=27, api_key=API_KEY, faults=Faults(latency=LATENCY)) as sim:
        yield sim


def daemon_env(db_url: str, sim: WorkOSSimulator) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "DATABASE_URL": db_url,
        "WORKOS_API_KEY": API_KEY, "WORKOS_BASE_URL": sim.url,
        "SYNC_INTERVAL_SECONDS": "3600",  # one tick: the one the signal interrupts
        "SYNCD_HTTP_PORT": "0", "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "INFO", "LOG_FORMAT": "text",
    }


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "syncd", command], cwd=log.parent, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def ledger_count(db: Engine) -> int:
    with db.connect() as conn:
        if not sa.inspect(conn).has_table("syncd_events"):
            return 0
        return int(conn.execute(sa.text("SELECT count(*) FROM syncd_events")).scalar_one())


def wait_for_commits(db: Engine, proc: subprocess.Popen[bytes], log: Path, beyond: int = 0) -> int:
    """Wait (bounded, 60 s) until the daemon has committed more than ``beyond`` events; the count."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = ledger_count(db)
        if count > beyond:
            return count
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"nothing committed beyond {beyond} events in 60 s: {log.read_text()[-3000:]}")


def pages_served(sim: WorkOSSimulator) -> int:
    return sum(1 for path, status in sim.requests if path.startswith("/events") and status == 200)


def finish_with_once(db: Engine, env: dict[str, str], log: Path, sim: WorkOSSimulator) -> None:
    """``syncd once`` (no page delay now) completes the stream; the result is exact: every requested event
    in the ledger once, one succeeded run per (workflow, event), the mirror equal to the provider's data."""
    sim.faults = Faults()
    wanted = requested(sim)
    for _ in range(5):  # a page group per transaction; one once normally reaches the end
        done = subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=log.parent, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        if ledger_count(db) == len(wanted):
            break
    assert_exact(db, sim.final_state(MIRROR_TYPES), wanted)


def test_sigterm_between_pages_commits_the_pages_in_hand_and_exits_0(
        db_url: str, slow_sim: WorkOSSimulator, tmp_path: Path) -> None:
    served, committed = sigterm_mid_sync(db_url, slow_sim, tmp_path, daemon_env(db_url, slow_sim))
    if db_url.startswith("sqlite"):  # no prefetch: every page fetched was in hand and is committed, none dropped
        assert committed == min(served * PAGE_SIZE, len(requested(slow_sim))), (served, committed)


@pytest.mark.postgres
def test_sigterm_on_postgres_without_prefetch_commits_every_page_fetched(
        pg_server: PostgresServer, slow_sim: WorkOSSimulator, tmp_path: Path) -> None:
    """On PostgreSQL with prefetching on, a page fetched ahead may be dropped on a stop (it was not in hand),
    so "every page fetched is committed" can be checked there only with SYNCD_PREFETCH_PAGES=0."""
    db_url = pg_server.create_database()
    env = {**daemon_env(db_url, slow_sim), "SYNCD_PREFETCH_PAGES": "0"}
    served, committed = sigterm_mid_sync(db_url, slow_sim, tmp_path, env)
    assert committed == min(served * PAGE_SIZE, len(requested(slow_sim))), (served, committed)


def sigterm_mid_sync(db_url: str, sim: WorkOSSimulator, tmp_path: Path, env: dict[str, str]) -> tuple[int, int]:
    """SIGTERM to ``syncd run`` after its first commit: exit 0 within 10 s, the lease released, the cursor
    at the last committed event, then exact after ``syncd once``. Returns (pages served, events committed
    when it exited)."""
    log = tmp_path / "syncd.log"
    db = create_engine(db_url)
    try:
        return _sigterm_mid_sync(db, sim, log, env)
    finally:
        db.dispose()  # also when an assertion failed: a pooled connection left to the GC fails the test again


def _sigterm_mid_sync(db: sa.Engine, sim: WorkOSSimulator, log: Path, env: dict[str, str]) -> tuple[int, int]:
    proc = start("run", env, log)
    try:
        wait_for_commits(db, proc, log)  # the first group is committed; the next pages are on their way
        served_at_signal = pages_served(sim)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = proc.wait(timeout=30)
        stopped_in = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log.read_text()[-3000:]
    assert stopped_in < 10, f"exited {stopped_in:.1f}s after SIGTERM"  # guarantee 8's bound, with margin
    committed = ledger_count(db)
    assert 0 < committed < len(requested(sim)), "the signal landed mid-sync"
    served = pages_served(sim)
    assert served >= served_at_signal
    with db.connect() as conn:
        cursor = conn.execute(sa.text("SELECT cursor FROM syncd_sources WHERE key = 'workos'")).scalar_one()
        owner = conn.execute(sa.text("SELECT lease_owner FROM syncd_sources WHERE key = 'workos'")).scalar_one()
        stored = conn.execute(sa.text("SELECT event_id FROM syncd_events ORDER BY event_id")).scalars().all()
    assert owner is None  # released on the way out
    assert cursor == stored[-1]  # the cursor is the last committed event: it moved with the ledger
    print(f"\n{db.dialect.name}: SIGTERM -> exit 0 in {stopped_in:.2f}s, {served} pages fetched, {committed} "
          f"events committed of {len(requested(sim))}")
    finish_with_once(db, env, log, sim)
    return served, committed


@pytest.mark.postgres
def test_sigkill_while_pages_are_prefetched_loses_and_repeats_nothing(
        pg_server: PostgresServer, slow_sim: WorkOSSimulator, tmp_path: Path) -> None:
    assert LATENCY > 10 * PREFETCH_AFTER_SECONDS  # slow enough for prefetching to pay, by a wide margin
    db_url = pg_server.create_database()
    env, log = daemon_env(db_url, slow_sim), tmp_path / "syncd.log"
    db = create_engine(db_url)
    try:
        sigkill_mid_prefetch(db, env, log, slow_sim)
    finally:
        db.dispose()  # also when an assertion failed (see sigterm_mid_sync)


def sigkill_mid_prefetch(db: sa.Engine, env: dict[str, str], log: Path, slow_sim: WorkOSSimulator) -> None:
    proc = start("run", env, log)
    try:
        first = wait_for_commits(db, proc, log)
        wait_for_commits(db, proc, log, beyond=first)  # a second commit: prefetching has started (it pays at
        # this latency: LATENCY > PREFETCH_AFTER_SECONDS) and runs ahead of the commits
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until a page has arrived that no commit holds yet
            committed = ledger_count(db)
            served = pages_served(slow_sim)
            if served > math.ceil(committed / PAGE_SIZE):
                break
            time.sleep(0.01)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert alive and code == -signal.SIGKILL
    # pages fetched ahead of the commits were in the dead process's hands: more served than committed
    assert served > math.ceil(committed / PAGE_SIZE), (served, committed)
    killed_at = ledger_count(db)
    assert 0 < killed_at < len(requested(slow_sim))
    print(f"\nSIGKILL with {served} pages fetched and {killed_at} events ({killed_at // PAGE_SIZE} pages) committed")
    finish_with_once(db, env, log, slow_sim)
