"""A ``syncd once`` SIGKILLed in the middle of a GitHub reconciliation: the next one finishes it, and the
workflow on deleted issues has run once per deleted issue (its effects are rows in the user's table)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors import github
from connectors.github.tables import issues as issues_table
from simulators.github import GitHubSimulator
from syncd.contracts import Event
from syncd.ops.app import App
from syncd.ops.once import run_once
from syncd.store.tables import events as ledger
from syncd.workflows import Context, Registry
from tests.conftest import settings_for

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ghp_test_secret_reconcile_kill"
FLOWS = '''
import sqlalchemy as sa
from connectors import github
from syncd.workflows import workflow


@workflow(name="log-removed", on=github.issues(actions={"deleted", "transferred"}), version="1")
def log_removed(event, ctx):
    ctx.db.execute(sa.text("INSERT INTO removed_log (event_id) VALUES (:id)"), {"id": event.id})
'''


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    with GitHubSimulator(repos={"acme/web": 25}, seed=7, tokens=(TOKEN,)) as simulator:
        yield simulator


def test_a_sigkill_mid_reconcile_runs_each_deletion_once(sqlite_url: str, sim: GitHubSimulator,
                                                         tmp_path: Path) -> None:
    env = {"GITHUB_REPOS": "acme/web", "GITHUB_TOKEN": TOKEN, "GITHUB_BASE_URL": sim.url,
           "GITHUB_RECONCILE_SECONDS": "0.001"}  # due at every tick (the subprocess's clock is the wall clock)
    app = App.build(settings_for(sqlite_url, **env), registry=Registry())  # the first sync, here: quicker
    try:
        run_once(app)
    finally:
        app.close()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE removed_log (event_id TEXT NOT NULL)"))
    numbers = sorted(i["number"] for i in sim.issues("acme/web").values())
    victims = numbers[2], numbers[9]
    for number in victims:
        sim.delete("acme/web", number)

    (tmp_path / "kill_flows.py").write_text(FLOWS)
    process_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
                   "DATABASE_URL": sqlite_url, "OTEL_TRACES_EXPORTER": "none", "LOG_FORMAT": "json",
                   "SYNCD_ENV_FILE": str(tmp_path / "none.env"), "SYNCD_HTTP_PORT": "0",
                   "SYNCD_WORKFLOWS": "kill_flows", **env}
    sim.hold_number = victims[1]  # the second deletion's check waits: the first one's step is behind it
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "once"], env=process_env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sim.holding.wait(60), "the reconcile never asked about the second deleted issue"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        sim.hold_number = None
        sim.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    # The next `syncd once` (here, with the same workflow in a registry of the test's own: quicker than a
    # process, and nothing leaks into the default registry).
    registry = Registry()

    @registry.workflow("log-removed", on=github.issues(actions={"deleted", "transferred"}), version="1")
    def log_removed(event: Event, ctx: Context) -> None:
        ctx.db.execute(sa.text("INSERT INTO removed_log (event_id) VALUES (:id)"), {"id": event.id})

    app = App.build(settings_for(sqlite_url, **env), registry=registry)
    try:
        assert all(o.tick.ok for o in run_once(app).sources)
    finally:
        app.close()
    with engine.connect() as conn:
        logged = sorted(r for (r,) in conn.execute(sa.text("SELECT event_id FROM removed_log")))
        deleted = conn.execute(sa.select(ledger.c.event_id).where(ledger.c.action == "deleted")).all()
        left = conn.execute(sa.select(issues_table.c.number).where(issues_table.c.number.in_(victims))).all()
    engine.dispose()
    assert len(deleted) == 2 and sorted(logged) == sorted(e for (e,) in deleted)  # each run once
    assert left == []
