"""Several ``syncd run`` processes on one PostgreSQL: every event once, the mirrors exact, work moving (and
moving on at once from a replica that was killed).

The cluster: a WorkOS simulator subprocess holding 15,000 events, an in-process GitHub simulator with three
repositories (so there are four sources whose leases can sit on different replicas at once), and N
``syncd run`` subprocesses (``SYNC_INTERVAL_SECONDS=1``, ``SYNCD_LEASE_SECONDS=10``). Syncd requests the
WorkOS ``organization.*`` types only (~1,600 of the 15,000 events, ~3,200 runs plus GitHub's 360): enough for
every replica's 16 workers to compete for runs, and small enough for the suite's 10-minute budget.

Besides the built-in mirrors, every replica loads a probe workflow module that appends one row per
execution to ``probe_effects`` (no unique key), so an effect committed twice would show as two rows,
which the run table, one row per (workflow, event), could never reveal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from simulators.github import DEFAULT_TOKEN, GitHubSimulator
from simulators.workos import DEFAULT_NOW, WorkOSSimulator
from syncd.timefmt import parse_time
from tests.pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
EVENTS, SEED = 15_000, 42
KILL_EVENTS = 20_000  # ~2,100 organization events: 21 pages, served KILL_LATENCY apart …
#: … so a transaction (at most 1 s of pages) holds about 1,000 of them however fast the machine: the kill after the
#: first commit lands mid-sync, in the middle of the next transaction (asserted: the victim still holds the lease).
KILL_LATENCY = 0.1
WORKOS_KEY = "sk_test_replicas_7c1e"
ORG_TYPES = ("organization.created", "organization.updated", "organization.deleted")
REPOS = {"acme/r1": 60, "acme/r2": 60, "acme/r3": 60}
#: Above the slowest page seen on a loaded 2-core CI box (~6 s): shorter, replicas fence each other out.
LEASE_SECONDS = 10
#: Generous: other test runs may share the machine; unloaded, the 50,000-event run takes ~40 s.
SYNC_TIMEOUT = 300
MIRRORS = {"workos": "workos.mirror.organizations", "github": "github.mirror.issues"}

PROBE_MODULE = textwrap.dedent('''
    """Test probe: one appended row per workflow execution, tagged with the replica that ran it."""
    import os

    import sqlalchemy as sa

    from connectors import github, workos
    from syncd.workflows import workflow

    REPLICA = os.environ.get("SYNCD_REPLICA_ID")
    INSERT = sa.text("INSERT INTO probe_effects (workflow, stream, event_id, replica) "
                     "VALUES (:w, :s, :e, :r)")


    def effect(name):
        def handler(event, ctx):
            ctx.db.execute(INSERT, {"w": name, "s": event.stream, "e": event.id, "r": REPLICA})
        return handler


    workflow("probe.workos", on=workos.events(*ORG_TYPES))(effect("probe.workos"))
    workflow("probe.github", on=github.issues())(effect("probe.github"))
''').replace("ORG_TYPES", repr(ORG_TYPES))

PROBE_TABLE = """CREATE TABLE probe_effects (seq BIGSERIAL PRIMARY KEY, workflow TEXT NOT NULL,
                 stream TEXT NOT NULL, event_id TEXT NOT NULL, replica TEXT)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll ``check`` (database errors count as "not yet") until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (sa.exc.DBAPIError, sa.exc.NoResultFound):  # down, or not created yet
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---- what the database must end up holding -------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """The exact end state: runs per (workflow, stream, event) and the mirror tables' contents."""

    runs: frozenset[tuple[str, str, str]]
    organizations: dict[str, tuple[Any, ...]]
    issues: dict[int, tuple[Any, ...]]
    github_streams: dict[str, frozenset[int]]  # stream → issue ids (one event per issue: the sim is static)

    @property
    def total_runs(self) -> int:
        return len(self.runs) + 2 * sum(len(ids) for ids in self.github_streams.values())


