"""The scenarios of issue 8 and the contenders they run. Each returns plain data for ``bench.report``.

A — catch-up throughput (syncd, dlt, floor; plus the simulator's own serve rate), on SQLite.
B — syncd's peak RSS with a large backlog against a 10x smaller one.
C — idle cost: requests per tick per source, counted at the simulators, and CPU ms per tick.
D — A's syncd (and floor, for reference) on a throwaway PostgreSQL.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, ROOT, BenchError, Measured, SimHost, base_env, checked, measure, tree_cpu
from bench.simhost import GITHUB_REPO, GITHUB_TOKEN, WORKOS_KEY

_ONCE_LINE = re.compile(r"(\d+) events \((\d+) new\), (\d+) runs ok, (\d+) failed")


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run (``full`` or ``quick``)."""

    a_events: int
    runs: int
    b_events: tuple[int, int]  # (small, large)
    c_ticks: int
    c_github_issues: int
    d_events: int
    d_runs: int
    timeout: float  # per contender run, seconds
    e_events: int = 20_000
    e_latency: float = 0.05  # seconds per page of the slow provider
    f_runs: tuple[int, ...] = (300, 3_000)  # F (bench.runqueue): workflow runs on one replica
    f_replica_runs: int = 3_000  # F: runs for 1 vs 3 replicas on PostgreSQL
    f_catchup_events: int = 100_000  # F: the catch-up A/B against the code before the run queue
    f_baseline: str | None = None  # F: that code's git revision (None: bench.runqueue.BASELINE)

    @classmethod
    def full(cls) -> Config:
        return cls(
            a_events=200_000,
            runs=3,
            b_events=(100_000, 1_000_000),
            c_ticks=100,
            c_github_issues=500,
            d_events=100_000,
            d_runs=5,  # issue 26's target is a ratio of wall times on 2 shared cores: more rounds, alternated
            timeout=1800,
            e_events=20_000,
        )

    @classmethod
    def quick(cls) -> Config:
        return cls(
            a_events=20_000,
            runs=3,
            b_events=(10_000, 100_000),
            c_ticks=20,
            c_github_issues=200,
            d_events=20_000,
            d_runs=3,
            timeout=900,
            e_events=5_000,
            f_runs=(300,),
            f_replica_runs=300,
            f_catchup_events=20_000,
        )


@dataclass(frozen=True)
class Sample:
    """One run of one contender."""

    contender: str
    events: int
    wall: float
    cpu: float
    peak_rss_mb: float
    simulator_cpu: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall if self.wall else 0.0

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu / self.events * 10_000 if self.events else 0.0


Contender = Callable[[SimHost, Path], Sample]


def _timed(
    name: str, sim: SimHost, command: list[str], env: dict[str, str], workdir: Path, timeout: float
) -> tuple[Measured, float]:
    sim_before = sim.cpu()
    result = checked(measure(command, env=env, cwd=workdir, timeout=timeout), name)
    return result, sim.cpu() - sim_before


def syncd_once(
    database_url: str | None = None, *, timeout: float, name: str = "syncd", **extra_env: str
) -> Contender:
    """``syncd once`` with the built-in WorkOS mirrors into a fresh database (SQLite in the workdir)."""

    def run(sim: SimHost, workdir: Path) -> Sample:
        url = database_url or f"sqlite:///{workdir / 'syncd.db'}"
        env = base_env(
            DATABASE_URL=url,
            WORKOS_API_KEY=WORKOS_KEY,
            WORKOS_BASE_URL=sim.workos,
            SYNCD_SOURCES="workos",
            SYNCD_HTTP_PORT="0",
            LOG_LEVEL="WARNING",
            **extra_env,
        )
        result, sim_cpu = _timed(name, sim, [PYTHON, "-m", "syncd", "once"], env, workdir, timeout)
        found = _ONCE_LINE.search(result.stdout)
        if found is None:
            raise BenchError(f"{name}: unexpected output: {result.stdout[-500:]}")
        events, new, ok, failed = map(int, found.groups())
        if failed or new != events or ok != events:
            raise BenchError(f"{name}: {events} events, {new} new, {ok} runs ok, {failed} failed")
        return Sample(name, events, result.wall, result.cpu, result.peak_rss_mb, sim_cpu)

    return run


