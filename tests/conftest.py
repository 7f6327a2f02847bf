"""Shared fixtures: databases (SQLite file and a throwaway PostgreSQL), simulators, an App builder."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import stamina

from simulators.workos import DEFAULT_NOW
from syncd.contracts import FakeClock
from syncd.ops.app import App
from syncd.settings import Settings
from syncd.store.db import create_engine
from syncd.store.schema import migrate
from syncd.store.sqlstore import SqlStore
from syncd.workflows import Registry
from tests.pgserver import PostgresServer, require_postgres

WORKOS_KEY = "sk_test_fixture_secret_4f9a"
#: Far above any attempts syncd configures (HTTP: 4; steps: retries + 1), so it never hides one.
RETRY_ATTEMPTS_CAP = 50


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    """HTTP retries keep their own attempts but never sleep (stamina's testing mode).

    ``cap=True`` uses each retry loop's configured attempts, bounded by ``RETRY_ATTEMPTS_CAP``: a
    test that counts requests sees the real setting (a cap at the default of 4 hid a setting raised to 7),
    and a runaway setting still cannot make a test retry for ever."""
    with stamina.set_testing(True, attempts=RETRY_ATTEMPTS_CAP, cap=True):
        yield


#: Weak references to the PostgreSQL connections SQLAlchemy pools opened during the current test.
_PG_OPENED: list[weakref.ref[Any]] = []


def _note_connection(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("psycopg"):
        _PG_OPENED.append(weakref.ref(dbapi_connection))


sa.event.listen(sa.pool.Pool, "connect", _note_connection)  # every pool of every engine, present and future


@pytest.fixture(autouse=True)
def _no_leaked_pg_connections() -> Iterator[None]:
    """Fails the test that leaves open a PostgreSQL connection it opened (an engine not disposed, an App not
    closed). Left alone, psycopg warns when the garbage collector finds it, in whichever later test that
    happens, and ``filterwarnings = error`` fails that innocent test (issue 27: an SQLite test failed so).
    Costs one list append per connection opened; no ``gc.collect()``."""
    _PG_OPENED.clear()
    yield
    still_open = [conn for ref in _PG_OPENED if (conn := ref()) is not None and not conn.closed]
    _PG_OPENED.clear()
    for conn in still_open:
        conn.close()  # so that no later test is blamed for it
    if still_open:
        pytest.fail(f"{len(still_open)} PostgreSQL connection(s) this test opened are still open at its end: "
                    "dispose() the engines it creates (or close() its Apps)", pytrace=False)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    require_postgres()  # skips locally without the binaries; fails with CI=true
    with PostgresServer() as server:
        yield server


#: The migrated database every PostgreSQL test database is copied from (one per server, so per xdist worker).
PG_TEMPLATE = "syncd_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the head revision once per session; tests get copies. Running Alembic for
    each of ~450 tests took about a minute of the suite on 2 cores."""
    path = tmp_path_factory.mktemp("template") / "syncd.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """The name of a database on ``pg_server`` migrated to the head revision once per session."""
    _migrate(pg_server.create_database(PG_TEMPLATE))
    return PG_TEMPLATE


def _migrate(url: str) -> None:
    db = create_engine(url)
    try:
        migrate(db)
    finally:
        db.dispose()  # no connection left: PostgreSQL copies a template only when nobody is connected to it


def _sqlite_copy(template: Path, tmp_path: Path) -> str:
    """A copy of the migrated template (SQLite's backup API: consistent whatever is still in its WAL)."""
    target = tmp_path / "syncd.db"
    with contextlib.closing(sqlite3.connect(template)) as source, contextlib.closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return f"sqlite:///{target}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database of the test's own, already migrated to the head revision (so ``App.build`` and
    ``migrate`` find nothing to do): a SQLite file, or a database on the throwaway PostgreSQL. A test about
    migrating or about a database syncd has never seen uses ``empty_db_url``."""
    if request.param == "sqlite":
        return _sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(template=request.getfixturevalue("pg_template"))


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A ``SqlStore`` on ``db_url`` (the Store contract's SQL implementation), closed after the test."""
    db = create_engine(db_url)
    migrate(db)
    made = SqlStore(db)
    yield made
    made.close()
    db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database (no tables at all): a SQLite file, or a new database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'syncd.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A SQLite file of the test's own, already migrated to the head revision (see ``db_url``)."""
    return _sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """A SQLite file syncd has never seen (it does not exist yet)."""
    return f"sqlite:///{tmp_path / 'syncd.db'}"


@pytest.fixture
def workos_sim() -> Iterator[Any]:
    from simulators.workos import WorkOSSimulator

    with WorkOSSimulator(events=600, seed=11, api_key=WORKOS_KEY) as sim:
        yield sim


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock a day after the WorkOS simulator's fixed 'now' (modules may define their own)."""
    return FakeClock(DEFAULT_NOW + timedelta(days=1))


@pytest.fixture
def apps() -> Iterator[list[App]]:
    """Apps a test builds by hand; closed at the end."""
    built: list[App] = []
    yield built
    for app in built:
        app.close()


def settings_for(db_url: str, **env: str) -> Settings:
    base = {"DATABASE_URL": db_url, "SYNCD_HTTP_PORT": "0", "LOG_LEVEL": "INFO"}
    base.update(env)
    return Settings.from_env(base)


@pytest.fixture
def make_app() -> Iterator[Callable[..., App]]:
    """Build Apps from env values; every App built is closed at the end of the test."""
    built: list[App] = []

    def build(db_url: str, *, registry: Registry | None = None, **env: str) -> App:
        chosen = registry if registry is not None else Registry()
        app = App.build(settings_for(db_url, **env), registry=chosen)
        built.append(app)
        return app

    yield build
    for app in built:
        app.close()


def workos_env(sim: Any) -> dict[str, str]:
    return {"WORKOS_API_KEY": sim_key(sim), "WORKOS_BASE_URL": sim.url}


def sim_key(sim: Any) -> str:
    return str(getattr(sim, "api_key", WORKOS_KEY))


@contextlib.contextmanager
def workos_simulator_process(log_path: Path, *args: str) -> Iterator[str]:
    """``python -m simulators.workos ARGS --port 0`` in a process of its own (so a test may SIGKILL syncd
    without touching it); yields its base URL, read from its first line; its stderr goes to ``log_path``."""
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "simulators.workos", "--port", "0", *args],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "WorkOS simulator on http://127.0.0.1:PORT (…)"
        assert line.startswith("WorkOS simulator on "), line
        yield line.split()[3]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


#: Modules whose tests take longest (seconds each, on 2 cores), started first: under ``pytest -n 2`` a long test
#: that starts last keeps one worker busy while the other idles. Whole modules move, in this order, so module-scoped
#: fixtures stay on one worker; every other test keeps its place.
LONG_MODULES = ("test_replicas.py", "test_crash.py", "test_postgres_outage.py", "test_crash_resume.py",
                "test_backfill.py", "test_github_budget.py", "test_steps_crash.py", "test_dashboard_kill.py",
                "test_quarantine_property.py", "test_stripe.py", "test_queue_crash.py", "test_stop_mid_sync.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a module stays
