"""What ``syncd once`` costs before its first page (issues 26 and 28, session 11), and the schema check at start.

A ``syncd once`` on a database at the code's revision imports neither Alembic nor what only other commands or
settings need (APScheduler, the OpenTelemetry SDK with tracing off, rich's progress bars without an
``EVENTS_RANGE`` window, httpx's command-line client). A database behind the code is upgraded; one ahead of it
is a one-line error, left as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from syncd.errors import SyncdError
from syncd.store.connect import create_engine
from syncd.store.schema import HEAD_REVISION, current_revision, migrate

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk_test_startup_imports"
_ONCE = """
import sys
from syncd.cli import main
code = main(["once"])
print("IMPORTED", *sorted(m for m in sys.modules if m.split(".")[0] in {"alembic", "mako", "apscheduler", "rich",
      "click", "pygments"} or m.startswith("opentelemetry.sdk")))
print("HTTPX_CLI", sys.modules.get("httpx._main", "absent"), "httpx" in sys.modules)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=30, seed=5, api_key=API_KEY) as simulator:
        yield simulator


def test_once_at_the_head_revision_imports_only_what_it_uses(sqlite_url: str, sim: WorkOSSimulator,
                                                              tmp_path: Path) -> None:
    """Tracing on, the SDK is imported and spans exported: ``syncd once`` subprocesses in test_telemetry_traces
    and test_dashboard_trace hold that."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "DATABASE_URL": sqlite_url,
           "WORKOS_API_KEY": API_KEY, "WORKOS_BASE_URL": sim.url, "SYNCD_HTTP_PORT": "0", "LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", _ONCE], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "workos: ok" in done.stdout
    imported = next(line for line in done.stdout.splitlines() if line.startswith("IMPORTED")).split()[1:]
    assert imported == []
    assert "HTTPX_CLI None True" in done.stdout  # httpx is used, its command-line client was never imported


def test_a_database_behind_the_code_is_upgraded_and_one_ahead_of_it_is_a_clear_error(empty_db_url: str) -> None:
    db = create_engine(empty_db_url)
    try:
        migrate(db, "0014")
        assert current_revision(db) == "0014"
        migrate(db)  # what App.build does: the skip at the head must not skip an older database
        assert current_revision(db) == HEAD_REVISION
        with db.begin() as conn:  # as a newer syncd would leave it
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
        with pytest.raises(SyncdError) as raised:
            migrate(db)
        assert str(raised.value).startswith("cannot migrate the database from schema revision 0099 (this syncd's "
                                            f"newest is {HEAD_REVISION}")
        assert "\n" not in str(raised.value)
        assert current_revision(db) == "0099"  # left as it was
    finally:
        db.dispose()
