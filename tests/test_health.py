"""Health and metrics: the rule as a table, ``/healthz`` and ``/metrics`` over real loopback HTTP against
an App that synced the WorkOS simulator (SQLite and PostgreSQL), and ``syncd check``'s exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.workos import WorkOSSimulator
from syncd.errors import ConfigError
from syncd.ops.app import App
from syncd.ops.check import check_database as health_check
from syncd.ops.health import SourceState, judge
from syncd.ops.http import HealthServer, Monitor
from syncd.ops.metrics import render_metrics
from syncd.settings import Settings
from syncd.store.reads import SqlReads
from syncd.store.tables import ticks
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, workos_env

ROOT = Path(__file__).resolve().parents[1]
WRONG_KEY = "sk_test_health_wrong_0d4e"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 60.0


def ago(seconds: float) -> datetime:
    return T0 - timedelta(seconds=seconds)


# ---- the rule, as a table --------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "started_at", "healthy", "reason"), [
    (SourceState("s", last_success_at=ago(10)), None, True, "last successful tick 10s ago (limit 180s)"),
    (SourceState("s", last_success_at=ago(180)), None, True, "last successful tick 180s ago"),
    (SourceState("s", last_success_at=ago(181), last_error="s: HTTP 500"), None, False,
     "no successful tick for 181s (limit 180s); last error: s: HTTP 500"),
    # one or two failed ticks after a success do not flip it; the error is shown
    (SourceState("s", last_success_at=ago(100), last_error="s: HTTP 500"), None, True,
     "last error: s: HTTP 500"),
    (SourceState("s", last_error="s: WORKOS_API_KEY rejected"), None, False,
     "no successful tick yet; last error: s: WORKOS_API_KEY rejected"),
    # a pause honours the provider's rate limit: healthy while it lasts, up to a cap past the limit
    (SourceState("s", last_success_at=ago(1000), paused_until=T0 + timedelta(seconds=30), pause_reason="429"),
     None, True, "paused until"),
    (SourceState("s", last_success_at=ago(4000), paused_until=ago(1)), None, False, "no successful tick for"),
    (SourceState("s", last_success_at=ago(1000), paused_until=T0 + timedelta(hours=2), pause_reason="429"),
     None, False, "no successful tick for 1000s (limit 180s); paused until 2026-03-01T14:00:00+00:00 (429), "
     "longer than the 3600s a pause may last"),
    (SourceState("s", last_success_at=ago(3700), paused_until=T0 + timedelta(seconds=90)), None, False,
     "longer than the 3600s"),
    (SourceState("s", paused_until=T0 + timedelta(seconds=60)), None, True, "paused until"),
    # a long catch-up holds (and renews) the lease: healthy while it commits pages
    (SourceState("s", lease_owner="host-1", lease_expires_at=T0 + timedelta(seconds=5), updated_at=ago(20)),
     None, True, "tick in progress on host-1 (last page or start 20s ago)"),
    (SourceState("s", lease_owner="host-1", lease_expires_at=ago(5)), None, False, "no successful tick yet"),
    # ... but not a tick stuck in retries or never ending, nor one that follows failed ticks
    (SourceState("s", last_success_at=ago(400), lease_owner="host-1", lease_expires_at=T0 + timedelta(hours=1),
                 updated_at=ago(200)), None, False,
     "no successful tick for 400s (limit 180s); the tick in progress on host-1 has committed nothing for 200s"),
    (SourceState("s", last_success_at=ago(400), last_error="s: timed out", lease_owner="host-1",
                 lease_expires_at=T0 + timedelta(hours=1), updated_at=ago(2)), None, False,
     "no successful tick for 400s (limit 180s); last error: s: timed out; a tick is in progress on host-1 "
     "after failed ticks"),
    # no row yet: "starting" for one limit after this process started, never for `syncd check`
    (None, ago(30), True, "starting"),
    (None, ago(200), False, "never synced"),
    (None, None, False, "never synced"),
])
def test_health_rule(state: SourceState | None, started_at: datetime | None, healthy: bool,
                     reason: str) -> None:
    verdict = judge("s", state, now=T0, interval=INTERVAL, started_at=started_at)
    assert verdict.healthy is healthy
    assert reason in verdict.reason


# ---- over HTTP, against a synced database ----------------------------------------------------------


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=450, seed=13, api_key=WORKOS_KEY) as simulator:
        yield simulator


def serve(app: App, clock: Clock | None = None) -> HealthServer:
    monitor = Monitor(SqlReads(app.db), [c.key for c in app.connectors], interval=INTERVAL, now=clock)
    server = HealthServer(monitor, host="127.0.0.1", port=0)
    server.start()
    return server


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_healthz_turns_503_when_a_source_keeps_failing(db_url: str, sim: WorkOSSimulator,
                                                       make_app: Callable[..., App]) -> None:
    good = make_app(db_url, **workos_env(sim))
    assert good.tick_all()[0].ok
    bad = make_app(db_url, WORKOS_API_KEY=WRONG_KEY, WORKOS_BASE_URL=sim.url)  # same database, wrong key
    clock = Clock(datetime.now(UTC))
    server = serve(bad, clock)
    try:
        status, content_type, body = get(server.url + "/healthz")
        assert (status, body.splitlines()[0]) == (200, "healthy") and content_type.startswith("text/plain")
        assert "workos: ok — last successful tick" in body

        for _ in range(3):  # the key is rotated away: every tick fails
            assert not bad.tick_all()[0].ok
        status, _, body = get(server.url + "/healthz")
        assert status == 200 and "last error: workos: WORKOS_API_KEY rejected" in body  # within 3 intervals

        clock.now += timedelta(seconds=3 * INTERVAL + 1)
        status, _, body = get(server.url + "/healthz")
        assert status == 503, body
        assert body.splitlines()[0] == "unhealthy"
        assert re.search(r"workos: FAILING — no successful tick for 18\ds \(limit 180s\); last error: "
                         r"workos: WORKOS_API_KEY rejected \(401 Unauthorized\)", body), body
        assert WRONG_KEY not in body and WORKOS_KEY not in body

        assert good.tick_all()[0].ok  # the right key again
        clock.now = datetime.now(UTC)
        assert get(server.url + "/healthz")[0] == 200
        assert get(server.url + "/nope")[0] == 404
    finally:
        server.stop()


def test_healthz_is_503_at_once_when_the_first_tick_fails(sqlite_url: str, sim: WorkOSSimulator,
                                                          make_app: Callable[..., App]) -> None:
    bad = make_app(sqlite_url, WORKOS_API_KEY=WRONG_KEY, WORKOS_BASE_URL=sim.url)
    assert not bad.tick_all()[0].ok
    server = serve(bad)
    try:
        status, _, body = get(server.url + "/healthz")
    finally:
        server.stop()
    assert status == 503 and "workos: FAILING — no successful tick yet; last error:" in body


def test_healthz_reports_an_unreachable_database_without_its_url(tmp_path: Path) -> None:
    db = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'nope.db'}")
    server = HealthServer(Monitor(SqlReads(db), ["workos"], interval=INTERVAL), host="127.0.0.1", port=0)
    with server:
        status, _, body = get(server.url + "/healthz")
        metrics_status, _, metrics_body = get(server.url + "/metrics")
    db.dispose()
    assert status == 503 and "database unavailable (OperationalError)" in body and "nope.db" not in body
    assert metrics_status == 503 and "nope.db" not in metrics_body


def test_port_in_use_names_the_variable(sqlite_url: str) -> None:
    db = sa.create_engine(sqlite_url)
    with HealthServer(Monitor(SqlReads(db), ["workos"], interval=INTERVAL), host="127.0.0.1", port=0) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match="SYNCD_HTTP_PORT"):
            HealthServer(Monitor(SqlReads(db), ["workos"], interval=INTERVAL), host="127.0.0.1", port=port).start()
    db.dispose()


# ---- /metrics equals the database ------------------------------------------------------------------

SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>-?[0-9.e+]+)$')


def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text → {name: {labels: value}}, checking every family has HELP and TYPE first."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge")
            declared.add(name)
            out[name] = {}
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        assert match["name"] in declared
        labels = tuple(tuple(p.split("=", 1)) for p in (match["labels"] or "").split(",") if p)
        out[match["name"]][tuple((k, v.strip('"')) for k, v in labels)] = float(match["value"])
    return out


def flaky_registry() -> Registry:
    """Fails some events: ``picky`` is retried later (failed), ``fragile`` is dead-lettered at once."""
    registry = Registry()

    @registry.workflow("picky", on=workos.events("user.created"))
    def picky(event, ctx):  # type: ignore[no-untyped-def]
        if event.id[-1] in "02468ACEGJ":
            raise ValueError("picky")

    @registry.workflow("fragile", on=workos.events("organization.created"), retries=1)
    def fragile(event, ctx):  # type: ignore[no-untyped-def]
        if event.id[-1] in "13579BDFHK":
            raise ValueError("fragile")

    return registry


def test_metrics_equal_the_database(db_url: str, sim: WorkOSSimulator, make_app: Callable[..., App]) -> None:
    app = make_app(db_url, registry=flaky_registry(), SYNCD_BUILTINS="none", **workos_env(sim))
    assert app.tick_all()[0].ok
    sim.generate(40)
    assert app.tick_all()[0].ok
    bad = make_app(db_url, registry=flaky_registry(), SYNCD_BUILTINS="none", WORKOS_API_KEY=WRONG_KEY,
                   WORKOS_BASE_URL=sim.url)
    assert not bad.tick_all()[0].ok
    server = serve(app)
    try:
        status, content_type, text = get(server.url + "/metrics")
    finally:
        server.stop()
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    m = parse_metrics(text)

    with app.db.connect() as conn:
        def one(sql: str) -> float:
            return float(conn.execute(sa.text(sql)).scalar_one() or 0)

        events = one("SELECT count(*) FROM syncd_events")
        failed = one("SELECT count(*) FROM syncd_runs WHERE status = 'failed'")
        dead = one("SELECT count(*) FROM syncd_runs WHERE status = 'dead'")
        pages = one("SELECT sum(pages) FROM syncd_ticks")
        ticks_ok = one("SELECT count(*) FROM syncd_ticks WHERE ok")
        ticks_failed = one("SELECT count(*) FROM syncd_ticks WHERE NOT ok")
        attempts_ok = one("SELECT sum(runs_ok) FROM syncd_ticks")
        attempts_failed = one("SELECT sum(runs_failed) FROM syncd_ticks")
        last = conn.execute(sa.select(ticks).order_by(ticks.c.id.desc()).limit(1)).one()
    assert failed > 0 and dead > 0 and events > 50  # the scenario has something to count

    src = (("source", "workos"),)
    assert m["syncd_events_processed_total"] == {src: events}
    assert m["syncd_workflow_runs"][(*src, ("status", "failed"))] == failed
    assert m["syncd_workflow_runs"][(*src, ("status", "dead"))] == dead
    assert m["syncd_workflow_runs"][(*src, ("status", "sleeping"))] == 0
    assert m["syncd_pages_fetched_total"] == {src: pages}
    assert m["syncd_ticks_total"] == {(*src, ("outcome", "failed")): ticks_failed,
                                      (*src, ("outcome", "ok")): ticks_ok}
    assert m["syncd_workflow_run_attempts_total"] == {(*src, ("outcome", "failed")): attempts_failed,
                                                      (*src, ("outcome", "succeeded")): attempts_ok}
    assert (ticks_ok, ticks_failed) == (2, 1)
    assert m["syncd_source_healthy"] == {src: 1.0}  # the last tick failed, but the last success is recent
    duration = (last.finished_at - last.started_at).total_seconds()
    assert m["syncd_tick_duration_seconds"] == {src: pytest.approx(duration, abs=1e-3)}
    assert last.lag_seconds is None and not last.ok
    # the failed tick measured nothing: the last success's lag, plus the time since, stays visible
    assert m["syncd_cursor_lag_seconds"][src] > 0
    assert src in m["syncd_last_success_timestamp_seconds"]


def test_metrics_text_format_escapes_labels() -> None:
    from syncd.ops.metrics import MetricFamily, Sample

    text = render_metrics([MetricFamily("x_total", "counter", "Help with \\ and\nnewline.",
                                        (Sample((("source", 'github:o/"r"\\x'),), 3.0), Sample((), 0.25)))])
    assert text == ('# HELP x_total Help with \\\\ and\\nnewline.\n# TYPE x_total counter\n'
                    'x_total{source="github:o/\\"r\\"\\\\x"} 3\nx_total 0.25\n')


# ---- syncd check -----------------------------------------------------------------------------------


def check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "syncd", "check"], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_syncd_check_exit_codes(tmp_path: Path, sim: WorkOSSimulator, make_app: Callable[..., App]) -> None:
    url = f"sqlite:///{tmp_path / 'check.db'}"
    env = {"DATABASE_URL": url, **workos_env(sim)}
    assert make_app(url, **workos_env(sim)).tick_all()[0].ok
    healthy = check(tmp_path, **env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.splitlines()[0] == "healthy"
    assert healthy.stdout.splitlines()[1].startswith("workos: ok — last successful tick")

    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the last success, long ago
        conn.execute(sa.text("UPDATE syncd_sources SET last_success_at = '2020-01-01 00:00:00'"))
    engine.dispose()
    stale = check(tmp_path, **env)
    assert stale.returncode == 1 and stale.stdout.startswith("unhealthy\n")
    assert "workos: FAILING — no successful tick for" in stale.stdout
    assert WORKOS_KEY not in healthy.stdout + stale.stdout + stale.stderr


def test_check_without_a_database_or_a_source_is_unhealthy(tmp_path: Path, sim: WorkOSSimulator) -> None:
    """What `syncd check` reports (the same function, in process) before migrations ran, or with no
    source configured."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    never = health_check(Settings.from_env({"DATABASE_URL": url, **workos_env(sim)}))
    assert not never.healthy and never.text().startswith("unhealthy\ndatabase unavailable (OperationalError)")
    nothing = health_check(Settings.from_env({"DATABASE_URL": url}))
    assert not nothing.healthy and "no source is configured" in nothing.text()
