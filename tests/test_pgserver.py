"""The throwaway PostgreSQL server: databases, SQL through SQLAlchemy + psycopg 3, crash and restart,
and clean-up when the interpreter exits or dies."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.pgserver import (
    HOST,
    PostgresServer,
    PostgresServerError,
    find_pg_bin,
    missing_postgres_outcome,
    postgres_available,
    require_postgres,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    require_postgres()
    with PostgresServer() as pg:
        yield pg


def _scalar(url: str, statement: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(statement)).scalar_one()
    finally:
        engine.dispose()


def _write_notes(url: str, *texts: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text)"))
            for text in texts:
                conn.execute(sa.text("INSERT INTO notes (body) VALUES (:body)"), {"body": text})
    finally:
        engine.dispose()


def _read_notes(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT body FROM notes ORDER BY id")).scalars())
    finally:
        engine.dispose()


def _accepts_connections(port: int) -> bool:
    try:
        with psycopg.connect(host=HOST, port=port, user="syncd", dbname="postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    ("reason", "environ", "expected"),
    [
        (None, {}, "run"),
        (None, {"CI": "true"}, "run"),
        ("no initdb", {}, "skip"),
        ("no initdb", {"CI": "false"}, "skip"),
        ("no initdb", {"CI": ""}, "skip"),
        ("no initdb", {"CI": "true"}, "fail"),
        ("no initdb", {"CI": "TRUE"}, "fail"),
        ("no initdb", {"CI": "1"}, "fail"),
    ],
)
def test_missing_postgres_skips_locally_and_fails_in_ci(
    reason: str | None, environ: dict[str, str], expected: str
) -> None:
    assert missing_postgres_outcome(reason, environ) == expected


@pytest.mark.postgres
def test_finds_the_server_binaries() -> None:
    require_postgres()
    bin_dir = find_pg_bin()
    assert postgres_available()
    assert bin_dir is not None
    for tool in ("initdb", "pg_ctl", "postgres"):
        assert (bin_dir / tool).exists()


@pytest.mark.postgres
def test_server_is_loopback_only_utf8_unsynced_and_owned_by_syncd(server: PostgresServer) -> None:
    assert server.url == f"postgresql+psycopg://syncd@127.0.0.1:{server.port}/syncd"
    assert _scalar(server.url, "SELECT current_user") == "syncd"
    assert _scalar(server.url, "SELECT current_database()") == "syncd"
    assert _scalar(server.url, "SHOW server_encoding") == "UTF8"
    assert _scalar(server.url, "SHOW fsync") == "off"
    assert _scalar(server.url, "SHOW listen_addresses") == "127.0.0.1"
    assert _scalar(server.url, "SHOW unix_socket_directories") == str(server.base_dir / "sock")
    assert _scalar(server.url, "SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'") == 0


@pytest.mark.postgres
def test_databases_are_separate(server: PostgresServer) -> None:
    first = server.create_database()
    second = server.create_database("second_db")

    _write_notes(first, "only in the first")
    _write_notes(second, "only in the second", "and another")

    assert second == f"postgresql+psycopg://syncd@127.0.0.1:{server.port}/second_db"
    assert first != second
    assert _read_notes(first) == ["only in the first"]
    assert _read_notes(second) == ["only in the second", "and another"]


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["Upper", "semi;colon", "with-dash", "x" * 64, "1starts_with_digit"])
def test_create_database_rejects_names_that_need_quoting(server: PostgresServer, name: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        server.create_database(name)


@pytest.mark.postgres
def test_kill_then_restart_keeps_committed_data_and_port(server: PostgresServer) -> None:
    url = server.create_database()
    _write_notes(url, "committed before the crash")
    port = server.port
    assert port is not None

    server.kill()

    assert not server.running
    assert not _accepts_connections(port)

    server.restart()

    assert server.running
    assert server.port == port
    assert _read_notes(url) == ["committed before the crash"]


@pytest.mark.postgres
def test_stop_then_start_keeps_data(server: PostgresServer) -> None:
    url = server.create_database()
    _write_notes(url, "survives a clean stop")
    port = server.port
    assert port is not None

    server.stop()
    server.stop()  # a second stop is a no-op

    assert not server.running
    assert not _accepts_connections(port)

    server.start()

    assert _read_notes(url) == ["survives a clean stop"]


@pytest.mark.postgres
def test_close_stops_the_server_and_deletes_its_temp_dir() -> None:
    require_postgres()
    pg = PostgresServer()
    pg.start()
    base_dir, port = pg.base_dir, pg.port
    assert port is not None and _accepts_connections(port)

    pg.close()
    pg.close()  # idempotent

    assert not base_dir.exists()
    assert not _accepts_connections(port)


@pytest.mark.postgres
def test_start_failure_raises_with_the_server_log() -> None:
    require_postgres()
    with socket.socket() as blocker:
        blocker.bind((HOST, 0))
        blocker.listen()
        pg = PostgresServer(port=blocker.getsockname()[1])
        try:
            with pytest.raises(PostgresServerError, match="Address already in use") as failure:
                pg.start()
        finally:
            pg.close()

    assert "server log, last lines:" in str(failure.value)
    assert not pg.base_dir.exists()


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A temp dir the postgres user can reach when we run as root (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="syncd-pg-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.postgres
def test_given_base_dir_is_kept_and_reused(reachable_dir: Path) -> None:
    require_postgres()
    base_dir = reachable_dir / "pg"
    with PostgresServer(base_dir=base_dir) as pg:
        _write_notes(pg.url, "kept on disk")
    assert (base_dir / "data" / "PG_VERSION").exists()

    with PostgresServer(base_dir=base_dir) as again:
        assert _read_notes(again.url) == ["kept on disk"]


_CHILD = """
import sys, time
from tests.pgserver import PostgresServer
server = PostgresServer()
server.start()
print(server.port, server.base_dir, flush=True)
if sys.argv[1] == "hang":
    time.sleep(60)
"""


@pytest.mark.postgres
@pytest.mark.parametrize(
    "ending",
    [
        pytest.param("exit", id="atexit-on-normal-exit"),
        pytest.param("hang", id="watchdog-on-sigkill"),
    ],
)
def test_server_is_stopped_and_removed_when_its_interpreter_ends(ending: str) -> None:
    require_postgres()
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, ending],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            port_text, base_text = child.stdout.readline().split()
            if ending == "hang":
                os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()

    base_dir = Path(base_text)
    assert _eventually(lambda: not base_dir.exists()), f"{base_dir} was not removed"
    assert not _accepts_connections(int(port_text))
