"""Retention (issue 23): ``syncd prune`` removes what is older than SYNCD_RETENTION_DAYS and nothing still
needed, records a horizon per stream so pruned history never runs again, and shrinks the SQLite file.

Real databases (SQLite and PostgreSQL), the real WorkOS simulator over loopback, a fake clock (never a sleep).
The simulator's history spans the 20 days before ``DEFAULT_NOW``; syncd's clock is moved around it. Effects are
rows the workflows write through ``ctx.db``, one per execution, so "nothing ran again" is counted, not inferred.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import workos
from connectors.workos.tables import memberships, organizations, users
from simulators.workos import DEFAULT_NOW, WorkOSSimulator
from syncd.contracts import CursorSpec, FakeClock, Skip, Window
from syncd.engine import Target
from syncd.ops.app import App
from syncd.ops.backfill import drive, pruned_history, window_engine
from syncd.ops.replay import Selection, replay_dead
from syncd.ops.retention import PRUNE_EVERY, Pruner, PruneReport, pruner_for
from syncd.store.reads import SqlReads
from syncd.store.tables import events, horizons, runs, sources, steps, ticks, tombstones
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, settings_for

EARLY = DEFAULT_NOW - timedelta(days=15)  # syncd's clock at the first sync: its ticks and runs are old by now
NOW = DEFAULT_NOW + timedelta(days=1)
DAYS = 10  # the retention of the pruning tests: history before NOW - 10 days = DEFAULT_NOW - 9 days goes
CUTOFF = NOW - timedelta(days=DAYS)
SYNCD_TABLES = (events, runs, steps, ticks, sources, tombstones, horizons)
MIRRORS = (users, organizations, memberships)

effects_md = sa.MetaData()
effects = sa.Table("rt_effects", effects_md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                   sa.Column("workflow", sa.String(50), nullable=False),
                   sa.Column("event_id", sa.String(64), nullable=False))


class World:
    """The simulator, a registry whose workflows leave effects (and, for three old events, a dead, a failed
    and a sleeping run), and apps on one database."""

    def __init__(self, db_url: str, sim: WorkOSSimulator) -> None:
        self.db_url, self.sim = db_url, sim
        self.clock = FakeClock(EARLY)
        created = sorted((e for e in sim.events() if e["event"] == "user.created"), key=lambda e: e["created_at"])
        self.dead_id, self.failed_id, self.sleeping_id = (e["id"] for e in created[:3])
        self.failing = True
        self.registry = Registry()
        self.apps: list[App] = []

        def effect(name: str, event: Any, ctx: Any) -> None:
            ctx.db.execute(sa.insert(effects).values(workflow=name, event_id=event.id))

        @self.registry.workflow("count", on=workos.events("user.created", "user.updated", "organization.created"))
        def count(event: Any, ctx: Any) -> None:
            effect("count", event, ctx)

        @self.registry.workflow("dies", on=workos.events("user.created"), retries=1)
        def dies(event: Any, ctx: Any) -> None:
            if event.id == self.dead_id and self.failing:
                raise RuntimeError("the sink refused it")
            effect("dies", event, ctx)

        @self.registry.workflow("retries", on=workos.events("user.created"), retries=5)
        def retries(event: Any, ctx: Any) -> None:
            if event.id == self.failed_id:
                raise RuntimeError("the sink is down")
            effect("retries", event, ctx)

        @self.registry.workflow("naps", on=workos.events("user.created"))
        def naps(event: Any, ctx: Any) -> None:
            if event.id == self.sleeping_id:
                ctx.sleep("nap", timedelta(days=365))
            effect("naps", event, ctx)

    def app(self, **env: str) -> App:
        settings = settings_for(self.db_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=self.sim.url, **env)
        app = App.build(settings, registry=self.registry, clock=self.clock)
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in self.apps:
            app.close()


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with WorkOSSimulator(events=400, seed=23, api_key=WORKOS_KEY) as sim:
        w = World(db_url, sim)
        yield w
        w.close()


def synced(world: World) -> App:
    """Sync the whole history with syncd's clock at EARLY (and a backfill window finished then), then tick
    again at NOW: old ticks, runs and a finished window, and new ones."""
    app = world.app(SYNCD_RETENTION_DAYS=str(DAYS))
    with app.db.begin() as conn:
        effects_md.create_all(conn)
    assert all(r.ok for r in app.tick_all())
    window = Window(DEFAULT_NOW - timedelta(days=20), DEFAULT_NOW - timedelta(days=19))
    assert drive(window_engine(app, None), Target(app.connectors[0], window)).state == "done"
    world.clock.set(NOW)
    assert all(r.ok for r in app.tick_all())
    return app


def pruner(app: App, days: int = DAYS) -> Pruner:
    base = pruner_for(app)
    return Pruner(base.store, days=days, clock=base.clock, owner=base.owner, lease_seconds=base.lease_seconds)


def prune(app: App, days: int = DAYS) -> PruneReport:
    """``syncd prune``: at once, whenever the last prune ran."""
    return pruner(app, days).run(now_if_paused=True)


def counts(app: App) -> dict[str, int]:
    with app.db.connect() as conn:
        found = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                 for t in (*SYNCD_TABLES, effects)}
        found["_prune"] = conn.execute(sa.select(sa.func.count()).select_from(sources)
                                       .where(sources.c.key == "_prune")).scalar_one()
    return found


def dump(app: App) -> list[list[tuple[Any, ...]]]:
    """Every mirror row, every column, in key order: the user's tables, compared value for value."""
    with app.db.connect() as conn:
        return [[tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))] for t in MIRRORS]