def dlt_rest(*, timeout: float) -> Contender:
    def run(sim: SimHost, workdir: Path) -> Sample:
        command = [
            PYTHON,
            "-m",
            "bench.contenders.dlt_rest",
            "--url",
            sim.workos,
            "--key",
            WORKOS_KEY,
            "--database",
            str(workdir / "dlt.db"),
            "--workdir",
            str(workdir / "dlt"),
        ]
        result, sim_cpu = _timed("dlt", sim, command, base_env(), workdir, timeout)
        return Sample(
            "dlt", int(result.report()["events"]), result.wall, result.cpu, result.peak_rss_mb, sim_cpu
        )

    return run


def floor(database_url: str | None = None, *, timeout: float, name: str = "floor") -> Contender:
    def run(sim: SimHost, workdir: Path) -> Sample:
        database = database_url or str(workdir / "floor.db")
        command = [
            PYTHON,
            "-m",
            "bench.contenders.floor",
            "--url",
            sim.workos,
            "--key",
            WORKOS_KEY,
            "--database",
            database,
        ]
        result, sim_cpu = _timed(name, sim, command, base_env(), workdir, timeout)
        return Sample(
            name, int(result.report()["events"]), result.wall, result.cpu, result.peak_rss_mb, sim_cpu
        )

    return run


def drain(*, timeout: float) -> Contender:
    """The simulator's serve rate: a client that does nothing but fetch the pages."""

    def run(sim: SimHost, workdir: Path) -> Sample:
        command = [PYTHON, "-m", "bench.contenders.drain", "--url", sim.workos, "--key", WORKOS_KEY]
        result, sim_cpu = _timed("simulator", sim, command, base_env(), workdir, timeout)
        report = result.report()
        return Sample(
            "simulator alone",
            int(report["events"]),
            result.wall,
            result.cpu,
            result.peak_rss_mb,
            sim_cpu,
            extra={"pages": report["pages"], "bytes": report["bytes"]},
        )

    return run


