"""A throwaway PostgreSQL server for tests and benchmarks, without Docker.

`PostgresServer` runs Debian's server binaries (``/usr/lib/postgresql/*/bin``; install them with
``scripts/ensure-postgres.sh``) on a private data directory:

- ``start()`` runs ``initdb`` once (role ``syncd`` as the superuser, trust auth, UTF8, C locale), then
  starts the postmaster listening only on ``127.0.0.1:port`` with ``fsync=off`` and its unix socket in the
  private directory, and returns once a client can connect. Startup takes about 1-2 s.
- URLs are SQLAlchemy URLs for psycopg 3: ``postgresql+psycopg://syncd@127.0.0.1:PORT/NAME``.
- ``stop()``, ``kill()`` and ``restart()`` keep the data directory and the port, so committed data
  survives a stop or a crash; ``close()`` (also ``__exit__``) stops the server and deletes the temp dir.
- Servers still open when the interpreter exits are closed by an ``atexit`` hook. If the interpreter
  dies without running it (SIGKILL, SIGTERM), a small watchdog process notices its pipe closing and
  stops the server and deletes the temp dir.
- As root (CI), ``initdb`` and ``pg_ctl`` refuse to run, so they run as the ``postgres`` system user via
  ``runuser``, in a directory owned by that user.

Failures raise `PostgresServerError` whose message ends with the server log's last lines.
`require_postgres()` is the one rule tests follow when the binaries are missing: skip locally,
fail when ``CI=true``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROLE = "syncd"
DEFAULT_DATABASE = "syncd"
HOST = "127.0.0.1"

_DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
_OS_USER = "postgres"  # initdb/pg_ctl refuse to run as root; this is the account Debian's package creates
_PG_CTL_TIMEOUT_S = 30
_READY_TIMEOUT_S = 10.0
_KILL_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 25
# A RAM-backed temp dir when there is room: on disk-backed /tmp under load, CREATE DATABASE took ~0.35 s
# and initdb ~1.3 s, against ~0.03 s and ~0.7 s on tmpfs. Docker's default 64 MB /dev/shm is too small.
_SHM_DIR = Path("/dev/shm")
_SHM_MIN_FREE_BYTES = 2 * 1024**3
# Plain names only, so a database name never needs quoting in a URL.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Settings for a disposable server: durability is traded for speed, and nothing listens beyond loopback.
_SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "full_page_writes": "off",
}

# Role syncd is the bootstrap superuser, so there is no "postgres" role; --no-sync: nothing to keep.
_INITDB_OPTIONS = ("-U", ROLE, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")

Outcome = Literal["run", "skip", "fail"]


class PostgresServerError(RuntimeError):
    """The throwaway server could not be initialised, started, stopped or reached."""


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``, else the directory of the
    ``initdb`` on PATH (symlinks resolved, so ``pg_ctl`` and ``postgres`` sit beside it), else None."""
    debian = sorted((path.parent for path in _DEBIAN_PG_ROOT.glob("*/bin/initdb")), key=_version_key)
    if debian:
        return debian[-1]
    on_path = shutil.which("initdb")
    return None if on_path is None else Path(on_path).resolve().parent


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """Sort key for ``.../<version>/bin``: "9.6" < "15" < "16"."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def postgres_unavailable_reason() -> str | None:
    """Why `PostgresServer` cannot run on this machine, or None when it can."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        return (
            "PostgreSQL server binaries (initdb) not found under /usr/lib/postgresql/*/bin or on PATH; "
            "install them with scripts/ensure-postgres.sh (as root)"
        )
    missing = [name for name in ("pg_ctl", "postgres") if not (bin_dir / name).exists()]
    if missing:
        return f"{bin_dir} has initdb but not {', '.join(missing)}"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root needs runuser to start PostgreSQL as the postgres user"
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            return "running as root needs the 'postgres' system user (created by Debian's postgresql package)"
    return None


def postgres_available() -> bool:
    """Whether `PostgresServer` can start here (binaries found, and the postgres user when root)."""
    return postgres_unavailable_reason() is None


