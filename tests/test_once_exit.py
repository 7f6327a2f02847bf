"""``syncd once`` tells the truth (issue 18, item 2): its exit code in each case, run as a real subprocess
against the WorkOS simulator on loopback, and SIGTERM releasing everything it holds.

0 ok; 1 a source failed, or a run failed or went dead during it; 3 a source skipped (its lease held by a live
process, or paused), with ``syncd once: skipped <source>: <reason>`` on stderr. It does not return while
runs it started are due now (a durable run of more steps than one tick resumes), and says which runs it
leaves asleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from simulators.workos.faults import Faults
from syncd.contracts import CursorSpec, Skip, SystemClock
from syncd.store import SqlStore
from syncd.store.connect import create_engine
from syncd.store.schema import migrate

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk_test_once_exit_key"
STEPS = 60  # more durable steps per run than one tick resumes (MAX_RESUME_ROUNDS = 50)

WORKFLOWS = textwrap.dedent('''
    """Test workflows, chosen by ONCE_CASE."""
    import os
    from datetime import timedelta

    from connectors import workos
    from syncd.workflows import workflow

    CASE = os.environ["ONCE_CASE"]
    ON = workos.events("organization.created")

    if CASE == "failing":
        @workflow("test.failing", on=ON)
        def failing(event, ctx):
            raise RuntimeError("this workflow always fails")

    if CASE == "steps":
        @workflow("test.steps", on=ON)
        def steps(event, ctx):
            for n in range(STEPS):
                ctx.step(f"step-{n}", lambda n=n: n)

    if CASE == "sleep":
        @workflow("test.sleep", on=ON)
        def sleeper(event, ctx):
            ctx.sleep("nap", timedelta(hours=2))
''').replace("STEPS", str(STEPS))


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=60, seed=3, api_key=API_KEY) as simulator:
        yield simulator


def env_for(tmp_path: Path, db_url: str, sim: WorkOSSimulator, **extra: str) -> dict[str, str]:
    (tmp_path / "once_workflows.py").write_text(WORKFLOWS)
    env = {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "DATABASE_URL": db_url, "WORKOS_API_KEY": API_KEY, "WORKOS_BASE_URL": sim.url,
        "SYNCD_WORKFLOWS": "once_workflows", "ONCE_CASE": "none", "SYNCD_HTTP_PORT": "0",
        "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "text",
    }
    env.update(extra)
    return env


def once(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", "once"], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=180)


def runs_by_status(db_url: str, workflow: str) -> dict[str, int]:
    db = create_engine(db_url)
    try:
        with db.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, count(*) FROM syncd_runs WHERE workflow = :w GROUP BY 1"),
                                {"w": workflow}).all()
    finally:
        db.dispose()
    return {status: int(n) for status, n in rows}


def test_a_clean_once_exits_0(sqlite_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    done = once(env_for(tmp_path, sqlite_url, sim), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("workos: ok") and "skipped" not in done.stderr


def test_a_failed_run_exits_1(sqlite_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    done = once(env_for(tmp_path, sqlite_url, sim, ONCE_CASE="failing"), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "workos: ok" in done.stdout and " 0 failed" not in done.stdout  # the source ticked; its runs failed
    assert runs_by_status(sqlite_url, "test.failing").get("failed", 0) > 0


def test_a_dead_run_exits_1(sqlite_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    done = once(env_for(tmp_path, sqlite_url, sim, ONCE_CASE="failing", SYNCD_MAX_ATTEMPTS="1"), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert set(runs_by_status(sqlite_url, "test.failing")) == {"dead"}


def test_a_failed_source_exits_1(sqlite_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    done = once(env_for(tmp_path, sqlite_url, sim, WORKOS_API_KEY="sk_test_wrong_key"), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "workos: FAILED" in done.stdout and "sk_test_wrong_key" not in done.stdout + done.stderr


def test_a_source_whose_lease_a_live_process_holds_is_skipped_with_exit_3(
        db_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    db = create_engine(db_url)
    migrate(db)
    store = SqlStore(db)
    lease = store.claim(CursorSpec("workos", "workos"), owner="another", lease_seconds=600, clock=SystemClock())
    assert not isinstance(lease, Skip)
    try:
        done = once(env_for(tmp_path, db_url, sim), tmp_path)
    finally:
        lease.release()
        store.close()
        db.dispose()
    assert done.returncode == 3, done.stdout + done.stderr
    assert "syncd once: skipped workos: lease held by another replica" in done.stderr.splitlines()
    assert "workos: ok (lease held by another replica) — 0 pages" in done.stdout


def test_a_paused_source_is_skipped_with_exit_3(sqlite_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    sim.faults = Faults(rate_limit_rate=1.0, retry_after=600)
    first = once(env_for(tmp_path, sqlite_url, sim), tmp_path)
    assert first.returncode == 1  # rate limited: the tick failed, and the source pauses for 600 s
    sim.faults = Faults()
    done = once(env_for(tmp_path, sqlite_url, sim), tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert any(line.startswith("syncd once: skipped workos: paused until ") for line in done.stderr.splitlines())


def test_once_finishes_the_durable_runs_it_started(sqlite_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    done = once(env_for(tmp_path, sqlite_url, sim, ONCE_CASE="steps"), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = runs_by_status(sqlite_url, "test.steps")
    assert set(runs) == {"succeeded"} and runs["succeeded"] > 0  # none left pending between steps
    assert "waiting" not in done.stdout


def test_once_says_which_runs_it_leaves_asleep(sqlite_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    done = once(env_for(tmp_path, sqlite_url, sim, ONCE_CASE="sleep"), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = runs_by_status(sqlite_url, "test.sleep")
    assert set(runs) == {"sleeping"}
    assert f"; {runs['sleeping']} runs waiting until " in done.stdout
    assert "(the next once or run resumes them)" in done.stdout


def test_sigterm_on_once_releases_everything_it_holds(db_url: str, tmp_path: Path) -> None:
    with WorkOSSimulator(events=3000, seed=3, api_key=API_KEY, faults=Faults(latency=0.25)) as slow:
        env = env_for(tmp_path, db_url, slow, SYNCD_LEASE_SECONDS="600")
        proc = subprocess.Popen([sys.executable, "-m", "syncd", "once"], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        db = create_engine(db_url)
        try:
            for _ in range(1200):  # until the first page committed (the lease is held)
                with db.connect() as conn:
                    ready = sa.inspect(conn).has_table("syncd_sources") and conn.execute(sa.text(
                        "SELECT count(*) FROM syncd_sources WHERE events_seen > 0")).scalar_one()
                if ready or proc.poll() is not None:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, out + err
            assert "stopped by a signal" in err
            with db.connect() as conn:
                owner, seen = conn.execute(sa.text(
                    "SELECT lease_owner, events_seen FROM syncd_sources WHERE key = 'workos'")).one()
            assert owner is None and 0 < seen < 3000  # stopped mid-sync, its lease released
            if db.dialect.name == "sqlite":
                assert list(Path(f"{db.url.database}.locks").iterdir()) == []  # and its owner lock
            store = SqlStore(db)
            lease = store.claim(CursorSpec("workos", "workos"), owner="next", lease_seconds=600,
                                clock=SystemClock())
            assert not isinstance(lease, Skip)  # free at once for the next process
            lease.release()
            store.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            db.dispose()
