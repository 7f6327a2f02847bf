"""The run queue under SIGKILL on PostgreSQL: three replicas (``syncd run``, four workers each) run account
federation against a sink failing 20% of calls, and replicas are killed mid-step at random and restarted.
Afterwards every run succeeded, every user reached each integration under exactly one idempotency key
(one per run and step), every step's result is stored once, and work was spread over the replicas."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from simulators.sink import SinkSimulator
from simulators.workos import WorkOSSimulator
from tests.pgserver import PostgresServer
from tests.test_stop_while_starting import catches_sigterm

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[1]
KEY = "sk_test_queue_crash_41c"
REPLICAS = 3
WORKERS = 4
KILLS = 6
FLOWS = '''
from connectors import workos
from syncd import workflow


@workflow(name="federate", on=workos.events("user.created"), retries=20)
def federate(event, ctx):
    user = event.data

    def call(name):
        return lambda: ctx.http(name).post("/", json={"user": user["id"]}).status_code

    ctx.parallel([(n, call(n)) for n in ("intercom", "slack")], retries=8)
    ctx.step("close", call("close"), retries=8)
'''


def wait_until_catching_sigterm(proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    """Until ``proc`` has run syncd's first line (it then catches SIGTERM; before, the interpreter itself is
    starting and the default handler would kill it)."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and not catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_three_replicas_under_sigkill_call_each_step_once_per_run(pg_server: PostgresServer, tmp_path: Path) -> None:
    (tmp_path / "queue_flows.py").write_text(FLOWS)
    url = pg_server.create_database()
    db = sa.create_engine(url)
    with WorkOSSimulator(events=200, seed=33, api_key=KEY) as sim, SinkSimulator(fail_rate=0.2, seed=12) as sink:
        users = {e["data"]["id"] for e in sim.events() if e["event"] == "user.created"}
        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
               "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "DATABASE_URL": url,
               "WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": sim.url, "SYNCD_BUILTINS": "none",
               "SYNCD_WORKFLOWS": "queue_flows", "SYNC_INTERVAL_SECONDS": "1", "SYNCD_LEASE_SECONDS": "5",
               "SYNCD_HTTP_PORT": "0", "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING",
               "SYNCD_WORKERS": str(WORKERS),
               **{f"SYNCD_INTEGRATION_{n.upper()}_URL": f"{sink.url}/{n}" for n in ("intercom", "slack", "close")}}
        logs = [(tmp_path / f"replica{i}.log").open("ab") for i in range(REPLICAS)]

        def start(i: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "syncd", "run"], cwd=tmp_path,
                                    env={**env, "SYNCD_REPLICA_ID": f"replica{i}"}, stdout=logs[i],
                                    stderr=subprocess.STDOUT)

        procs = [start(i) for i in range(REPLICAS)]
        rng = random.Random(7)

        def succeeded() -> int:
            try:
                with db.connect() as conn:
                    return int(conn.execute(sa.text(
                        "SELECT count(*) FROM syncd_runs WHERE status = 'succeeded'")).scalar_one())
            except sa.exc.ProgrammingError:  # the replicas have not created the tables yet
                return 0

        landed = 0  # kills that hit a replica while runs were still open (mid-work)
        try:
            for _ in range(KILLS):
                seen, wanted = len(sink.calls), rng.randint(10, 60)
                deadline = time.monotonic() + 60
                while len(sink.calls) < seen + wanted and time.monotonic() < deadline:
                    if succeeded() == len(users):  # all done: no more calls will come
                        break
                    time.sleep(0.02)
                landed += succeeded() < len(users)
                victim = rng.randrange(REPLICAS)
                procs[victim].send_signal(signal.SIGKILL)  # mid-step: calls of its runs are in flight
                procs[victim].wait(timeout=10)
                procs[victim] = start(victim)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and succeeded() < len(users):
                time.sleep(0.5)
        finally:
            for proc in procs:  # a replica restarted a moment ago may still be starting its interpreter
                wait_until_catching_sigterm(proc)
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=20) for proc in procs]
            for log in logs:
                log.close()
        tail = "".join((tmp_path / f"replica{i}.log").read_text()[-1500:] for i in range(REPLICAS))
        assert codes == [0] * REPLICAS, tail
        assert landed >= KILLS // 2, f"only {landed} of {KILLS} kills landed while runs were open"
        with db.connect() as conn:
            statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM syncd_runs GROUP BY status")).all())
            stored = conn.execute(sa.text("SELECT count(*) FROM syncd_steps")).scalar_one()
            owners = {r[0].split("/")[0] for r in conn.execute(sa.text("SELECT DISTINCT claim_owner FROM syncd_runs"))}
        assert statuses == {"succeeded": len(users)}, tail
        assert stored == 3 * len(users)  # each step's result stored once
        assert any(c.status >= 500 for c in sink.calls)
        for name in ("intercom", "slack", "close"):
            delivered = [c for c in sink.calls if c.path.startswith(f"/{name}") and c.status < 300]
            keys: dict[str, set[str | None]] = {}
            for call in delivered:
                keys.setdefault(call.body["user"], set()).add(call.idempotency_key)
            assert set(keys) == users, name  # every user reached every integration …
            assert all(len(k) == 1 and None not in k for k in keys.values()), name  # … under one key
            # Repeats of a delivered call (same key) only for calls in flight at a kill: the receiver drops
            # them by their key; at most WORKERS runs were in flight in the replica killed each time.
            repeats = sum(n - 1 for n in Counter(c.idempotency_key for c in delivered).values())
            assert repeats <= WORKERS * KILLS, (name, repeats)
        # Work was spread: runs were last executed by more than one replica (each claims from the shared
        # queue, not only the one holding the source's lease).
        assert len(owners) >= 2, owners
        db.dispose()