def missing_postgres_outcome(reason: str | None, environ: Mapping[str, str]) -> Outcome:
    """What a Postgres test does: "run" when available, else "fail" under ``CI=true`` (or ``CI=1``),
    else "skip". Pure, so the rule is tested by a table."""
    if reason is None:
        return "run"
    return "fail" if environ.get("CI", "").strip().lower() in {"true", "1"} else "skip"


def require_postgres(environ: Mapping[str, str] | None = None) -> None:
    """Call at the top of every Postgres test or fixture: returns when Postgres can run, otherwise
    skips the test, or fails it when ``CI=true`` (CI must run these tests, never skip them)."""
    reason = postgres_unavailable_reason()
    outcome = missing_postgres_outcome(reason, os.environ if environ is None else environ)
    if outcome == "run":
        return
    # Imported here so benchmark scripts can use this module without pytest.
    import pytest

    if outcome == "fail":
        pytest.fail(f"CI=true requires the PostgreSQL tests to run, but {reason}", pytrace=False)
    pytest.skip(str(reason))


class PostgresServer:
    """One disposable PostgreSQL server; see the module docstring for the contract.

    ``base_dir`` holds ``data/``, ``sock/`` and ``server.log``. When omitted, a temp dir is created
    and deleted by ``close()``; a given ``base_dir`` is kept (as root, the ``postgres`` user must be able
    to reach it). ``port`` defaults to a free port chosen at the first ``start()``.
    """

    def __init__(self, base_dir: Path | None = None, port: int | None = None) -> None:
        self.port: int | None = port
        self._given_base_dir = base_dir
        self._base_dir: Path | None = None
        self._bin_dir: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, base_dir={self._base_dir}, running={self.running})"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public state -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default database (``syncd``); needs the port, i.e. after ``start()``."""
        return self.url_for(DEFAULT_DATABASE)

    def url_for(self, name: str) -> str:
        """SQLAlchemy URL of database ``name`` on this server (whether or not it exists)."""
        if self.port is None:
            raise PostgresServerError("the server has no port yet; call start() first")
        return f"postgresql+psycopg://{ROLE}@{HOST}:{self.port}/{name}"

    @property
    def base_dir(self) -> Path:
        """Directory holding ``data/``, ``sock/`` and ``server.log``; exists once ``start()`` ran."""
        if self._base_dir is None:
            raise PostgresServerError("the server has no directory yet; call start() first")
        return self._base_dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def running(self) -> bool:
        """Whether the postmaster named in ``postmaster.pid`` is alive (zombies count as dead)."""
        pid = self._postmaster_pid()
        return pid is not None and _alive(pid)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (running ``initdb`` first on a fresh directory) and return once it accepts
        connections. A no-op while running. Raises `PostgresServerError` with the log's tail."""
        if self._closed:
            raise PostgresServerError("this server was closed; create a new PostgresServer")
        if self.running:
            return
        if self._base_dir is None:
            self._prepare_base_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self.port is None:
            self.port = _free_port()
        self._arm_watchdog()
        _OPEN_SERVERS.add(self)
        self._start_postmaster()
        self._ensure_default_database()

    def stop(self) -> None:
        """Shut down with ``pg_ctl stop -m fast``, keeping the data dir and port for ``restart()``.
        A no-op when not running."""
        if not self.running:
            return
        result = self._run_as_owner(self._pg_ctl("stop", "-m", "fast"))
        if result.returncode != 0 and self.running:
            raise PostgresServerError(self._failure("pg_ctl stop failed", result))

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and its child processes (so open client sessions
        die too, as in a real crash), and wait until they are gone. ``restart()`` then runs crash
        recovery on the same data dir. A no-op when not running."""
        pid = self._postmaster_pid()
        if pid is None or not _alive(pid):
            return
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + _KILL_TIMEOUT_S
        while any(_alive(victim) for victim in victims):
            if time.monotonic() >= deadline:
                raise PostgresServerError(f"postmaster {pid} still alive {_KILL_TIMEOUT_S} s after SIGKILL")
            time.sleep(0.01)

    def restart(self) -> None:
        """Stop if running, then start again on the same data dir and port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete the temp dir this object created (a given ``base_dir`` is kept).
        Idempotent; the object cannot be started again."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            if self._given_base_dir is None and self._base_dir is not None:
                shutil.rmtree(self._base_dir, ignore_errors=True)
            self._disarm_watchdog()
            _OPEN_SERVERS.discard(self)

    # -- databases ----------------------------------------------------------------------------------

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a database (a unique name when ``name`` is None) and return its URL: empty, or a copy of
        database ``template`` (which nobody may be connected to; PostgreSQL copies its files, far faster
        than building the same schema again). Names are lowercase letters, digits and underscores; raises
        ValueError otherwise."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        for given in (name, template):
            if given is not None and not _DATABASE_NAME.fullmatch(given):
                raise ValueError(f"database name {given!r} must match {_DATABASE_NAME.pattern}")
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            if conn.info.server_version >= 150000:
                # PostgreSQL 15's default (WAL_LOG) writes every page of the copy through the WAL: FILE_COPY
                # copies the files after a checkpoint, which costs nothing with fsync off (17 ms a copy of the
                # migrated 8 MB template against 25-31 ms; the suite makes hundreds).
                statement = sql.SQL("{} STRATEGY FILE_COPY").format(statement)
            conn.execute(statement)
        return self.url_for(name)

    def _ensure_default_database(self) -> None:
        """Create ``syncd`` unless it exists (checked, not assumed: an earlier start may have failed
        between initdb and here, or a given base_dir may be reused)."""
        with psycopg.connect(self._conninfo("postgres")) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            found = conn.execute(query, [DEFAULT_DATABASE]).fetchone()
        if found is None:
            self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEFAULT_DATABASE)))

    def _execute(self, statement: sql.Composed) -> None:
        """Run one statement outside a transaction (CREATE DATABASE needs that) on ``postgres``."""
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def _conninfo(self, dbname: str) -> str:
        return make_conninfo(host=HOST, port=self.port, user=ROLE, dbname=dbname, connect_timeout=5)

    # -- start-up steps -----------------------------------------------------------------------------

    def _prepare_base_dir(self) -> None:
        """Create the base dir and socket dir, owned by the postgres user when we are root."""
        if self._given_base_dir is None:
            base = Path(tempfile.mkdtemp(prefix="syncd-pg-", dir=_temp_parent()))
        else:
            base = self._given_base_dir.resolve()
            base.mkdir(parents=True, exist_ok=True)
        (base / "sock").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (base, base / "sock"):
                shutil.chown(path, user=_OS_USER, group=_OS_USER)
        self._base_dir = base

    def _initdb(self) -> None:
        result = self._run_as_owner([self._tool("initdb"), "-D", str(self.data_dir), *_INITDB_OPTIONS])
        if result.returncode != 0:
            hint = ""
            if os.geteuid() == 0 and self._given_base_dir is not None:
                hint = f" (as root, the {_OS_USER} user must be able to reach {self.base_dir})"
            raise PostgresServerError(self._failure(f"initdb failed{hint}", result))
        settings = {**_SERVER_SETTINGS, "unix_socket_directories": str(self.base_dir / "sock")}
        # Appending as root keeps the file's owner (postgres); later lines override initdb's defaults.
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# syncd throwaway server (tests/pgserver.py)\n")
            for key, value in settings.items():
                conf.write(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n")

    def _start_postmaster(self) -> None:
        self._remove_stale_lock_files()
        result = self._run_as_owner(self._pg_ctl("start", "-l", str(self.log_path), "-o", f"-p {self.port}"))
        if result.returncode != 0:
            raise PostgresServerError(self._failure("pg_ctl start failed", result))
        self._wait_until_accepting()

    def _wait_until_accepting(self) -> None:
        """Poll with a real client login until it succeeds, the deadline passes, or the server dies."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self._conninfo("postgres")):
                    return
            except psycopg.OperationalError as err:
                if time.monotonic() >= deadline or not self.running:
                    raise PostgresServerError(
                        f"PostgreSQL on {HOST}:{self.port} did not accept connections: {err}\n"
                        + self._log_tail()
                    ) from err
                time.sleep(0.05)

    def _remove_stale_lock_files(self) -> None:
        """After a crash the postmaster may linger as an unreaped zombie (e.g. under a container init
        that does not reap); PostgreSQL then treats its lock files as live and refuses to start. The
        process is known dead here, so its lock files are stale."""
        pid = self._postmaster_pid()
        if pid is None or _alive(pid):
            return
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for lock in (self.base_dir / "sock").glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    # -- watchdog -----------------------------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        """Start (once) a detached process that stops the server and deletes the temp dir if this
        interpreter dies without closing it: it waits for EOF on a pipe only we hold open."""
        if self._watchdog is not None:
            return
        stop = [*self._owner_prefix(), *self._pg_ctl("stop", "-m", "fast")]
        remove = "" if self._given_base_dir is not None else str(self.base_dir)
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG_SOURCE, json.dumps(stop), remove],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.base_dir,
            # Its own session, so a signal to the test run's process group does not take it down too.
            start_new_session=True,
        )

    def _disarm_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None or watchdog.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError):
            watchdog.stdin.write(b"closed")
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    # -- helpers ------------------------------------------------------------------------------------

    def _tool(self, name: str) -> str:
        if self._bin_dir is None:
            reason = postgres_unavailable_reason()
            if reason is not None:
                raise PostgresServerError(reason)
            self._bin_dir = find_pg_bin()
        assert self._bin_dir is not None  # postgres_unavailable_reason() checked it
        return str(self._bin_dir / name)

    def _pg_ctl(self, action: str, *options: str) -> list[str]:
        """A waiting ``pg_ctl`` command (bounded by a timeout) on this data dir."""
        return [
            self._tool("pg_ctl"),
            action,
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            str(_PG_CTL_TIMEOUT_S),
            *options,
        ]

    @staticmethod
    def _owner_prefix() -> list[str]:
        return ["runuser", "-u", _OS_USER, "--"] if os.geteuid() == 0 else []

    def _run_as_owner(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the data dir's owner, from the base dir (as root our cwd may be
        unreadable for postgres), with PG* variables removed so they cannot redirect it."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            [*self._owner_prefix(), *command],
            cwd=self.base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PG_CTL_TIMEOUT_S + 30,
            check=False,
        )

    def _postmaster_pid(self) -> int | None:
        if self._base_dir is None:
            return None
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
            return int(first_line)
        except (OSError, ValueError):
            return None

    def _failure(self, what: str, result: subprocess.CompletedProcess[str]) -> str:
        output = (result.stdout + result.stderr).strip()
        return f"{what} (exit {result.returncode}): {output}\n{self._log_tail()}"

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "server log, last lines:\n" + "\n".join(lines[-_LOG_TAIL_LINES:])


# Runs in the watchdog process: argv[1] is the stop command (JSON list), argv[2] a dir to delete or "".
# Anything on stdin means "closed normally"; bare EOF means the parent died.
_WATCHDOG_SOURCE = """
import json, shutil, subprocess, sys
if not sys.stdin.buffer.read():
    subprocess.run(json.loads(sys.argv[1]), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, check=False)
    if sys.argv[2]:
        shutil.rmtree(sys.argv[2], ignore_errors=True)
"""

_OPEN_SERVERS: set[PostgresServer] = set()


@atexit.register
def _close_open_servers() -> None:
    for server in list(_OPEN_SERVERS):
        with contextlib.suppress(Exception):
            server.close()


def _temp_parent() -> str | None:
    """Where temp dirs go: /dev/shm when it is a writable tmpfs with room, else the default."""
    try:
        usage = os.statvfs(_SHM_DIR)
    except OSError:
        return None
    if usage.f_bavail * usage.f_frsize < _SHM_MIN_FREE_BYTES or not os.access(_SHM_DIR, os.W_OK):
        return None
    return str(_SHM_DIR)


def _free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 and that nobody was listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped) does not count."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
        return _signal_alive(pid)  # no procfs (macOS): zombies cannot be told apart here
    except OSError:
        return _signal_alive(pid)
    state = stat.rpartition(")")[2].split()[0]  # the command name may contain spaces and ")"
    return state not in {"Z", "X"}


def _signal_alive(pid: int) -> bool:
    """Signal 0 checks existence only; PermissionError still means the process exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the postmaster's backends and helpers), from /proc; [] without it."""
    return [child for child, parent in _proc_parents() if parent == pid]


def _proc_parents() -> Iterator[tuple[int, int]]:
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        yield int(entry.name), int(fields[1])