def ledger_ids(app: App) -> dict[str, datetime]:
    with app.db.connect() as conn:
        return {r.event_id: r.occurred_at for r in conn.execute(sa.select(events.c.event_id, events.c.occurred_at))}


def statuses(app: App) -> dict[tuple[str, str], str]:
    with app.db.connect() as conn:
        return {(r.workflow, r.event_id): r.status for r in conn.execute(sa.select(runs))}


def test_prune_removes_exactly_what_is_older_and_keeps_what_is_still_needed(world: World) -> None:
    app = synced(world)
    kept_ids = {world.dead_id, world.failed_id, world.sleeping_id}
    before_runs, before_ids, mirrors = statuses(app), ledger_ids(app), dump(app)
    assert {before_runs[("dies", world.dead_id)], before_runs[("retries", world.failed_id)],
            before_runs[("naps", world.sleeping_id)]} == {"dead", "failed", "sleeping"}
    assert all(before_ids[i] < CUTOFF for i in kept_ids)
    with app.db.connect() as conn:
        old_tombstones = conn.execute(sa.select(sa.func.count()).select_from(tombstones)
                                      .where(tombstones.c.version < CUTOFF)).scalar_one()
    old = {i for i, at in before_ids.items() if at < CUTOFF}
    assert old and len(old) < len(before_ids) and old_tombstones > 0  # the test has something on both sides

    longer = prune(app, days=30)  # history starts 21 days ago: nothing is older than 30 days
    assert (longer.events, longer.ticks, longer.windows, longer.tombstones) == (0, 0, 0, 0)
    unchanged = counts(app)
    report = prune(app)

    assert report.skipped is None and report.horizons == ["workos"]
    after_ids = ledger_ids(app)
    assert set(after_ids) == {i for i, at in before_ids.items() if at >= CUTOFF} | kept_ids
    assert report.events == len(old) - len(kept_ids) and report.kept == len(kept_ids)
    after_runs = statuses(app)
    assert {k: v for k, v in before_runs.items() if v != "succeeded"}.items() <= after_runs.items()
    assert all(k[1] in after_ids for k in after_runs)  # no run without its event
    expected_runs = {k for k in before_runs if k[1] in after_ids}
    assert set(after_runs) == expected_runs  # a kept event keeps its succeeded runs too
    assert dump(app) == mirrors  # the user's tables are never touched
    got = counts(app)
    assert got["rt_effects"] == unchanged["rt_effects"]
    assert got["syncd_ticks"] == unchanged["syncd_ticks"] - report.ticks and report.ticks >= 1
    assert report.windows == 1 and got["syncd_sources"] == unchanged["syncd_sources"] - 1
    assert report.tombstones == old_tombstones
    with app.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.min(ticks.c.started_at))).scalar_one() >= CUTOFF
        assert conn.execute(sa.select(sa.func.min(tombstones.c.version))).scalar_one() >= CUTOFF
        limits = dict(conn.execute(sa.select(horizons.c.stream, horizons.c.horizon)).all())
    assert limits == {"workos": max(at for i, at in before_ids.items() if at < CUTOFF and i not in kept_ids)}

    # The dead run is still replayable: its event stayed.
    world.failing = False
    replayed = replay_dead(app.engine, Selection(workflow="dies"))
    assert replayed.ok and statuses(app)[("dies", world.dead_id)] == "succeeded"


