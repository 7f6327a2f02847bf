"""Attack: SIGKILL of ``syncd prune`` (a real process) in the middle of its batches, then ``syncd prune`` again.

Pruning deletes in short transactions (``syncd.store.retention``: a batch of events with their runs and steps,
and the stream's horizon, in one). What must hold after each kill, on both databases:

- nothing is half-deleted: every run's event is in the ledger and every step's run is there;
- every event gone from the ledger is at or before its stream's horizon, so served again it is skipped,
  never run as new;
- events still needed (a dead run, a failed run, a sleeping run) are all kept;
- the next ``syncd prune`` takes over at once (the killed one's lease dies with it), without waiting out the
  lease, and finishes with exactly what an uninterrupted prune leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.workos import DEFAULT_NOW, WorkOSSimulator
from syncd.contracts import FakeClock
from syncd.ops.app import App
from syncd.store.connect import reading
from syncd.store.tables import events, horizons, runs, steps
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, settings_for

KILLS = 2  # 2,400 events: batches of 1,000, so each kill lands after one batch and before the next
SLICE = 0.005  # how long the prune runs between two looks at the ledger (see stopped_after_a_batch)


class World:
    """The simulator, and a registry with a run still needed for three events (a dead, a failed and a
    sleeping run). Every other event has only the built-in mirror's runs, so the whole history is prunable
    and setting it up costs one batch per page, not a transaction per run."""

    def __init__(self, db_url: str, sim: WorkOSSimulator) -> None:
        self.db_url, self.sim = db_url, sim
        created = sorted((e for e in sim.events() if e["event"] == "user.created"), key=lambda e: e["created_at"])
        self.dead_id, self.failed_id, self.sleeping_id = (e["id"] for e in created[:3])
        self.registry = Registry()

        @self.registry.workflow("dies", on=workos.events("user.created", where=lambda e: e.id == self.dead_id),
                                retries=1)
        def dies(event: Any, ctx: Any) -> None:
            raise RuntimeError("the sink refused it")

        @self.registry.workflow("retries", retries=5,
                                on=workos.events("user.created", where=lambda e: e.id == self.failed_id))
        def retries(event: Any, ctx: Any) -> None:
            raise RuntimeError("the sink is down")

        @self.registry.workflow("naps", on=workos.events("user.created", where=lambda e: e.id == self.sleeping_id))
        def naps(event: Any, ctx: Any) -> None:
            ctx.sleep("nap", timedelta(days=365))


@pytest.fixture
def world(db_url: str, apps: list[App]) -> Iterator[World]:
    with WorkOSSimulator(events=2400, seed=41, api_key=WORKOS_KEY) as sim:
        yield World(db_url, sim)


def synced(world: World, apps: list[App]) -> App:
    settings = settings_for(world.db_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=world.sim.url)
    app = App.build(settings, registry=world.registry, clock=FakeClock(DEFAULT_NOW))
    apps.append(app)
    assert all(r.ok for r in app.tick_all())
    return app


def prune_process(db_url: str) -> subprocess.Popen[str]:
    # History is from January 2026 (the simulator's clock) and the process prunes on the wall clock, so with
    # 30 days every event whose runs all succeeded is old enough to go. The lease is long on purpose: a
    # restart that waited for it would hang the test, not pass it.
    env = {**os.environ, "DATABASE_URL": db_url, "SYNCD_RETENTION_DAYS": "30", "SYNCD_LEASE_SECONDS": "600",
           "LOG_LEVEL": "WARNING"}
    # At the lowest CPU priority: on a loaded machine the test, which polls for the first batch's commit to
    # kill the process before its next one, is not left waiting for a core while the prune runs to the end.
    # (Set after the spawn, not by preexec_fn: a fork from this threaded process must run no Python.)
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "prune"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    os.setpriority(os.PRIO_PROCESS, proc.pid, 19)  # long before its first batch: imports take 0.5 s
    return proc


def stopped_after_a_batch(proc: subprocess.Popen[str], app: App, start: int) -> bool:
    """Lets the prune run in slices of ``SLICE`` seconds, stopped (SIGSTOP) in between while the ledger is
    counted, until a batch has committed; True if it is then alive (stopped, to be killed).

    Polling a freely running prune missed the gap between its batches twice at load 10 (the test waited for
    a core while the prune ran to its end). Stopped, it cannot go on while the test looks: its next batch
    needs far more than one slice (on SQLite it waits 20 ms before each, to yield the write lock)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        proc.send_signal(signal.SIGCONT)
        time.sleep(SLICE)
        proc.send_signal(signal.SIGSTOP)
        if proc.poll() is not None:
            return False  # it ended within the slice
        if ledger_size(app) < start:
            return True
    return proc.poll() is None


def ledger(app: App) -> set[str]:
    with app.db.connect() as conn:
        return set(conn.execute(sa.select(events.c.event_id)).scalars())


def ledger_size(app: App) -> int:
    with reading(app.db) as conn:  # on SQLite: without the write lock, which a stopped prune may hold
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())


def check_nothing_half_deleted(app: App, before: dict[str, tuple[str, datetime]], kept: set[str]) -> None:
    with app.db.connect() as conn:
        orphan_runs = conn.execute(sa.select(sa.func.count()).select_from(runs).where(~sa.exists().where(
            events.c.stream == runs.c.stream, events.c.event_id == runs.c.event_id))).scalar_one()
        orphan_steps = conn.execute(sa.select(sa.func.count()).select_from(steps).where(~sa.exists().where(
            runs.c.workflow == steps.c.workflow, runs.c.stream == steps.c.stream,
            runs.c.event_id == steps.c.event_id))).scalar_one()
        limits = dict(conn.execute(sa.select(horizons.c.stream, horizons.c.horizon)).tuples().all())
        present = set(conn.execute(sa.select(events.c.event_id)).scalars())
    assert (orphan_runs, orphan_steps) == (0, 0)
    assert kept <= present
    for event_id in set(before) - present:
        stream, occurred_at = before[event_id]
        assert stream in limits and occurred_at <= limits[stream], event_id


def test_sigkill_during_prune_leaves_nothing_half_done_and_the_next_prune_finishes(world: World,
                                                                                   apps: list[App]) -> None:
    app = synced(world, apps)
    with app.db.connect() as conn:
        before = {r.event_id: (r.stream, r.occurred_at)
                  for r in conn.execute(sa.select(events.c.event_id, events.c.stream, events.c.occurred_at))}
    kept = {world.dead_id, world.failed_id, world.sleeping_id}
    total = len(before)
    landed = 0
    for _ in range(KILLS):
        start = ledger_size(app)
        proc = prune_process(str(app.db.url.render_as_string(hide_password=False)))
        killed = stopped_after_a_batch(proc, app, start)
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)  # reaps it and closes its pipes
        if killed:
            gone = start - ledger_size(app)
            landed += 0 < gone < start - len(kept) and proc.returncode == -signal.SIGKILL
        check_nothing_half_deleted(app, before, kept)
    assert landed == KILLS, f"{KILLS - landed} of {KILLS} kills did not land between the prune's batches"

    done = prune_process(str(app.db.url.render_as_string(hide_password=False)))
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert out.startswith("pruned: history before "), out  # it pruned: it did not find the dead one's lease held
    check_nothing_half_deleted(app, before, kept)
    assert ledger(app) == kept, (total, len(ledger(app)))
