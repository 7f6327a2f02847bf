"""Issue 9's crash test: account federation with a sink failing 30% of calls while the daemon is
SIGKILLed repeatedly. Every user reaches each integration under exactly one idempotency key, and a step
whose result was stored is never run again."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from simulators.sink import SinkSimulator
from simulators.workos import WorkOSSimulator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KEY = "sk_test_steps_crash_7c1"
KILLS = 4
WORKERS = 4
USERS_WORKFLOW = '''
import stamina

from connectors import workos
from syncd import workflow

# The daemon retries at once (stamina's testing mode, as tests/conftest.py sets it in-process), each loop keeping
# its configured attempts: the retries, their idempotency keys and the kills are what this test is about, not the
# backoff's seconds (up to 10 s a retry, which were most of this test's 28 s).
stamina.set_testing(True, attempts=50, cap=True)


@workflow(name="federate", on=workos.events("user.created"), retries=20)
def federate(event, ctx):
    user = event.data

    def call(name):
        return lambda: ctx.http(name).post("/", json={"user": user["id"]}).status_code

    ctx.parallel([(n, call(n)) for n in ("intercom", "slack", "close")], retries=8)
'''


def runs_done(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            total = conn.execute("SELECT count(*) FROM syncd_runs").fetchone()[0]
            done = conn.execute("SELECT count(*) FROM syncd_runs WHERE status = 'succeeded'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0, 0
    return int(total), int(done)


def test_federation_survives_repeated_sigkill_with_a_failing_sink(tmp_path: Path) -> None:
    (tmp_path / "crash_flows.py").write_text(USERS_WORKFLOW)
    db = tmp_path / "syncd.db"
    with WorkOSSimulator(events=200, seed=21, api_key=KEY) as sim, \
            SinkSimulator(fail_rate=0.3, seed=9) as sink:
        users = {e["data"]["id"] for e in sim.events() if e["event"] == "user.created"}
        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
               "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "DATABASE_URL": f"sqlite:///{db}",
               "WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": sim.url, "SYNCD_BUILTINS": "none",
               "SYNCD_WORKFLOWS": "crash_flows", "SYNC_INTERVAL_SECONDS": "1", "SYNCD_LEASE_SECONDS": "5",
               "SYNCD_HTTP_PORT": "0", "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING",
               "SYNCD_WORKERS": str(WORKERS),
               **{f"SYNCD_INTEGRATION_{n.upper()}_URL": f"{sink.url}/{n}" for n in ("intercom", "slack", "close")}}
        rng = random.Random(4)
        kills = 0
        log = (tmp_path / "daemon.log").open("ab")
        try:
            for _ in range(KILLS):
                proc = subprocess.Popen([sys.executable, "-m", "syncd", "run"], cwd=tmp_path, env=env,
                                        stdout=log, stderr=subprocess.STDOUT)
                # Let it make progress (calls reach the sink), then kill it mid-work.
                seen = len(sink.calls)
                deadline = time.monotonic() + 60
                while len(sink.calls) < seen + rng.randint(5, 40) and time.monotonic() < deadline:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.02)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                kills += 1
            proc = subprocess.Popen([sys.executable, "-m", "syncd", "run"], cwd=tmp_path, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                total, done = runs_done(db)
                if total == len(users) and done == total:
                    break
                time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            log.close()
        total, done = runs_done(db)
        assert (total, done) == (len(users), len(users)), (tmp_path / "daemon.log").read_text()[-3000:]
        assert kills == KILLS and any(c.status >= 500 for c in sink.calls)
        repeats = 0
        # A kill while a request was half sent leaves the sink a call without its body (recorded as answered,
        # though no client heard it): not a delivery. Every other answered call is.
        delivered = [c for c in sink.calls if c.status < 300 and isinstance(c.body, dict)]
        cut = [c for c in sink.calls if not isinstance(c.body, dict)]
        assert len(cut) <= 3 * WORKERS * kills, cut[:3]  # at most the calls in flight at each kill
        for name in ("intercom", "slack", "close"):
            ok = sink.successes_by_key(f"/{name}")
            per_user = Counter(c.body["user"] for c in delivered if c.path.startswith(f"/{name}")
                               and c.idempotency_key is not None)
            keys_per_user = {u: {c.idempotency_key for c in delivered if c.path.startswith(f"/{name}")
                                 and c.body["user"] == u} for u in per_user}
            assert set(per_user) == users, name  # every user reached every integration
            assert all(len(keys) == 1 for keys in keys_per_user.values()), name  # under one key each
            repeats += sum(n - 1 for n in ok.values())
        # A stored step never runs again; only a kill between a call's success and the commit of its
        # result (a few milliseconds) can repeat it, and the receiver drops that repeat by its key: at most
        # the calls in flight at each kill (WORKERS runs of three calls each).
        assert repeats <= 3 * WORKERS * kills, repeats
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT count(*) FROM syncd_steps").fetchone()[0]
        assert stored == 3 * len(users)