def expected_state(github: GitHubSimulator, events: int = EVENTS) -> Expected:
    """Computed without syncd: the WorkOS stream regenerated from its seed, GitHub's issues as served."""
    workos = WorkOSSimulator(events=events, seed=SEED, now=DEFAULT_NOW)
    org_events = [e["id"] for e in workos.events() if e["event"] in ORG_TYPES]
    runs = {(wf, "workos", e) for e in org_events for wf in (MIRRORS["workos"], "probe.workos")}
    final = workos.final_state(set(ORG_TYPES))
    organizations = {oid: (d.get("name"), parse_time(d["updated_at"]))
                     for oid, d in final["organizations"].items()}
    issues: dict[int, tuple[Any, ...]] = {}
    streams: dict[str, frozenset[int]] = {}
    for repo in REPOS:
        served = github.issues(repo)
        streams[f"github:{repo}"] = frozenset(served)
        issues.update({i: (repo, d["number"], d["title"], d["state"], parse_time(d["updated_at"]))
                       for i, d in served.items()})
    assert not final["users"] and not final["organization_memberships"]
    return Expected(frozenset(runs), organizations, issues, streams)


def run_count(db: Engine) -> int:
    with db.connect() as conn:
        query = sa.text("SELECT count(*) FROM syncd_runs WHERE status = 'succeeded'")
        return int(conn.execute(query).scalar_one())


def assert_exact(db: Engine, expected: Expected, *, interrupted: int = 0) -> None:
    """Every (workflow, event) run exactly once and succeeded, each probe effect once, mirrors equal.
    ``interrupted``: how many runs may have a second attempt (their first lost the database mid-run)."""
    with db.connect() as conn:
        runs = conn.execute(sa.text(
            "SELECT workflow, stream, event_id, status, attempts FROM syncd_runs")).all()
        effects = Counter(tuple(r) for r in conn.execute(
            sa.text("SELECT workflow, stream, event_id FROM probe_effects")))
        ledger = conn.execute(sa.text("SELECT stream, event_id FROM syncd_events")).all()
        orgs = {r.id: (r.name, r.updated_at) for r in conn.execute(
            sa.text("SELECT id, name, updated_at FROM workos_organizations"))}
        issues = {r.id: (r.repo, r.number, r.title, r.state, r.updated_at) for r in conn.execute(
            sa.text("SELECT id, repo, number, title, state, updated_at FROM github_issues"))}
        others = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM workos_users)"
            " + (SELECT count(*) FROM workos_organization_memberships)"
        )).scalar_one()

    assert {r.status for r in runs} == {"succeeded"}
    retried = [r for r in runs if r.attempts != 1]
    assert len(retried) <= interrupted and {r.attempts for r in retried} <= {2}, retried[:5]
    keys = {(r.workflow, r.stream, r.event_id) for r in runs}
    assert len(keys) == len(runs) == expected.total_runs
    assert {k for k in keys if k[1] == "workos"} == expected.runs
    for stream, issue_ids in expected.github_streams.items():
        events = [e for s, e in ledger if s == stream]
        assert sorted(int(e.split("@", 1)[0]) for e in events) == sorted(issue_ids), stream
        assert {k for k in keys if k[1] == stream} == {(wf, stream, e) for e in events
                                                       for wf in (MIRRORS["github"], "probe.github")}
    assert set(effects.values()) == {1}, [k for k, n in effects.items() if n > 1][:5]  # no effect twice
    assert set(effects) == {k for k in keys if k[0].startswith("probe.")}
    assert orgs == expected.organizations
    assert issues == expected.issues
    assert others == 0


