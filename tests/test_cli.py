"""The ``syncd`` command as a user runs it: a subprocess with a minimal environment, cwd in a temp dir,
talking over loopback to a WorkOS simulator started in the test process. Every subprocess is bounded."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.workos import WorkOSSimulator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_cli_secret_7b2e"
WRONG_KEY = "sk_test_cli_wrong_51aa"
MIRROR_PREFIXES = ("user.", "organization.", "organization_membership.")
#: Loopback, never reached: these configurations fail before any request (and must never reach the real API).
NOWHERE = "http://127.0.0.1:9"
TIMEOUT = 60  # seconds: a hung subprocess fails its test instead of hanging the suite


def base_env(home: Path) -> dict[str, str]:
    """The minimal environment of a user's shell; nothing inherited from the test runner's."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
            "SYNCD_HTTP_PORT": "0"}  # no health server: parallel runs must not fight over port 8080


def syncd(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT,
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", *args], cwd=cwd,
                          env={**base_env(cwd), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def db_env(tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}


def mirror_ids(sim: WorkOSSimulator) -> list[str]:
    return [e["id"] for e in sim.events() if e["event"].startswith(MIRROR_PREFIXES)]


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=200, seed=3, api_key=KEY) as simulator:
        yield simulator


def sim_env(tmp_path: Path, sim: WorkOSSimulator, key: str = KEY) -> dict[str, str]:
    return {**db_env(tmp_path), "WORKOS_API_KEY": key, "WORKOS_BASE_URL": sim.url}


# ---- configuration errors: exit 2, one line naming the variable -----------------------------------------

@pytest.mark.parametrize(("command", "env", "variable"), [
    ("migrate", {"SYNC_INTERVAL_SECONDS": "abc"}, "SYNC_INTERVAL_SECONDS"),
    ("status", {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ("migrate", {"DATABASE_URL": "mysql://root:hunter2-pw@localhost/db"}, "DATABASE_URL"),
    ("once", {"WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": "ftp://x"}, "WORKOS_BASE_URL"),
    ("once", {}, "SYNCD_SOURCES"),  # no source configured at all
])
def test_bad_setting_exits_2_with_one_line_naming_it(tmp_path: Path, command: str, env: dict[str, str],
                                                     variable: str) -> None:
    result = syncd(tmp_path, command, env={**db_env(tmp_path), **env})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    assert "hunter2-pw" not in result.stderr + result.stdout
    assert KEY not in result.stderr + result.stdout


def test_an_unimportable_workflow_module_is_named(tmp_path: Path) -> None:
    result = syncd(tmp_path, "once", env={**db_env(tmp_path), "WORKOS_API_KEY": KEY,
                                          "WORKOS_BASE_URL": NOWHERE, "SYNCD_WORKFLOWS": "nonexistent_mod"})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "SYNCD_WORKFLOWS" in line and "'nonexistent_mod'" in line


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path, closed_port: int) -> None:
    urls = {f"postgresql://syncd:hunter2-pw@127.0.0.1:{closed_port}/syncd": "connection",
            f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}": "unable to open database file"}
    for url, says in urls.items():
        result = syncd(tmp_path, "migrate", env={"DATABASE_URL": url})
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("syncd: database error: ") and says in line
        assert "hunter2-pw" not in result.stderr


def test_a_missing_env_file_given_explicitly_exits_2(tmp_path: Path) -> None:
    result = syncd(tmp_path, "--env-file", "nope.env", "migrate", env=db_env(tmp_path))
    assert result.returncode == 2
    assert "SYNCD_ENV_FILE" in result.stderr and "nope.env" in result.stderr


def test_env_file_typo_warns_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"DATABASE_URL=sqlite:///{tmp_path / 'from-dotenv.db'}\nWORKOS_APIKEY=sk_test_typo_value_3e\n")
    result = syncd(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert "WORKOS_APIKEY" in result.stderr
    assert "did you mean WORKOS_API_KEY" in result.stderr
    assert "sk_test_typo_value_3e" not in result.stderr + result.stdout
    assert (tmp_path / "from-dotenv.db").is_file()  # the rest of .env was read


# ---- once, status ----------------------------------------------------------------------------------------

def test_once_then_status_json(tmp_path: Path, sim: WorkOSSimulator) -> None:
    env = sim_env(tmp_path, sim)
    ids = mirror_ids(sim)
    result = syncd(tmp_path, "once", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("workos: ok")
    assert f"{len(ids)} events ({len(ids)} new)" in result.stdout

    status = syncd(tmp_path, "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    [source] = report["sources"]
    assert source["key"] == "workos"
    assert source["cursor"] == ids[-1]
    assert source["events_processed"] == len(ids)
    assert source["runs"] == {"succeeded": len(ids), "failed": 0, "dead": 0, "sleeping": 0, "queued": 0,
                             "running": 0, "pending": 0}
    assert source["last_success_at"] is not None and source["last_error"] is None
    assert report["totals"]["events"] == len(ids)
    assert report["problem_runs"] == []
    assert KEY not in status.stdout + status.stderr + result.stdout + result.stderr


def test_once_with_a_wrong_key_exits_1_and_status_shows_the_error(tmp_path: Path,
                                                                   sim: WorkOSSimulator) -> None:
    env = sim_env(tmp_path, sim, key=WRONG_KEY)
    result = syncd(tmp_path, "once", env=env)
    assert result.returncode == 1
    assert "WORKOS_API_KEY rejected" in result.stdout
    assert [status for _, status in sim.requests] == [401]

    status = syncd(tmp_path, "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "last error" in status.stdout and "WORKOS_API_KEY rejected" in status.stdout
    assert re.search(r"cursor:\s+\(start\)", status.stdout)
    for text in (result.stdout, result.stderr, status.stdout, status.stderr):
        assert WRONG_KEY not in text and KEY not in text


def test_migrate_twice_is_idempotent(tmp_path: Path) -> None:
    env = db_env(tmp_path)
    first = syncd(tmp_path, "migrate", env=env)
    assert first.returncode == 0, first.stderr
    list_tables = "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
    tables = query(tmp_path / "cli.db", list_tables)
    second = syncd(tmp_path, "migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("database at revision ")
    assert query(tmp_path / "cli.db", list_tables) == tables
    names = {name for (name,) in tables}
    assert {"syncd_sources", "syncd_events", "syncd_runs", "syncd_ticks", "workos_users",
            "workos_organizations", "workos_organization_memberships", "alembic_version"} <= names
    assert len(query(tmp_path / "cli.db", "SELECT * FROM alembic_version")) == 1


# ---- demo ------------------------------------------------------------------------------------------------

def test_demo_syncs_and_prints_a_summary(tmp_path: Path) -> None:
    result = syncd(tmp_path, "demo", "--events", "300", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for heading in ("Events by type", "Rows per mirror table", "workos_users", "workos_organizations",
                    "workos_organization_memberships", "Cursors:", "Done in"):
        assert heading in out
    demo_db = tmp_path / "syncd-demo.db"
    assert demo_db.is_file()  # in the working directory, not elsewhere
    [(events,)] = query(demo_db, "SELECT count(*) FROM syncd_events")
    assert events > 0 and f"({events} in the ledger)" in out
    [(users,)] = query(demo_db, "SELECT count(*) FROM workos_users")
    assert any(line.split() == ["workos_users", str(users)] for line in out.splitlines())
    [(cursor,)] = query(demo_db, "SELECT cursor FROM syncd_sources WHERE key = 'workos'")
    assert cursor in out
    [(failed,)] = query(demo_db, "SELECT count(*) FROM syncd_runs WHERE status != 'succeeded'")
    assert failed == 0


# ---- run: SIGTERM after the first commit ------------------------------------------------------------------

def wait_for_cursor(db: Path, process: subprocess.Popen[str], deadline: float) -> str:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"syncd run exited early ({process.returncode})")
        if db.is_file():
            try:
                rows = query(db, "SELECT cursor FROM syncd_sources WHERE key = 'workos'")
            except sqlite3.OperationalError:  # the schema is not there yet
                rows = []
            if rows and rows[0][0]:
                return str(rows[0][0])
        time.sleep(0.02)
    raise AssertionError("no cursor was committed in time")


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with WorkOSSimulator(events=400, seed=4, api_key=KEY) as sim:
        env = {**base_env(tmp_path), **sim_env(tmp_path, sim), "SYNC_INTERVAL_SECONDS": "60"}
        process = subprocess.Popen([sys.executable, "-m", "syncd", "run"], cwd=tmp_path, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_cursor(tmp_path / "cli.db", process, time.monotonic() + 30)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=10)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err
        assert took < 10
        assert "Traceback" not in err

        # the page in hand was committed whole: the cursor is the last recorded event, every event has its run
        db = tmp_path / "cli.db"
        [(cursor, seen)] = query(db, "SELECT cursor, events_seen FROM syncd_sources WHERE key = 'workos'")
        ledger = [row[0] for row in query(db, "SELECT event_id FROM syncd_events ORDER BY event_id")]
        ids = mirror_ids(sim)
        assert ledger == ids[:len(ledger)] and cursor == ledger[-1] and seen == len(ledger)
        assert len(ledger) % 100 == 0 or len(ledger) == len(ids)
        assert query(db, "SELECT count(*) FROM syncd_runs WHERE status = 'succeeded'") == [(len(ledger),)]
        assert query(db, "SELECT lease_owner FROM syncd_sources") == [(None,)]  # released on the way out


# ---- user workflow modules ---------------------------------------------------------------------------------

WELCOME = '''
import sqlalchemy as sa

from syncd import workflow
from connectors import workos


@workflow(name="welcome", on=workos.events("user.created"), version="1.0.0")
def welcome(event, ctx):
    ctx.db.execute(sa.text("CREATE TABLE IF NOT EXISTS welcomed (event_id TEXT PRIMARY KEY, email TEXT)"))
    ctx.db.execute(sa.text("INSERT INTO welcomed VALUES (:id, :email)"),
                   {"id": event.id, "email": event.data["email"]})
    ctx.logger.info("welcomed %s", event.data["email"])
'''


def test_user_workflow_module_runs_from_the_console_script(tmp_path: Path, sim: WorkOSSimulator) -> None:
    """The README's usage: ``SYNCD_WORKFLOWS=myflows syncd once``, ``myflows.py`` in the working directory."""
    (tmp_path / "myflows.py").write_text(WELCOME)
    script = Path(sys.executable).with_name("syncd")
    if not script.is_file():
        pytest.fail(f"the console script is not installed next to {sys.executable}")
    env = {**base_env(tmp_path), **sim_env(tmp_path, sim), "SYNCD_WORKFLOWS": "myflows"}
    del env["PYTHONPATH"]  # nothing but the installed package and the working directory
    result = subprocess.run([str(script), "once"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    created = [e["id"] for e in sim.events() if e["event"] == "user.created"]
    welcomed = [row[0] for row in query(tmp_path / "cli.db", "SELECT event_id FROM welcomed ORDER BY 1")]
    assert welcomed == sorted(created)


def test_duplicate_workflow_names_across_modules_exit_2(tmp_path: Path) -> None:
    (tmp_path / "flows_one.py").write_text(WELCOME)
    (tmp_path / "flows_two.py").write_text(WELCOME.replace("def welcome", "def welcome_again"))
    env = {**db_env(tmp_path), "WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": NOWHERE,
           "SYNCD_WORKFLOWS": "flows_one,flows_two"}
    result = syncd(tmp_path, "once", env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "duplicate workflow name 'welcome'" in lines[0] and "flows_two" in lines[0]
