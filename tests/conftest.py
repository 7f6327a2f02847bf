"""Shared fixtures: databases (SQLite file and a throwaway PostgreSQL), simulators, an App builder."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import stamina

from simulators.workos import DEFAULT_NOW
from syncd.contracts import FakeClock
from syncd.ops.app import App
from syncd.settings import Settings
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


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    require_postgres()  # skips locally without the binaries; fails with CI=true
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'syncd.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
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