# ---- the cluster -----------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Simulators plus ``syncd run`` replicas (subprocesses) on one database; stopped by ``close``."""

    db_url: str
    workdir: Path
    github: GitHubSimulator
    events: int = EVENTS
    latency: float = 0.0  # seconds per WorkOS page
    workos_url: str = ""
    replicas: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _simulator: subprocess.Popen[str] | None = None

    def start_workos(self) -> None:
        port = free_port()
        self._simulator = subprocess.Popen(
            [sys.executable, "-m", "simulators.workos", "--events", str(self.events),
             "--seed", str(SEED), "--port", str(port), "--api-key", WORKOS_KEY,
             "--now", DEFAULT_NOW.isoformat(), "--latency", str(self.latency)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        assert self._simulator.stdout is not None
        line = self._simulator.stdout.readline()  # printed once it listens
        assert "WorkOS simulator on" in line, line
        self.workos_url = f"http://127.0.0.1:{port}"

    def env(self, name: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([str(self.workdir), str(ROOT)]),
            "DATABASE_URL": self.db_url, "SYNC_INTERVAL_SECONDS": "1",
            "SYNCD_LEASE_SECONDS": str(LEASE_SECONDS),
            "SYNCD_REPLICA_ID": name, "SYNCD_WORKFLOWS": "replica_probe", "SYNCD_HTTP_PORT": "0",
            "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": self.workos_url,
            "WORKOS_EVENTS": ",".join(ORG_TYPES),
            "GITHUB_REPOS": ",".join(REPOS), "GITHUB_TOKEN": DEFAULT_TOKEN,
            "GITHUB_BASE_URL": self.github.url,
            "LOG_FORMAT": "text", "LOG_LEVEL": "INFO", "OTEL_SDK_DISABLED": "true",
            "OTEL_TRACES_EXPORTER": "none",
        }

    def start(self, *names: str) -> None:
        for name in names:
            log = (self.workdir / f"{name}.log").open("wb")
            self.replicas[name] = subprocess.Popen([sys.executable, "-m", "syncd", "run"], env=self.env(name),
                                                   cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def alive(self) -> list[str]:
        return [n for n, p in self.replicas.items() if p.poll() is None]

    def kill(self, name: str) -> None:
        self.replicas[name].send_signal(signal.SIGKILL)
        self.replicas[name].wait(10)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every live replica; their exit codes (None: had to be killed after 10 s)."""
        codes: dict[str, int | None] = {}
        for proc in self.replicas.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.replicas.items():
            try:
                codes[name] = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                codes[name] = None
        return codes

    def close(self) -> None:
        self.stop()
        if self._simulator is not None:
            self._simulator.terminate()
            try:
                self._simulator.wait(10)
            except subprocess.TimeoutExpired:
                self._simulator.kill()
            if self._simulator.stdout is not None:
                self._simulator.stdout.close()


def prepare_database(db_url: str) -> Engine:
    """A polling engine for the test (no pool: it must survive a server restart) and the probe table."""
    db = sa.create_engine(db_url, poolclass=NullPool)
    with db.begin() as conn:
        conn.execute(sa.text(PROBE_TABLE))
    return db


@pytest.fixture
def cluster_for(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``cluster_for(db_url, events=, latency=)``: simulators up, probe module written; the test starts
    replicas."""
    made: list[Cluster] = []
    github = GitHubSimulator(repos=dict(REPOS), seed=SEED)
    github.start()
    (tmp_path / "replica_probe.py").write_text(PROBE_MODULE)

    def make(db_url: str, events: int = EVENTS, latency: float = 0.0) -> Cluster:
        cluster = Cluster(db_url=db_url, workdir=tmp_path, github=github, events=events, latency=latency)
        made.append(cluster)
        cluster.start_workos()
        return cluster

    yield make
    for cluster in made:
        cluster.close()
    github.stop()


def source_row(db: Engine, key: str) -> Any:
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT lease_owner, lease_token, lease_expires_at, events_seen, cursor "
                                    "FROM syncd_sources WHERE key = :k"), {"k": key}).one()


def lease_holders(db: Engine) -> dict[str, set[str]]:
    """Source → the replicas that recorded a tick of it (a tick is recorded only under the lease)."""
    holders: dict[str, set[str]] = {}
    with db.connect() as conn:
        for source, replica in conn.execute(sa.text("SELECT DISTINCT source, replica FROM syncd_ticks")):
            holders.setdefault(source, set()).add(replica)
    return holders


# ---- the tests ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_three_replicas_process_every_event_exactly_once(pg_server: PostgresServer,
                                                         cluster_for: Callable[..., Cluster]) -> None:
    db_url = pg_server.create_database()
    db = prepare_database(db_url)
    cluster = cluster_for(db_url)
    expected = expected_state(cluster.github)
    began = time.monotonic()
    cluster.start("replica-1", "replica-2", "replica-3")  # all at once: they also race on the migrations

    wait_until(lambda: run_count(db) >= expected.total_runs, SYNC_TIMEOUT,
               f"{expected.total_runs} succeeded runs")
    synced = time.monotonic() - began
    # Idle ticks hand leases around, but which replica's timer fires first after a release is up to their
    # phases (no rotation is promised): wait until some source was held by two replicas, i.e. leases move.
    wait_until(lambda: any(len(r) >= 2 for r in lease_holders(db).values()), 60, "a lease to change hands")
    handed_over = time.monotonic() - began
    codes = cluster.stop()

    assert codes == {"replica-1": 0, "replica-2": 0, "replica-3": 0}  # graceful stop, no crash
    assert_exact(db, expected)
    holders = lease_holders(db)
    assert set(holders) == {"workos", *(f"github:{r}" for r in REPOS)}
    with db.connect() as conn:
        query = sa.text("SELECT replica, count(*) FROM probe_effects GROUP BY 1")
        workers = {replica: count for replica, count in conn.execute(query)}
    assert len(workers) >= 2, workers  # runs are claimed by every replica's workers, not only the lease holder's
    print(f"\n{expected.total_runs} runs in {synced:.1f}s (leases moved by {handed_over:.1f}s); "
          f"effects per replica {workers}; "
          f"lease holders {holders}")