def alternate(
    contenders: dict[str, Contender], sim: SimHost, runs: int, progress: Callable[[str], None]
) -> dict[str, list[Sample]]:
    """``runs`` rounds; each round runs every contender once, the order rotated between rounds, each in a
    fresh directory (so a fresh SQLite file) that is deleted afterwards."""
    names = list(contenders)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for round_ in range(runs):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name.replace(' ', '_')}-"))
            try:
                sample = contenders[name](sim, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            samples[name].append(sample)
            progress(
                f"  run {round_ + 1}/{runs} {name}: {sample.events:,} events in {sample.wall:.1f}s "
                f"({sample.events_per_second:,.0f}/s), CPU {sample.cpu:.1f}s, RSS {sample.peak_rss_mb:.0f} MB"
            )
    return samples


def consistent(samples: dict[str, list[Sample]]) -> int:
    """Every run of every contender saw the same number of events (else BenchError); returns it."""
    seen = {s.events for runs in samples.values() for s in runs}
    if len(seen) != 1:
        detail = {name: [s.events for s in runs] for name, runs in samples.items()}
        raise BenchError(f"contenders disagree on the number of events: {detail}")
    return seen.pop()


# ---- scenarios ---------------------------------------------------------------------------------------


def scenario_a(config: Config, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"A: catch-up of {config.a_events:,} events, {config.runs} alternated runs")
    with SimHost(workos_events=config.a_events) as sim:
        progress(f"  simulator ready in {sim.startup_seconds:.1f}s")
        samples = alternate(
            {
                "syncd": syncd_once(timeout=config.timeout),
                "dlt": dlt_rest(timeout=config.timeout),
                "floor": floor(timeout=config.timeout),
                "simulator alone": drain(timeout=config.timeout),
            },
            sim,
            config.runs,
            progress,
        )
    events = consistent(samples)
    return {"events_generated": config.a_events, "events_served": events, "samples": samples}


def scenario_b(config: Config, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"B: syncd peak RSS, {config.b_events[0]:,} vs {config.b_events[1]:,} events")
    samples: dict[str, list[Sample]] = {}
    for count in config.b_events:
        with SimHost(workos_events=count) as sim:
            progress(f"  simulator with {count:,} events ready in {sim.startup_seconds:.1f}s")
            timeout = config.timeout * max(1, count // config.a_events)
            runs = alternate(
                {f"syncd {count:,}": syncd_once(timeout=timeout, name=f"syncd {count:,}")}, sim, 1, progress
            )
            samples.update(runs)
    return {"samples": samples, "sizes": config.b_events}


def scenario_c(config: Config, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"C: {config.c_ticks} idle ticks, WorkOS and GitHub")
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    try:
        with SimHost(workos_events=2_000, github_issues=config.c_github_issues) as sim:
            env = base_env(
                DATABASE_URL=f"sqlite:///{workdir / 'idle.db'}",
                WORKOS_API_KEY=WORKOS_KEY,
                WORKOS_BASE_URL=sim.workos,
                GITHUB_REPOS=GITHUB_REPO,
                GITHUB_TOKEN=GITHUB_TOKEN,
                GITHUB_BASE_URL=sim.github,
                SYNCD_HTTP_PORT="0",
                LOG_LEVEL="WARNING",
            )
            command = [
                PYTHON,
                "-m",
                "bench.contenders.idle",
                "--ticks",
                str(config.c_ticks),
                "--stats",
                sim.urls["stats"],
            ]
            result = checked(measure(command, env=env, cwd=workdir, timeout=config.timeout), "idle ticks")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = result.report()
    progress(f"  requests per tick {report['requests']}, CPU ms per tick {report['cpu_ms']}")
    return {**report, "peak_rss_mb": result.peak_rss_mb}


def scenario_d(config: Config, progress: Callable[[str], None]) -> dict[str, Any]:
    from tests.pgserver import PostgresServer, postgres_unavailable_reason

    reason = postgres_unavailable_reason()
    if reason is not None:
        progress(f"D: skipped: {reason}")
        return {"skipped": reason}
    progress(f"D: syncd on PostgreSQL, {config.d_events:,} events, {config.d_runs} runs")
    from bench.runqueue import compiled

    compiled(ROOT)  # children never write .pyc files: without these, each start would compile syncd anew
    with PostgresServer() as server, SimHost(workos_events=config.d_events) as sim:
        version = _server_version(server.url)
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        server_cpu: dict[str, list[float]] = {"syncd on Postgres": [], "floor on Postgres": []}
        load: list[float] = []  # the 1-minute load average as each run starts (2 shared cores here)

        def on_fresh_database(contender: Callable[..., Contender], name: str) -> Contender:
            def run(sim: SimHost, workdir: Path) -> Sample:
                url = server.create_database()
                load.append(os.getloadavg()[0])
                before = tree_cpu(postmaster)
                sample = contender(url, timeout=config.timeout, name=name)(sim, workdir)
                server_cpu[name].append(tree_cpu(postmaster) - before)
                return sample

            return run

        samples = alternate(
            {
                "syncd on Postgres": on_fresh_database(syncd_once, "syncd on Postgres"),
                "floor on Postgres": on_fresh_database(floor, "floor on Postgres"),
            },
            sim,
            config.d_runs,
            progress,
        )
    consistent(samples)
    return {"samples": samples, "server_cpu": server_cpu, "postgres": version, "load": load}


def scenario_e(config: Config, progress: Callable[[str], None]) -> dict[str, Any]:
    """A catch-up against a provider at a real API's pace (``e_latency`` per page), on PostgreSQL, with and
    without prefetching (``SYNCD_PREFETCH_PAGES``): what hides the provider's round trips."""
    from tests.pgserver import PostgresServer, postgres_unavailable_reason

    reason = postgres_unavailable_reason()
    if reason is not None:
        progress(f"E: skipped: {reason}")
        return {"skipped": reason}
    progress(
        f"E: {config.e_events:,} events from a provider taking {config.e_latency * 1000:.0f} ms per page, "
        f"PostgreSQL, {config.d_runs} runs"
    )
    with PostgresServer() as server, SimHost(workos_events=config.e_events, workos_latency=config.e_latency) as sim:

        def on_fresh_database(name: str, pages: str) -> Contender:
            def run(sim: SimHost, workdir: Path) -> Sample:
                contender = syncd_once(
                    server.create_database(), timeout=config.timeout, name=name, SYNCD_PREFETCH_PAGES=pages
                )
                return contender(sim, workdir)

            return run

        samples = alternate(
            {
                "syncd, no prefetch": on_fresh_database("syncd, no prefetch", "0"),
                "syncd, 20 pages ahead": on_fresh_database("syncd, 20 pages ahead", "20"),
            },
            sim,
            config.d_runs,
            progress,
        )
    events = consistent(samples)
    pages = -(-events // 100)
    return {"samples": samples, "latency": config.e_latency, "bound": events / (pages * config.e_latency)}


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def sqlite_version() -> str:
    return sqlite3.sqlite_version


__all__ = ["ROOT", "Config", "Sample", "scenario_a", "scenario_b", "scenario_c", "scenario_d"]
