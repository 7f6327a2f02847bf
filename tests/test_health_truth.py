"""Health tells the truth (issue #18, item 3): ``/healthz`` and ``syncd_source_healthy`` turn unhealthy when
a provider never answers in time, even while the tick that waits for it holds its lease; the cursor lag
stays present and grows while ticks fail; ``syncd check`` takes the local daemon's answer only when it
is about the same database. Time is a fake clock shared by the engine and the monitor."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from simulators.workos import DEFAULT_NOW, Faults, WorkOSSimulator
from syncd.contracts import FakeClock, TickRow
from syncd.ops.app import App
from syncd.ops.check import ask_daemon, check
from syncd.ops.health import database_id
from syncd.ops.http import HealthServer, Monitor
from syncd.ops.metrics import cursor_lag
from syncd.settings import Settings
from syncd.store.reads import SqlReads
from tests.conftest import WORKOS_KEY, settings_for, workos_env
from tests.test_health import parse_metrics

INTERVAL = 60.0  # the default SYNC_INTERVAL_SECONDS: the limit is 180 s


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=120, seed=5, api_key=WORKOS_KEY) as simulator:
        yield simulator


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_healthz_turns_503_while_a_tick_waits_on_a_provider_that_never_answers(
        db_url: str, sim: WorkOSSimulator, apps: list[App]) -> None:
    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    # A long HTTP timeout and a lease far longer than the limit: the tick below holds its lease for as long
    # as the provider keeps it waiting, as a tick stuck in timeouts and retries on PostgreSQL (whose lease
    # keeper renews the lease) does.
    app = App.build(settings_for(db_url, SYNCD_HTTP_TIMEOUT="300", SYNCD_LEASE_SECONDS="36000",
                                 **workos_env(sim)), clock=clock)
    apps.append(app)
    assert app.tick_all()[0].ok
    monitor = Monitor(SqlReads(app.db), ["workos"], interval=INTERVAL, now=clock.now)
    with HealthServer(monitor, host="127.0.0.1", port=0) as server:
        sim.faults = Faults(latency=600, error_rate=1.0)  # each /events waits until the simulator stops, then fails
        clock.advance(60)
        tick = threading.Thread(target=app.tick_all, daemon=True)
        tick.start()
        try:
            wait_for(lambda: SqlReads(app.db).sources(["workos"])[0].lease_owner is not None, "the claim")
            clock.advance(100)  # 160 s since the last success: still within the limit
            status, body = get(server.url + "/healthz")
            assert status == 200 and "workos: ok — last successful tick 160s ago" in body, body

            clock.advance(100)  # 260 s: the tick in progress has committed nothing since it started 200 s ago
            status, body = get(server.url + "/healthz")
            assert status == 503, body
            assert ("workos: FAILING — no successful tick for 260s (limit 180s); the tick in progress on "
                    f"{app.engine.replica_id} has committed nothing for 200s") in body, body
            metrics = parse_metrics(get(server.url + "/metrics")[1])
            assert metrics["syncd_source_healthy"] == {(("source", "workos"),): 0.0}
            lag_while_hanging = metrics["syncd_cursor_lag_seconds"][(("source", "workos"),)]
        finally:
            sim.stop()  # the waiting requests end; the tick fails
            tick.join(timeout=30)
        assert not tick.is_alive()

        status, body = get(server.url + "/healthz")
        assert status == 503 and "no successful tick for 260s" in body and "last error: workos:" in body
        lag_failed = parse_metrics(get(server.url + "/metrics")[1])["syncd_cursor_lag_seconds"]
        clock.advance(100)
        lag_later = parse_metrics(get(server.url + "/metrics")[1])["syncd_cursor_lag_seconds"]
    src = (("source", "workos"),)
    assert lag_failed[src] == pytest.approx(lag_while_hanging)  # same clock: same lag, hanging or failed
    assert lag_later[src] == pytest.approx(lag_failed[src] + 100)  # it grows while ticks fail


T = DEFAULT_NOW


def tick_row(at: float, *, ok: bool, lag: float | None, took: float = 1.0) -> TickRow:
    start = T + timedelta(seconds=at)
    return TickRow(started_at=start, finished_at=start + timedelta(seconds=took), ok=ok,
                   error=None if ok else "boom", lag_seconds=lag)


@pytest.mark.parametrize(("last", "last_ok", "now", "lag"), [
    (None, None, 10, None),  # never ticked
    (tick_row(0, ok=True, lag=42.0), None, 30, 42.0),  # the last tick's lag
    (tick_row(0, ok=True, lag=None), None, 30, 0.0),  # it found nothing new: caught up
    (tick_row(100, ok=False, lag=None), tick_row(0, ok=True, lag=5.0), 301, 5.0 + 300),  # failing: grows
    (tick_row(100, ok=False, lag=None), None, 300, None),  # never succeeded: nothing to measure from
    (tick_row(0, ok=True, lag=5.0), None, 1001, 5.0 + 1000),  # no tick ended for > limit: one hangs
])
def test_cursor_lag_table(last: TickRow | None, last_ok: TickRow | None, now: float, lag: float | None) -> None:
    assert cursor_lag(last, last_ok, now=T + timedelta(seconds=now), limit=180.0) == lag


def test_syncd_check_trusts_only_a_daemon_judging_the_same_database(tmp_path: Path, empty_sqlite_url: str,
                                                                     sim: WorkOSSimulator) -> None:
    """The daemon's /healthz is asked first (cheap); an answer about another database is ignored."""
    db = sa.create_engine(empty_sqlite_url)
    ours = Monitor(SqlReads(db), ["workos"], interval=INTERVAL, database=database_id(empty_sqlite_url))
    with HealthServer(ours, host="127.0.0.1", port=0) as server:
        port = server.url.rsplit(":", 1)[1]
        settings = settings_for(empty_sqlite_url, SYNCD_HTTP_PORT=port, SYNCD_HTTP_HOST="0.0.0.0", **workos_env(sim))
        answer = ask_daemon(settings)
        assert answer is not None and not answer.healthy  # no table yet: "database unavailable"
        assert answer.text().startswith("unhealthy\ndatabase unavailable")
        other = settings_for(f"sqlite:///{tmp_path / 'other.db'}", SYNCD_HTTP_PORT=port, **workos_env(sim))
        assert ask_daemon(other) is None
    db.dispose()
    assert ask_daemon(Settings.from_env({**settings.environ, "SYNCD_HTTP_PORT": "0"})) is None
    # With no daemon answering, the database decides (here: not migrated, so unhealthy).
    closed = check(settings)
    assert not closed.healthy and "database unavailable" in closed.text()


def test_database_id_ignores_the_password() -> None:
    assert database_id("postgresql://u:one@h/db") == database_id("postgresql://u:two@h/db")
    assert database_id("postgresql://u:one@h/db") != database_id("postgresql://u:one@h/other")