@pytest.mark.postgres
def test_a_killed_replicas_sources_are_taken_over_at_once(
        pg_server: PostgresServer, cluster_for: Callable[..., Cluster]) -> None:
    db_url = pg_server.create_database()
    db = prepare_database(db_url)
    cluster = cluster_for(db_url, events=KILL_EVENTS, latency=KILL_LATENCY)
    expected = expected_state(cluster.github, KILL_EVENTS)
    cluster.start("replica-1", "replica-2", "replica-3")

    # polled often: the kill must follow the first commit while the next transaction is open
    wait_until(lambda: source_row(db, "workos").events_seen >= 600, 90, "the WorkOS sync to be under way",
               interval=0.02)
    orphan = source_row(db, "workos")
    victim = orphan.lease_owner
    assert victim in cluster.replicas  # the WorkOS lease was held: the sync was not over …
    assert orphan.events_seen < len(expected.runs) // 2  # … and events were left for the next transactions
    cluster.kill(victim)  # SIGKILL: no release, its open page transaction dies with its connections
    killed, killed_at = datetime.now(UTC), time.monotonic()
    assert run_count(db) < expected.total_runs

    wait_until(lambda: run_count(db) >= expected.total_runs, SYNC_TIMEOUT, "the survivors to finish the sync")
    took_over = source_row(db, "workos")
    codes = cluster.stop()

    assert took_over.lease_token > orphan.lease_token  # another replica took it over: a new token
    with db.connect() as conn:  # a tick is recorded only by the replica that held the lease
        first_takeover = conn.execute(sa.text(
            "SELECT min(started_at) FROM syncd_ticks WHERE source = 'workos' AND started_at > :k"),
            {"k": killed}).scalar_one()
    # … long before the victim's lease would have expired: its owner lock died with it
    assert first_takeover < orphan.lease_expires_at
    assert victim not in cluster.alive() and codes[victim] == -signal.SIGKILL
    assert all(codes[n] == 0 for n in cluster.replicas if n != victim)
    # The runs the victim was executing (at most its 16 workers') lost that attempt and ran again elsewhere.
    assert_exact(db, expected, interrupted=16)
    print(f"\nkilled {victim} at {killed:%H:%M:%S.%f}; "
          f"its lease would have expired {orphan.lease_expires_at:%H:%M:%S.%f}, "
          f"taken over {first_takeover:%H:%M:%S.%f}; done {time.monotonic() - killed_at:.1f}s after the kill")
