"""Backfills (issue 7): windows with their own cursor beside live sync, exactly-once runs, resume after
SIGKILL, ``--workflow``, validation of every range input, retention warnings and progress reporting.

Effects are counted in a test table written by the workflows through ``ctx.db`` (one row per execution),
so "no duplicate run" means no workflow ran twice — not merely that the run table's unique key held.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from rich.console import Console

from connectors import github, workos
from simulators.github import GitHubSimulator
from simulators.workos import Faults, WorkOSSimulator
from syncd import cli, store, workflows
from syncd.contracts import Event, Page, SystemClock, Window
from syncd.engine import SyncEngine, Target
from syncd.errors import ConfigError
from syncd.ops import status
from syncd.ops.app import App
from syncd.ops.backfill import (
    LogProgress,
    RichProgress,
    drive,
    drive_all,
    parse_flags,
    retention_warnings,
    targets_for,
    window_engine,
)
from syncd.store.db import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.tables import runs, sources
from syncd.timefmt import parse_time
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for

GITHUB_TOKEN = "ghp_test_backfill_7c2e"
ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)  # the simulator's history ends here

effects_md = sa.MetaData()
effects = sa.Table("bf_effects", effects_md,
                   sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                   sa.Column("workflow", sa.String(50), nullable=False),
                   sa.Column("event_id", sa.String(64), nullable=False))

WORKFLOWS_MODULE = """
import sqlalchemy as sa
from connectors import github, workos
from simulators.github import GitHubSimulator
from syncd import workflow

effects = sa.table("bf_effects", sa.column("workflow"), sa.column("event_id"))

def record(name):
    def handler(event, ctx):
        ctx.db.execute(sa.insert(effects).values(workflow=name, event_id=event.id))
    return handler

for name in ("a", "b", "c"):
    workflow(name=name, on=workos.events())(record(name))
"""


# ---- helpers -------------------------------------------------------------------------------------


def registry_of(*names: str, on: Callable[[], workflows.Trigger] = workos.events) -> Registry:
    """Workflows that record one effect row per execution, on every WorkOS event (or ``on()``)."""
    registry = Registry()
    for name in names:
        def handler(event: Event, ctx: Context, name: str = name) -> None:
            ctx.db.execute(sa.insert(effects).values(workflow=name, event_id=event.id))

        registry.workflow(name, on=on())(handler)
    return registry


def make_sim(events: int, seed: int = 3) -> WorkOSSimulator:
    return WorkOSSimulator(events=events, seed=seed, api_key=WORKOS_KEY, now=NOW)


def sim_env(sim: WorkOSSimulator) -> dict[str, str]:
    types = sorted({e["event"] for e in sim.events()})
    return {"WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": sim.url, "WORKOS_EVENTS": ",".join(types),
            "SYNCD_BUILTINS": "none"}


def event_times(sim: WorkOSSimulator) -> list[tuple[str, datetime]]:
    return [(e["id"], datetime.fromisoformat(e["created_at"].replace("Z", "+00:00"))) for e in sim.events()]


def window_over(sim: WorkOSSimulator, first: int, last: int) -> tuple[Window, set[str]]:
    """[time of event ``first``, time of event ``last``): includes ``first``, excludes ``last``."""
    times = event_times(sim)
    window = Window(times[first][1], times[last][1])
    return window, {i for i, t in times if window.contains(t)}


def prepare(db_url: str) -> sa.Engine:
    """syncd's schema and the effects table."""
    db = create_engine(db_url)
    migrate(db)
    effects_md.create_all(db)
    return db


def runs_of(db: sa.Engine, workflow: str) -> set[str]:
    with db.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(runs.c.event_id).where(runs.c.workflow == workflow))}


def effect_counts(db: sa.Engine) -> dict[tuple[str, str], int]:
    with db.connect() as conn:
        rows = conn.execute(sa.select(effects.c.workflow, effects.c.event_id, sa.func.count())
                            .group_by(effects.c.workflow, effects.c.event_id))
        return {(r[0], r[1]): int(r[2]) for r in rows}