def test_history_served_again_after_a_prune_runs_nothing(world: World, caplog: pytest.LogCaptureFixture) -> None:
    app = synced(world)
    prune(app)
    effects_before, mirrors = counts(app)["rt_effects"], dump(app)
    with app.db.begin() as conn:  # the provider serves the whole history again
        conn.execute(sa.update(sources).where(sources.c.key == "workos").values(cursor=None))
    with caplog.at_level(logging.WARNING, logger="syncd.retention"):
        results = app.tick_all()
    assert all(r.ok for r in results) and results[0].new_events == 0
    assert counts(app)["rt_effects"] == effects_before  # not one workflow ran again
    assert dump(app) == mirrors  # and no mirror went back to an older state
    assert any("older than the retention horizon" in r.getMessage() for r in caplog.records)

    # A backfill across the horizon runs nothing again; one entirely before it is refused.
    across = Target(app.connectors[0], Window(CUTOFF - timedelta(days=3), DEFAULT_NOW))
    assert drive(window_engine(app, None), across).state == "done"
    assert counts(app)["rt_effects"] == effects_before
    before = Target(app.connectors[0], Window(CUTOFF - timedelta(days=5), CUTOFF - timedelta(days=1)))
    kept, refused = pruned_history(app.reads.horizons(), [across, before])
    assert kept == [across] and len(refused) == 1 and "retention horizon" in refused[0]


def test_backfill_before_the_horizon_is_refused_by_the_command(world: World,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from syncd import cli

    app = synced(world)
    prune(app)
    env = {"DATABASE_URL": world.db_url, "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": world.sim.url,
           "SYNCD_HTTP_PORT": "0"}
    start, end = (CUTOFF - timedelta(days=5)).isoformat(), (CUTOFF - timedelta(days=1)).isoformat()
    assert cli.main(["backfill", "--start", start, "--end", end], env) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (earlier lines: log lines of the syncs above)
    assert last.startswith("syncd: configuration error: --end: backfill workos@") and "retention horizon" in last


def test_prunes_daily_one_replica_at_a_time(world: World) -> None:
    app = synced(world)
    other = world.app()  # a second replica: its own store, owner locks and lease
    first, second = pruner(app), pruner(other)
    lease = other.engine.store.claim(CursorSpec("_prune", "_prune"), owner="replica-b", lease_seconds=60,
                                     clock=world.clock)
    assert not isinstance(lease, Skip)
    try:  # replica b holds the prune's lease: it is pruning right now
        assert first.run().skipped == "another replica is pruning now"
    finally:
        lease.release()
    done = first.run()
    assert done.skipped is None and done.events > 0
    again = second.run()  # the other replica, later the same day: not due
    assert again.skipped is not None and again.skipped.startswith("not due yet") and again.events == 0
    world.clock.advance(PRUNE_EVERY.total_seconds() + 1)
    assert second.run().skipped is None  # a day later, whichever replica looks first prunes
    assert "_prune" not in {row.key for row in SqlReads(app.db).sources()}  # not a cursor in status or /metrics


def test_two_replicas_pruning_at_once_prune_once(world: World) -> None:
    app = synced(world)
    old = sum(1 for at in ledger_ids(app).values() if at < CUTOFF) - 3  # less the dead, failed and sleeping
    replicas = [pruner(app), pruner(world.app())]
    start = threading.Barrier(2)
    reports: list[PruneReport] = []

    def prune_now(p: Pruner) -> None:
        start.wait()
        reports.append(p.run())

    threads = [threading.Thread(target=prune_now, args=(p,)) for p in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = [r for r in reports if r.skipped is None]
    assert len(reports) == 2 and len(ran) == 1  # the other found it held, or already done for the day
    assert ran[0].events == old


def test_pruning_shrinks_the_sqlite_file(sqlite_url: str) -> None:
    with WorkOSSimulator(events=1500, seed=5, api_key=WORKOS_KEY) as sim:
        w = World(sqlite_url, sim)
        try:
            app = w.app()
            with app.db.begin() as conn:
                effects_md.create_all(conn)
            assert all(r.ok for r in app.tick_all())
            path = Path(app.db.url.database or "")
            checkpoint(path)
            before = path.stat().st_size
            w.clock.set(NOW)
            report = prune(app, days=1)  # all but the last day's events go
            checkpoint(path)
            after = path.stat().st_size
        finally:
            w.close()
    assert report.events > 1100 and report.space_after is not None and report.space_after.returns_space
    assert not report.stopped  # it reached its vacuum steps (a prune fenced out or stopped leaves them)
    print(f"SQLite file {before} -> {after} bytes; {report.events} events pruned")
    assert after < before / 2, (before, after)


def checkpoint(path: Path) -> None:
    """Copy the write-ahead log into the file (as syncd's checkpoint thread does), so its size is the data's.

    A checkpoint that finds another one running (syncd's checkpoint thread, woken by the prune's last
    commits) returns busy and leaves the file as it was: on a loaded machine that once made the file look
    unshrunk (6,119,424 bytes before and after). So it is repeated until one completes."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while (busy := conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the other checkpoint ends
        assert busy == 0, "no checkpoint of the write-ahead log completed within 60 s"
    finally:
        conn.close()


@pytest.mark.parametrize("value", ["0", "-3", "ten", "36501"])
def test_a_bad_retention_setting_exits_2_naming_it(value: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from syncd import cli

    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "SYNCD_RETENTION_DAYS": value}
    assert cli.main(["prune"], env) == 2
    err = capsys.readouterr().err
    assert err.startswith("syncd: configuration error: SYNCD_RETENTION_DAYS") and err.count("\n") == 1
    assert not (tmp_path / "x.db").exists()


def test_syncd_prune_command(tmp_path: Path) -> None:
    """The real command in its own process, twice: the second finds nothing older."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "SYNCD_RETENTION_DAYS": "35",
           "LOG_LEVEL": "WARNING"}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "syncd", "prune"], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("pruned: history before ") and " 0 events" in done.stdout


