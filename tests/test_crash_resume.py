"""Resume at once after a crash (issue 18, item 1): a ``syncd run`` or ``syncd once`` SIGKILLed in the middle of
a sync, started again at once, fetches and commits new pages long before its old lease would expire.

Real processes on both sides: the WorkOS simulator (``python -m simulators.workos``, slow pages) and syncd
(``python -m syncd run|once``) on a SQLite file or the throwaway PostgreSQL. The lease is ten minutes long,
so a restart that waited for it (the behaviour before owner locks) would sit idle for ten minutes; the
owner lock of the killed process died with it, and the restart takes the lease over at once. A probe
workflow appends one row per execution (no unique key): an event run twice would show as two rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from simulators.workos import DEFAULT_NOW, WorkOSSimulator
from tests.conftest import workos_simulator_process
from tests.pgserver import PostgresServer
from tests.test_reliability import MIRROR_TYPES, requested

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SEED, EVENTS = 18, 1_200
# Seconds per page: a full sync takes ~3 s (12 pages), the first commit holds ~1 s of pages, so the kill (at that
# first commit) lands mid-sync with most of the stream left for the restart; both are asserted below.
LATENCY = 0.25
API_KEY = "sk_test_crash_resume_key"
LEASE_SECONDS = 600  # waiting for the killed process's lease would take ten minutes
#: Far above the ~1-2 s a restart takes to commit its first page, far below the lease: only a restart that
#: waited for the lease could miss it.
RESUME_LIMIT = 60.0

PROBE_MODULE = textwrap.dedent('''
    """Test probe: one appended row per execution."""
    import sqlalchemy as sa

    from connectors import workos
    from syncd.workflows import workflow

    INSERT = sa.text("INSERT INTO probe_effects (event_id) VALUES (:e)")


    @workflow("probe.effects", on=workos.events(*TYPES))
    def probe(event, ctx):
        ctx.db.execute(INSERT, {"e": event.id})
''').replace("TYPES", repr(sorted(MIRROR_TYPES)))


@pytest.fixture
def simulator_url(tmp_path: Path) -> Iterator[str]:
    with workos_simulator_process(tmp_path / "simulator.log", "--events", str(EVENTS), "--seed", str(SEED),
                                  "--api-key", API_KEY, "--now", DEFAULT_NOW.isoformat(),
                                  "--latency", str(LATENCY)) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """(DATABASE_URL, an engine of the test's own, without a pool) with the probe table created."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'resume.db'}"
        probe_table = "CREATE TABLE probe_effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL)"
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database()
        probe_table = "CREATE TABLE probe_effects (seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL)"
    db = sa.create_engine(url, poolclass=NullPool)
    with db.begin() as conn:
        conn.execute(sa.text(probe_table))
    yield url, db
    db.dispose()


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "syncd", command], cwd=log.parent, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def ledger_count(db: Engine) -> int:
    try:
        with db.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM syncd_events")).scalar_one())
    except sa.exc.DBAPIError:  # not migrated yet, or SQLite busy: not yet
        return 0


def open_runs(db: Engine) -> int:
    """Runs not finished yet (queued, running, or waiting for a retry)."""
    try:
        with db.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM syncd_runs WHERE status NOT IN ('succeeded', 'dead')")).scalar_one())
    except sa.exc.DBAPIError:  # SQLite busy: not yet
        return 1


def wait_for_more(db: Engine, beyond: int, proc: subprocess.Popen[bytes], limit: float, log: Path) -> float:
    """Seconds until the ledger holds more than ``beyond`` events (a page committed); fails after ``limit``."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if ledger_count(db) > beyond:
            return time.monotonic() - began
        if proc.poll() is not None and ledger_count(db) <= beyond:
            raise AssertionError(f"syncd exited ({proc.returncode}) without a page:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"no page committed within {limit}s:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("command", ["run", "once"])
def test_a_restart_after_sigkill_resumes_at_once_and_loses_or_repeats_nothing(
        command: str, database: tuple[str, Engine], simulator_url: str, tmp_path: Path) -> None:
    url, db = database
    (tmp_path / "resume_probe.py").write_text(PROBE_MODULE)
    env = {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "DATABASE_URL": url, "WORKOS_API_KEY": API_KEY, "WORKOS_BASE_URL": simulator_url,
        "SYNCD_WORKFLOWS": "resume_probe", "SYNC_INTERVAL_SECONDS": "1", "SYNCD_LEASE_SECONDS": str(LEASE_SECONDS),
        "SYNCD_REPLICA_ID": "syncd-1",  # the same replica id before and after: a restarted container's
        "SYNCD_HTTP_PORT": "0", "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "text",
    }
    log = tmp_path / "syncd.log"
    wanted = requested(WorkOSSimulator(events=EVENTS, seed=SEED, api_key=API_KEY, now=DEFAULT_NOW))

    first = start(command, env, log)
    try:
        wait_for_more(db, 0, first, RESUME_LIMIT, log)
    finally:
        alive = first.poll() is None
        first.send_signal(signal.SIGKILL)
        code = first.wait(10)
    assert alive and code == -signal.SIGKILL, f"the first process had exited with {code} before the kill"
    killed_at = ledger_count(db)
    assert 0 < killed_at < len(wanted)  # killed mid-sync, holding the lease
    with db.connect() as conn:
        owner, expires = conn.execute(sa.text(
            "SELECT lease_owner, lease_expires_at FROM syncd_sources WHERE key = 'workos'")).one()
    assert owner == "syncd-1" and expires is not None  # the row still says the dead process holds it

    second = start(command, env, log)
    try:
        resumed = wait_for_more(db, killed_at, second, RESUME_LIMIT, log)
        if command == "once":
            assert second.wait(120) == 0, log.read_text()[-3000:]
        else:
            deadline = time.monotonic() + 120
            # The daemon's workers run the queued runs after their pages commit: wait for both.
            while (ledger_count(db) < len(wanted) or open_runs(db)) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        if second.poll() is None:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
    print(f"\n{command} on {db.dialect.name}: killed at {killed_at} events; the restart committed its first "
          f"page {resumed:.2f}s after starting (lease: {LEASE_SECONDS}s)")

    with db.connect() as conn:
        ledger = sorted(conn.execute(sa.text("SELECT event_id FROM syncd_events")).scalars())
        effects = Counter(conn.execute(sa.text("SELECT event_id FROM probe_effects")).scalars())
        statuses = Counter(conn.execute(sa.text(
            "SELECT status FROM syncd_runs WHERE workflow = 'probe.effects'")).scalars())
        row = conn.execute(sa.text("SELECT lease_owner, cursor FROM syncd_sources WHERE key = 'workos'")).one()
    assert ledger == sorted(wanted)  # no event lost
    # none run twice
    assert set(effects) == set(wanted) and set(effects.values()) == {1}, (statuses, log.read_text()[-3000:])
    assert statuses == {"succeeded": len(wanted)}
    assert row.lease_owner is None and row.cursor == wanted[-1]  # released on the way out
