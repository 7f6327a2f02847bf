"""SIGKILL in the middle of a dashboard "Replay all" (issue #22, attack): every dead run is afterwards either
replayed (succeeded, its effect written once) or still dead (no effect), none lost, none run twice; replaying
again finishes the rest, each effect still once.

Real things: ``syncd ui`` in a subprocess (its own workflow module, the fixed workflow), the WorkOS simulator
that made the dead runs, SQLite and PostgreSQL, and a SIGKILL while the replay's POST is in flight.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from connectors import workos
from simulators.workos import WorkOSSimulator
from syncd.contracts import Event
from syncd.ops.app import App
from syncd.store.connect import reading
from syncd.store.tables import runs
from syncd.workflows import Context, Registry
from tests.conftest import settings_for, workos_env
from tests.test_dashboard import UI_TOKEN

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("user.created", "user.updated", "organization.created", "organization.updated")
WORKFLOW = "kill.effect"

#: The fixed workflow, as ``syncd ui`` loads it: one effect row per execution (a second execution of one run
#: would show as two rows), a little slow in the process that is killed, so that the kill lands between the
#: replay's batch commits (the second replay, which finishes the rest, needs no pause: 20 ms a run was ~6 s).
FIXED = f'''
import os
import time

import sqlalchemy as sa

from connectors import workos
from syncd import workflow


@workflow(name="{WORKFLOW}", on=workos.events(*{TYPES!r}), retries=1)
def effect(event, ctx):
    if os.environ.get("KILL_TEST_SLOW"):
        time.sleep(0.02)
    ctx.db.execute(sa.text("INSERT INTO kill_effects (event_id) VALUES (:e)"), {{"e": event.id}})
'''


def broken_registry() -> Registry:
    registry = Registry()

    @registry.workflow(WORKFLOW, on=workos.events(*TYPES), retries=1)
    def effect(event: Event, ctx: Context) -> None:
        raise RuntimeError("not fixed yet")

    return registry


def state(db: sa.Engine) -> tuple[dict[str, str], dict[str, int]]:
    """Each run's status by event id, and the effects written per event id (read outside SQLite's write lock,
    which the replay in the other process holds batch after batch)."""
    with reading(db) as conn:
        statuses = dict(conn.execute(sa.select(runs.c.event_id, runs.c.status)
                                     .where(runs.c.workflow == WORKFLOW)).tuples().all())
        effects = dict(conn.execute(sa.text("SELECT event_id, count(*) FROM kill_effects GROUP BY event_id"))
                       .tuples().all())
    return statuses, effects


def start_ui(tmp_path: Path, db_url: str, *, slow: bool = False) -> tuple[subprocess.Popen[str], str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1",
           "DATABASE_URL": db_url, "SYNCD_UI_TOKEN": UI_TOKEN, "SYNCD_WORKFLOWS": "kill_wf",
           "SYNCD_BUILTINS": "none", "LOG_FORMAT": "text", **({"KILL_TEST_SLOW": "1"} if slow else {})}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "ui", "--port", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    assert found, line
    return proc, found.group(1)


def stop(proc: subprocess.Popen[str], how: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(how)
        proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


def replay_all(url: str, outcome: list[object]) -> None:
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            outcome.append(client.post("/actions/replay-all", data={"workflow": WORKFLOW, "source": ""},
                                       headers={"Authorization": f"Bearer {UI_TOKEN}", "Origin": url}))
    except httpx.TransportError as exc:  # the server died under it
        outcome.append(exc)


def test_sigkill_during_replay_all_loses_and_doubles_nothing(tmp_path: Path, db_url: str,
                                                             workos_sim: WorkOSSimulator, apps: list[App]) -> None:
    (tmp_path / "kill_wf.py").write_text(FIXED)
    app = App.build(settings_for(db_url, **workos_env(workos_sim)), registry=broken_registry())
    apps.append(app)
    with app.db.begin() as conn:  # the user's own table, made as the README tells users to make theirs
        conn.execute(sa.text("CREATE TABLE kill_effects (event_id VARCHAR(200) NOT NULL)"))
    assert app.tick_all()[0].ok
    dead, _ = state(app.db)
    assert len(dead) >= 300 and set(dead.values()) == {"dead"}

    proc, url = start_ui(tmp_path, db_url, slow=True)
    outcome: list[object] = []
    poster = threading.Thread(target=replay_all, args=(url, outcome))
    try:
        poster.start()
        deadline = time.monotonic() + 120
        while True:  # until at least one batch committed: then kill it mid-way
            statuses, _ = state(app.db)
            done = sum(1 for s in statuses.values() if s == "succeeded")
            if done:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "the replay never committed a batch"
            time.sleep(0.05)
        stop(proc, signal.SIGKILL)
    finally:
        stop(proc, signal.SIGKILL)
        poster.join(timeout=60)
    assert outcome and isinstance(outcome[0], httpx.TransportError)  # killed before it answered

    statuses, effects = state(app.db)
    assert set(statuses) == set(dead)  # no run lost
    replayed = {e for e, s in statuses.items() if s == "succeeded"}
    assert set(statuses.values()) <= {"succeeded", "dead"}
    assert 0 < len(replayed) < len(dead)  # killed mid-way
    assert effects == dict.fromkeys(replayed, 1)  # each replayed run's effect once, none of the others'

    # a second Replay all finishes the rest; nothing runs twice
    proc, url = start_ui(tmp_path, db_url)
    try:
        rest: list[object] = []
        replay_all(url, rest)
        answer = rest[0]
        assert isinstance(answer, httpx.Response) and answer.status_code == 303
        left = len(dead) - len(replayed)
        assert f"replayed={left}&succeeded={left}" in answer.headers["location"]
    finally:
        stop(proc, signal.SIGTERM)
    statuses, effects = state(app.db)
    assert set(statuses.values()) == {"succeeded"} and effects == dict.fromkeys(dead, 1)