def test_status_shows_what_retention_keeps(world: World) -> None:
    from syncd.ops import status

    app = synced(world)
    report: PruneReport = prune(app)
    view = status.collect(app.reads, retention_days=DAYS)["retention"]
    [stream] = view["streams"]
    limit = app.reads.horizons()["workos"]
    assert CUTOFF - timedelta(days=1) < limit < CUTOFF  # the newest pruned event
    assert stream["stream"] == "workos" and stream["horizon"] == limit.isoformat()
    assert stream["events"] == len(ledger_ids(app)) and view["used_bytes"] > 0
    assert view["last_prune"]["events"] == report.events and view["last_prune_at"] == NOW.isoformat()
    text = status.render(status.collect(app.reads, retention_days=DAYS))
    assert f"Retention: {DAYS} days" in text and f"history up to {limit.isoformat()} pruned" in text


def test_syncd_run_schedules_the_prune_beside_the_ticks(world: World) -> None:
    """``syncd run``'s chore: first within a minute of the start (here at once), in the scheduler's thread."""
    from syncd.ops.retention import prune_chores
    from syncd.ops.scheduler import Chore, Daemon

    app = synced(world)
    [chore] = prune_chores(app)
    assert chore.first_after_seconds <= 60 and chore.every_seconds <= 24 * 3600
    reports: list[PruneReport] = []
    ran, stop = threading.Event(), threading.Event()

    def prune_then_say() -> None:
        reports.append(chore.fn())
        ran.set()

    daemon = Daemon([], interval=60, stop=stop, chores=[Chore("prune", prune_then_say, 3600, 0)])
    daemon.start()
    try:
        assert ran.wait(60)
    finally:
        stop.set()
        daemon.wait()
    assert reports[0].skipped is None and reports[0].events > 0 and reports[0].horizons == ["workos"]


def test_an_older_sqlite_file_is_converted_once_by_prune_vacuum(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A file made before syncd set incremental vacuum (here: one with a table before syncd's first start)
    keeps SQLite's default mode: the prune says so, and ``syncd prune --vacuum`` converts it."""
    from syncd import cli

    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE app_notes (id INTEGER PRIMARY KEY, body TEXT)")
    raw.execute("INSERT INTO app_notes (body) VALUES ('kept as it is')")
    raw.commit()
    raw.close()
    env = {"DATABASE_URL": f"sqlite:///{path}", "SYNCD_HTTP_PORT": "0"}
    assert cli.main(["prune"], env) == 0
    assert "run `syncd prune --vacuum` once" in capsys.readouterr().out
    assert cli.main(["prune", "--vacuum"], env) == 0
    out = capsys.readouterr().out
    assert out.startswith("pruned: ") and "--vacuum" not in out
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert raw.execute("SELECT body FROM app_notes").fetchall() == [("kept as it is",)]
    finally:
        raw.close()


def test_history_just_brought_in_stays_its_full_retention(world: World) -> None:
    """Events that occurred long ago but were recorded now (a first sync, a backfill) are not pruned yet, and
    no horizon is set: the next pages of that old history still run."""
    world.clock.set(NOW)
    app = world.app()
    with app.db.begin() as conn:
        effects_md.create_all(conn)
    assert all(r.ok for r in app.tick_all())
    ids = ledger_ids(app)
    report = prune(app)
    assert (report.events, report.horizons) == (0, []) and ledger_ids(app) == ids
    assert app.reads.horizons() == {}