def backfill_row(db: sa.Engine) -> store.SourceRow:
    with db.connect() as conn:
        keys = [r[0] for r in conn.execute(sa.select(sources.c.key).where(sources.c.kind == "backfill"))]
        assert len(keys) == 1, keys
    row = SqlReads(db).source(keys[0])
    assert row is not None
    return row


def ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def syncd(args: list[str], env: dict[str, str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    # The timeout only guards against a hang: the SIGKILL test's restart (1,000 runs) takes about 10 s on a
    # quiet machine, 41-47 s at load 9, and once passed the former 60 s at load 13-18.
    return subprocess.run([sys.executable, "-m", "syncd", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, **kwargs)


def process_env(db_url: str, extra: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bf_workflows.py").write_text(WORKFLOWS_MODULE)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
           "DATABASE_URL": db_url, "OTEL_TRACES_EXPORTER": "none", "LOG_FORMAT": "json",
           "SYNCD_ENV_FILE": str(tmp_path / "none.env"), "SYNCD_HTTP_PORT": "0"}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``cli.main`` installs syncd's log handler on the (captured) stderr; take it away again."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def bare_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with nothing but a database, for validation errors."""
    yield {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "OTEL_TRACES_EXPORTER": "none",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}", "SYNCD_ENV_FILE": str(tmp_path / "none.env")}


# ---- semantics -----------------------------------------------------------------------------------


def test_window_runs_exactly_its_events_while_live_ticks_continue(
        db_url: str, make_app: Callable[..., App]) -> None:
    """A workflow added since: the backfill gives it exactly the window's events, none outside, while
    live ticks (with new events) run between its pages on the same database."""
    db = prepare(db_url)
    with make_sim(600) as sim:
        env = sim_env(sim)
        old = make_app(db_url, registry=registry_of("a"), **env)
        assert all(r.ok and r.caught_up for r in old.tick_all())
        original = [i for i, _ in event_times(sim)]
        window, inside = window_over(sim, 150, 450)
        assert len(inside) == 300

        app = make_app(db_url, registry=registry_of("a", "b"), **env)
        live_ticks = []

        def between_pages(target: Target, page: Page) -> None:
            sim.generate(7)  # live traffic arrives while the backfill runs
            live_ticks.append(app.tick(app.connectors[0]))

        engine = window_engine(app, between_pages)
        result = drive(engine, Target(app.connectors[0], window))

    assert result.state == "done" and result.events == 300
    # Whoever drains the queue first runs the window's queued runs (here the live ticks between its pages):
    # every run is counted once, by the tick that executed it — the window's 300, plus 2 x 7 per live tick.
    assert result.runs_ok + sum(t.runs_ok for t in live_ticks) == 300 + 14 * len(live_ticks)
    assert len(live_ticks) >= 3 and all(t.ok and t.new_events == 7 for t in live_ticks)
    generated = [i for i, _ in event_times(sim)][600:]
    assert runs_of(db, "b") == inside | set(generated)  # the window, plus live events after the deploy
    assert runs_of(db, "b") & set(original) == inside  # nothing before or after the window
    assert runs_of(db, "a") == set(original) | set(generated)
    assert set(effect_counts(db).values()) == {1}  # no workflow ran twice on any event
    row = backfill_row(db)
    assert (row.state, row.progress) == ("done", 1.0)
    assert (row.window_start, row.window_end) == (window.start, window.end)
    live = SqlReads(db).source("workos")
    assert live is not None and live.cursor == generated[-1]  # the live cursor is its own
    db.dispose()


def test_concurrent_live_and_backfill_run_each_event_once(db_url: str, make_app: Callable[..., App]) -> None:
    """First connection: live sync from the start and a backfill over the same events, in two threads."""
    db = prepare(db_url)
    with make_sim(600, seed=5) as sim:
        env = sim_env(sim)
        live = make_app(db_url, registry=registry_of("a", "b"), **env)
        filler = make_app(db_url, registry=registry_of("a", "b"), **env)
        window, _ = window_over(sim, 0, 599)
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(target=lambda: results.update(live=live.tick_all())),
            threading.Thread(target=lambda: results.update(
                backfill=drive(window_engine(filler, None), Target(filler.connectors[0], window)))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert all(r.ok for r in results["live"]) and results["backfill"].state == "done"
    counts = effect_counts(db)
    assert len(counts) == 2 * 600 and set(counts.values()) == {1}
    assert results["live"][0].runs_ok + results["backfill"].runs_ok == 2 * 600
    db.dispose()


def test_overlap_with_synced_events_creates_no_runs_and_done_is_not_repeated(
        db_url: str, make_app: Callable[..., App]) -> None:
    db = prepare(db_url)
    with make_sim(400) as sim:
        app = make_app(db_url, registry=registry_of("a", "b"), **sim_env(sim))
        app.tick_all()
        before = effect_counts(db)
        window, _ = window_over(sim, 50, 350)
        engine = window_engine(app, None)
        target = Target(app.connectors[0], window)
        first = drive(engine, target)
        again = drive(engine, target)  # a restart with the same window
    assert (first.state, first.events, first.runs_ok, first.new_events) == ("done", 300, 0, 0)
    assert (again.state, again.syncs, again.events) == ("done", 0, 0)
    assert effect_counts(db) == before
    db.dispose()


def test_interrupted_backfill_resumes_from_its_cursor(sqlite_url: str, make_app: Callable[..., App]) -> None:
    db = prepare(sqlite_url)
    with make_sim(600) as sim:
        app = make_app(sqlite_url, registry=registry_of("a"), **sim_env(sim))
        window, inside = window_over(sim, 100, 500)
        target = Target(app.connectors[0], window)
        crashing = SyncEngine(store.SqlStore(app.db), app.registry, max_pages=2)  # stops after two pages: a crash
        partial = crashing.sync(target)
        row = backfill_row(db)
        assert partial.ok and not partial.caught_up and row.state == "active" and 0 < (row.progress or 0) < 1
        resumed = drive(window_engine(app, None), target)
    assert resumed.state == "done"
    assert partial.events + resumed.events == len(inside)  # the second run started where the first stopped
    assert runs_of(db, "a") == inside and set(effect_counts(db).values()) == {1}
    db.dispose()


def test_a_dead_replicas_lease_is_waited_for(sqlite_url: str, make_app: Callable[..., App]) -> None:
    db = prepare(sqlite_url)
    with make_sim(200) as sim:
        app = make_app(sqlite_url, registry=registry_of("a"), **sim_env(sim))
        window, inside = window_over(sim, 10, 190)
        target = Target(app.connectors[0], window)
        # a replica took the window's lease and died
        lease = store.SqlStore(app.db).claim(target.spec, owner="dead", lease_seconds=1.0, clock=SystemClock())
        assert isinstance(lease, store.SqlLease)
        started = time.monotonic()
        result = drive(window_engine(app, None), target)
    # generous: the dead replica's lease is 1 s; a window that waited for the default lease (30 s) would not fit
    assert result.state == "done" and result.syncs >= 2 and time.monotonic() - started < 15
    assert runs_of(db, "a") == inside
    db.dispose()


def test_github_window_is_since_start_and_stops_at_end(sqlite_url: str, make_app: Callable[..., App]) -> None:
    """GitHub: ``since`` = start, stop at ``updated_at`` ≥ end; the issue versions listed in the window
    get the new workflow, nothing else does, and live (conditional) ticks run between the pages."""
    db = prepare(sqlite_url)
    with GitHubSimulator(repos={"acme/web": 260}, seed=4, tokens=(GITHUB_TOKEN,)) as sim:
        env = {"GITHUB_REPOS": "acme/web", "GITHUB_BASE_URL": sim.url, "GITHUB_TOKEN": GITHUB_TOKEN,
               "SYNCD_BUILTINS": "none"}
        make_app(sqlite_url, registry=registry_of("a", on=github.issues), **env).tick_all()
        versions = {f"{i['id']}@{i['updated_at']}": parse_time(i["updated_at"])
                    for i in sim.issues("acme/web").values()}
        stamps = sorted(set(versions.values()))
        window = Window(stamps[len(stamps) // 6], stamps[5 * len(stamps) // 6])  # second-resolution stamps
        inside = {v for v, at in versions.items() if window.contains(at)}
        app = make_app(sqlite_url, registry=registry_of("a", "b", on=github.issues), **env)
        live = []
        engine = window_engine(app, lambda target, page: live.append(app.tick(app.connectors[0])))
        result = drive(engine, Target(app.connectors[0], window, "b"))
    assert result.state == "done" and result.pages >= 2 and len(live) == result.pages
    assert all(t.ok and t.new_events == 0 for t in live)
    assert runs_of(db, "b") == inside and runs_of(db, "a") == set(versions)
    assert set(effect_counts(db).values()) == {1}
    db.dispose()


# ---- processes: SIGKILL, --workflow, once and run ------------------------------------------------


def test_sigkilled_backfill_restarts_and_completes_without_duplicates(db_url: str, tmp_path: Path) -> None:
    db = prepare(db_url)
    with make_sim(1200) as sim:
        # every page takes ≥ 200 ms, so a transaction (up to 1 s of pages) holds at most ~500 of the window's
        # 1,000 events however fast the machine: the kill after the first commit lands mid-window (asserted)
        sim.faults = Faults(timeout_rate=1.0, slow_seconds=0.2)
        window, inside = window_over(sim, 100, 1100)
        # a short lease only bounds the test should the restart ever wait for it (it takes over at once: the
        # dead process's owner lock died with it)
        env = process_env(db_url, {**sim_env(sim), "SYNCD_WORKFLOWS": "bf_workflows",
                                   "SYNCD_LEASE_SECONDS": "5"}, tmp_path)
        flags = ["backfill", "--start", ms(window.start), "--end", ms(window.end), "--workflow", "a"]
        proc = subprocess.Popen([sys.executable, "-m", "syncd", *flags], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        progress = 0.0
        while time.monotonic() < deadline and progress <= 0:
            time.sleep(0.02)
            with db.connect() as conn:
                value = conn.execute(sa.select(sources.c.progress)
                                     .where(sources.c.kind == "backfill")).scalar()
            progress = float(value or 0)
        assert proc.poll() is None, "the backfill ended before the kill"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        assert proc.stderr is not None
        proc.stderr.close()
        killed = backfill_row(db)
        assert killed.state == "active" and 0 < (killed.progress or 0) < 1, killed
        shown = [s for s in status.collect(SqlReads(db))["sources"] if s["kind"] == "backfill"]
        assert shown[0]["window"]["progress"] == killed.progress and shown[0]["state"] == "active"
        partial = runs_of(db, "a")
        assert partial < inside

        sim.faults = Faults()
        done = syncd(flags, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "backfill done" in done.stdout and "resuming at" in done.stderr
    assert runs_of(db, "a") == inside
    counts = effect_counts(db)
    assert len(counts) == len(inside) and set(counts.values()) == {1}
    row = backfill_row(db)
    assert (row.state, row.progress) == ("done", 1.0)
    rendered = status.render(status.collect(SqlReads(db)))
    assert "100%, workflow a" in rendered and "[backfill, done]" in rendered
    db.dispose()


def test_workflow_flag_creates_exactly_the_missing_runs_of_that_workflow(
        db_url: str, tmp_path: Path, make_app: Callable[..., App]) -> None:
    db = prepare(db_url)
    with make_sim(500) as sim:
        base = sim_env(sim)
        make_app(db_url, registry=registry_of("a"), **base).tick_all()  # synced before b and c existed
        all_ids = {i for i, _ in event_times(sim)}
        assert runs_of(db, "a") == all_ids
        window, inside = window_over(sim, 120, 380)
        env = process_env(db_url, {**base, "SYNCD_WORKFLOWS": "bf_workflows"}, tmp_path)
        done = syncd(["backfill", "--start", window.start.isoformat(), "--end", ms(window.end),
                      "--source", "workos", "--workflow", "b"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"workos@{ms(window.start)}-{ms(window.end)}/b: backfill done" in done.stdout
    assert runs_of(db, "b") == inside
    assert runs_of(db, "a") == all_ids and runs_of(db, "c") == set()
    counts = effect_counts(db)
    assert sum(1 for wf, _ in counts if wf == "b") == len(inside) and set(counts.values()) == {1}
    db.dispose()


def test_once_with_events_range_runs_the_window_then_exits(sqlite_url: str, tmp_path: Path) -> None:
    db = prepare(sqlite_url)
    with make_sim(300) as sim:
        window, _ = window_over(sim, 30, 270)
        extra = {"SYNCD_WORKFLOWS": "bf_workflows", "EVENTS_RANGE_START": ms(window.start),
                 "EVENTS_RANGE_END": ms(window.end)}
        env = process_env(sqlite_url, {**sim_env(sim), **extra}, tmp_path)
        done = syncd(["once"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("workos: ok") and lines[1].startswith(f"workos@{ms(window.start)}")
    assert "backfill done" in lines[1] and "(0 new), 0 runs ok" in lines[1]  # live got there first
    assert backfill_row(db).state == "done"
    assert set(effect_counts(db).values()) == {1} and len(effect_counts(db)) == 3 * 300
    db.dispose()


def test_run_with_events_range_runs_a_window_job_beside_live_ticks(sqlite_url: str, tmp_path: Path) -> None:
    db = prepare(sqlite_url)
    with make_sim(300) as sim:
        sim.faults = Faults(timeout_rate=1.0, slow_seconds=0.02)
        window, _ = window_over(sim, 30, 270)
        extra = {"SYNCD_WORKFLOWS": "bf_workflows", "SYNC_INTERVAL_SECONDS": "1", "LOG_LEVEL": "INFO",
                 "EVENTS_RANGE_START": ms(window.start), "EVENTS_RANGE_END": ms(window.end)}
        env = process_env(sqlite_url, {**sim_env(sim), **extra}, tmp_path)
        proc = subprocess.Popen([sys.executable, "-m", "syncd", "run"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.1)
                with db.connect() as conn:
                    states = dict(conn.execute(sa.select(sources.c.kind, sources.c.state)).all())
                if states.get("backfill") == "done" and len(runs_of(db, "c")) == 300:
                    break
            sim.generate(5)  # live ticks keep going after the window is done
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(runs_of(db, "c")) < 305:
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert states == {"live": "active", "backfill": "done"}
    assert len(runs_of(db, "c")) == 305 and set(effect_counts(db).values()) == {1}
    assert "backfill workos" in stderr and "done" in stderr
    with db.connect() as conn:
        ticks = conn.execute(sa.text("SELECT count(*) FROM syncd_ticks WHERE source LIKE 'workos@%'"))
    assert ticks.scalar() == 1  # the finished window is not ticked again on later intervals
    db.dispose()


# ---- validation ----------------------------------------------------------------------------------

FUTURE = ms(datetime.now(UTC) + timedelta(days=2))
PAST, LATER = ms(NOW - timedelta(days=3)), ms(NOW - timedelta(days=1))


@pytest.mark.parametrize(("env", "named", "says"), [
    ({"EVENTS_RANGE_START": "yesterday", "EVENTS_RANGE_END": LATER}, "EVENTS_RANGE_START",
     "unix milliseconds"),
    ({"EVENTS_RANGE_START": PAST, "EVENTS_RANGE_END": "12abc"}, "EVENTS_RANGE_END", "unix milliseconds"),
    ({"EVENTS_RANGE_START": LATER, "EVENTS_RANGE_END": PAST}, "EVENTS_RANGE_END", "must be after"),
    ({"EVENTS_RANGE_START": PAST, "EVENTS_RANGE_END": PAST}, "EVENTS_RANGE_END", "must be after"),
    ({"EVENTS_RANGE_START": PAST}, "EVENTS_RANGE_END", "is missing"),
    ({"EVENTS_RANGE_END": LATER}, "EVENTS_RANGE_START", "is missing"),
    ({"EVENTS_RANGE_START": FUTURE, "EVENTS_RANGE_END": FUTURE + "0"}, "EVENTS_RANGE_START", "in the future"),
    ({"EVENTS_RANGE_START": PAST[:-3], "EVENTS_RANGE_END": LATER[:-3]}, "EVENTS_RANGE_START", "unix seconds"),
    ({"EVENTS_RANGE_START": "99999999999999999999", "EVENTS_RANGE_END": LATER}, "EVENTS_RANGE_START",
     "out of range"),
])
@pytest.mark.parametrize("command", ["once", "run", "backfill"])
def test_every_invalid_events_range_exits_2_naming_the_variable(
        bare_env: dict[str, str], capsys: pytest.CaptureFixture[str], command: str, env: dict[str, str],
        named: str, says: str) -> None:
    argv = [command] + (["--start", PAST, "--end", LATER] if command == "backfill" else [])
    assert cli.main(argv, {**bare_env, **env}) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"syncd: configuration error: {named}: "), lines
    assert says in lines[0]


@pytest.mark.parametrize(("flags", "named", "says"), [
    (["--start", "last week", "--end", LATER], "--start", "unix milliseconds"),
    (["--start", PAST, "--end", "soon"], "--end", "unix milliseconds"),
    (["--start", LATER, "--end", PAST], "--end", "must be after --start"),
    (["--start", PAST, "--end", PAST], "--end", "must be after --start"),
    (["--start", FUTURE, "--end", FUTURE + "0"], "--start", "in the future"),
    (["--start", PAST[:-3], "--end", LATER], "--start", "unix seconds"),
])
def test_every_invalid_backfill_flag_exits_2_naming_the_flag(
        bare_env: dict[str, str], capsys: pytest.CaptureFixture[str], flags: list[str], named: str,
        says: str) -> None:
    assert cli.main(["backfill", *flags], bare_env) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"syncd: configuration error: {named}: "), lines
    assert says in lines[0]


@pytest.mark.parametrize(("flags", "named"), [(["--start", PAST], "--end"), (["--end", LATER], "--start")])
def test_a_missing_backfill_flag_exits_2_naming_it(
        bare_env: dict[str, str], capsys: pytest.CaptureFixture[str], flags: list[str], named: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["backfill", *flags], bare_env)
    assert exited.value.code == 2
    assert f"the following arguments are required: {named}" in capsys.readouterr().err


def test_invalid_ranges_exit_2_from_the_real_process(bare_env: dict[str, str], tmp_path: Path) -> None:
    """The same code path as above, through ``python -m syncd``: the exit status and one stderr line."""
    env = syncd(["once"], {**bare_env, "EVENTS_RANGE_START": "soon", "EVENTS_RANGE_END": LATER}, tmp_path)
    flag = syncd(["backfill", "--start", LATER, "--end", PAST], bare_env, tmp_path)
    assert (env.returncode, flag.returncode) == (2, 2)
    assert env.stderr == "syncd: configuration error: EVENTS_RANGE_START: expected unix milliseconds or " \
                         "ISO-8601, got 'soon'\n"
    assert flag.stderr.startswith("syncd: configuration error: --end: must be after --start (")
    assert flag.stderr.count("\n") == 1


def test_unknown_source_or_workflow_is_a_config_error_naming_the_flag() -> None:
    window = Window(NOW - timedelta(days=2), NOW - timedelta(days=1))
    connectors = [_Quiet()]
    registry = registry_of("a", "b")
    with pytest.raises(ConfigError, match=r"^--source: no configured source 'github' \(configured: workos"):
        targets_for(connectors, registry, window, source="github")
    with pytest.raises(ConfigError, match=r"^--workflow: unknown workflow 'nope' \(known: a, b\)$"):
        targets_for(connectors, registry, window, workflow="nope")
    registry.workflow("issues", on=workflows.Trigger(provider="github"))(lambda event, ctx: None)
    with pytest.raises(ConfigError, match=r"^--workflow: 'issues' listens to github events, but no such"):
        targets_for(connectors, registry, window, workflow="issues")
    only_b = targets_for(connectors, registry, window, source="workos", workflow="b")
    assert [t.key for t in only_b] == [f"workos@{ms(window.start)}-{ms(window.end)}/b"]


def test_parse_flags_accepts_iso_and_milliseconds() -> None:
    window = parse_flags("2026-01-01T00:00:00Z", "1767312000000", now=datetime(2026, 2, 1, tzinfo=UTC))
    assert window == Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    with pytest.raises(ConfigError, match="--end"):
        parse_flags("2026-01-02", "2026-01-01", now=datetime(2026, 2, 1, tzinfo=UTC))


# ---- provider mapping, retention and progress ----------------------------------------------------


def test_simulator_honours_range_start_and_range_end() -> None:
    with make_sim(300) as sim:
        window, inside = window_over(sim, 40, 90)
        params = {"events": ",".join(sorted({e["event"] for e in sim.events()})), "limit": "100",
                  "range_start": window.start.isoformat(), "range_end": window.end.isoformat()}
        auth = {"Authorization": f"Bearer {WORKOS_KEY}"}
        body = httpx.get(f"{sim.url}/events", params=params, headers=auth).json()
    assert {e["id"] for e in body["data"]} == inside and body["list_metadata"]["after"] is None


def test_windows_past_retention_are_warned_about(sqlite_url: str, make_app: Callable[..., App],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    prepare(sqlite_url).dispose()
    with make_sim(100) as sim:
        app = make_app(sqlite_url, registry=registry_of("a"), **sim_env(sim))
        old = Window(NOW - timedelta(days=60), NOW - timedelta(days=59))
        recent = Window(NOW - timedelta(days=3), NOW - timedelta(days=2))
        assert retention_warnings(targets_for(app.connectors, app.registry, recent)) == []
        with caplog.at_level(logging.WARNING, logger="syncd.backfill"):
            results = drive_all(app, targets_for(app.connectors, app.registry, old), LogProgress())
    assert results[0].state == "done" and results[0].events == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeps events for about 30 days" in warnings[0]


def _pages(window: Window, n: int) -> list[Page]:
    step = (window.end - window.start) / n
    def events(i: int) -> tuple[Event, ...]:
        at = window.start + step * (i + 0.5)
        return tuple(Event("workos", f"e{i}-{j}", "user.created", at, {}) for j in range(10))

    return [Page(events=events(i), next_cursor=f"c{i}", has_more=i < n - 1) for i in range(n)]


class _Quiet:
    key = "workos"

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


def test_log_progress_writes_a_line_every_n_pages(caplog: pytest.LogCaptureFixture) -> None:
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC))
    target = Target(_Quiet(), window)
    progress = LogProgress(every=3)
    with caplog.at_level(logging.INFO, logger="syncd.backfill"):
        progress.start(target, 0.0)
        for page in _pages(window, 10):
            progress(target, page)
    lines = [r.getMessage() for r in caplog.records][1:]
    assert len(lines) == 3  # pages 3, 6 and 9; the tenth ends the window (its line comes from finish)
    assert "25% of the window, 3 pages, 30 events" in lines[0] and "events/s, ETA " in lines[0]
    assert "85% of the window, 9 pages, 90 events" in lines[2]


def test_rich_progress_shows_percent_rate_and_eta_on_a_terminal() -> None:
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC))
    target = Target(_Quiet(), window)
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=140, color_system=None))
    with progress.shown():
        progress.start(target, 0.2)
        for page in _pages(window, 4)[:3]:
            progress(target, page)
        progress.bar.refresh()
        text = out.getvalue()
    assert "workos 2026-01-01 00:00 → 2026-01-11 00:00" in text
    last = text.rsplit("\r", 1)[-1]  # the bar as last drawn: 62.5% of the window's span, rate and ETA
    assert re.search(r"[━╸] +62% 30 events · [\d,]+/s +ETA \d+:\d\d:\d\d", last), last


def test_overlapping_windows_for_a_new_workflow_run_each_event_once(
        db_url: str, make_app: Callable[..., App]) -> None:
    """Two overlapping windows (say, the container's EVENTS_RANGE_* and an operator's ``syncd backfill``)
    for a workflow added since, in two threads: the events are already in the ledger, so only the stream
    lock keeps them from both running the new workflow on the overlap."""
    db = prepare(db_url)
    with make_sim(600, seed=9) as sim:
        env = sim_env(sim)
        make_app(db_url, registry=registry_of("a"), **env).tick_all()
        apps = [make_app(db_url, registry=registry_of("a", "b"), **env) for _ in range(2)]
        windows = [window_over(sim, 0, 450), window_over(sim, 150, 599)]
        results: list[Any] = [None, None]

        def run(i: int) -> None:
            results[i] = drive(window_engine(apps[i], None), Target(apps[i].connectors[0], windows[i][0]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert [r.state for r in results] == ["done", "done"]
    assert runs_of(db, "b") == windows[0][1] | windows[1][1]
    assert set(effect_counts(db).values()) == {1}
    assert sum(r.runs_ok for r in results) == len(windows[0][1] | windows[1][1])
    db.dispose()


# ---- a workflow registered after a window finished (issue 18, item 8) ------------------------------------


def test_a_finished_window_reruns_for_a_workflow_registered_since(db_url: str,
                                                                    make_app: Callable[..., App]) -> None:
    db = prepare(db_url)
    with make_sim(400) as sim:
        window, inside = window_over(sim, 40, 360)
        first_app = make_app(db_url, registry=registry_of("a"), **sim_env(sim))
        first = drive(window_engine(first_app, None), Target(first_app.connectors[0], window))
        assert first.state == "done" and backfill_row(db).window_workflows == ["a"]
        app = make_app(db_url, registry=registry_of("a", "b"), **sim_env(sim))  # b registered since
        engine, target = window_engine(app, None), Target(app.connectors[0], window)
        again = drive(engine, target)
        third = drive(engine, target)  # now done for both: nothing to do
    assert (again.state, again.events, again.runs_ok, again.new_events) == ("done", len(inside), len(inside), 0)
    assert runs_of(db, "b") == inside and runs_of(db, "a") == inside
    counts = effect_counts(db)
    assert set(counts.values()) == {1} and len(counts) == 2 * len(inside)  # a's runs were not repeated
    assert backfill_row(db).window_workflows == ["a", "b"]
    assert (third.state, third.syncs) == ("done", 0)
    db.dispose()


def test_the_backfill_command_reruns_a_finished_window_for_a_new_workflow(sqlite_url: str,
                                                                           tmp_path: Path) -> None:
    db = prepare(sqlite_url)
    (tmp_path / "bf_only_a.py").write_text(WORKFLOWS_MODULE.replace('("a", "b", "c")', '("a",)'))
    with make_sim(300) as sim:
        window, inside = window_over(sim, 30, 270)
        flags = ["backfill", "--start", ms(window.start), "--end", ms(window.end)]
        before = process_env(sqlite_url, {**sim_env(sim), "SYNCD_WORKFLOWS": "bf_only_a"}, tmp_path)
        first = syncd(flags, before, tmp_path)
        after = process_env(sqlite_url, {**sim_env(sim), "SYNCD_WORKFLOWS": "bf_workflows"}, tmp_path)
        again = syncd(flags, after, tmp_path)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert f"{len(inside)} runs ok" in first.stdout
    assert f"{2 * len(inside)} runs ok" in again.stdout  # b and c, on every event of the window
    assert "was completed without b, c; running it again" in again.stderr
    counts = effect_counts(db)
    assert set(counts.values()) == {1} and len(counts) == 3 * len(inside)
    db.dispose()


def test_finished_windows_leave_status_and_metrics_a_day_after_they_end(sqlite_url: str) -> None:
    """#18: a window that finished long ago no longer crowds `syncd status` and `/metrics`; `--all` and
    `--source KEY` still show it, and a window that finished today is shown as before."""
    from syncd.contracts import FakeClock
    from syncd.ops.metrics import collect_metrics, render_metrics

    clock = FakeClock(datetime.now(UTC) - timedelta(days=2))
    with make_sim(120) as sim:
        app = App.build(settings_for(sqlite_url, **sim_env(sim)), registry=Registry(), clock=clock)
        try:
            old, recent = Target(app.connectors[0], window_over(sim, 10, 50)[0]), \
                Target(app.connectors[0], window_over(sim, 60, 100)[0])
            assert drive(window_engine(app, None), old).state == "done"  # finished two days ago
            clock.set(datetime.now(UTC))
            assert drive(window_engine(app, None), recent).state == "done"  # finished now
            metrics = render_metrics(collect_metrics(SqlReads(app.db), [], now=datetime.now(UTC), interval=60))
        finally:
            app.close()

    def run(*flags: str) -> set[str]:
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli.main(["status", "--json", *flags], environ={"DATABASE_URL": sqlite_url}) == 0
        return {s["key"] for s in json.loads(out.getvalue())["sources"]}

    assert run() == {recent.key}
    assert run("--all") == {old.key, recent.key}
    assert run("--source", old.key) == {old.key}
    assert f'source="{recent.key}"' in metrics and f'source="{old.key}"' not in metrics
