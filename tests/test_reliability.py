"""Reliability (issue 6): HTTP retries and Retry-After, run retries and dead letters, ``syncd replay``,
and a 20,000-event sync through a simulator that injects every fault it knows.

Everything talks real HTTP to the WorkOS simulator on loopback. HTTP waits are switched off by stamina's
testing mode (autouse fixture in conftest) except where a test measures a real wait; workflow backoffs
are crossed with a ``FakeClock``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import stamina
import stamina.instrumentation
from sqlalchemy.engine import Engine

from connectors import workos
from connectors.workos.client import WorkOSConnector
from connectors.workos.tables import memberships, organizations, users
from simulators.workos import DEFAULT_NOW, Faults, WorkOSSimulator
from syncd import cli
from syncd.contracts import Event, FakeClock
from syncd.engine import TickResult, run_backoff
from syncd.errors import RetryableError
from syncd.http import parse_retry_after, retry_hook
from syncd.ops.app import App
from syncd.ops.replay import Selection, replay_dead
from syncd.settings import Secret
from syncd.store.tables import events as ledger
from syncd.store.tables import runs, sources
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for, workos_env

REPO = Path(__file__).resolve().parents[1]
MIRROR_TYPES = frozenset(f"{kind}.{verb}" for kind in ("user", "organization", "organization_membership")
                         for verb in ("created", "updated", "deleted"))
MIRRORS = {"users": users, "organizations": organizations, "organization_memberships": memberships}
#: Fields compared per mirror table (besides id and updated_at), with how to read them from WorkOS data.
FIELDS: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "users": {f: (lambda o, f=f: o[f]) for f in ("email", "first_name", "last_name", "email_verified",
                                                  "external_id", "metadata")},
    "organizations": {f: (lambda o, f=f: o[f]) for f in ("name", "domains", "metadata", "external_id")},
    "organization_memberships": {
        **{f: (lambda o, f=f: o[f]) for f in ("user_id", "organization_id", "status", "custom_attributes")},
        "role": lambda o: o["role"]["slug"],
    },
}


# ---- ground truth ---------------------------------------------------------------------------------------

def utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def truth(final_state: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The simulator's final objects as (updated_at, fields…) per id, written from the WorkOS field list."""
    return {bucket: {oid: (utc(obj["updated_at"]), *(read(obj) for read in FIELDS[bucket].values()))
                     for oid, obj in objects.items()}
            for bucket, objects in final_state.items()}


def mirrored(db: Engine) -> dict[str, dict[str, tuple[Any, ...]]]:
    out = {}
    with db.connect() as conn:
        for bucket, table in MIRRORS.items():
            cols = [table.c.id, table.c.updated_at, *(table.c[f] for f in FIELDS[bucket])]
            out[bucket] = {r[0]: (utc(r[1]), *r[2:]) for r in conn.execute(sa.select(*cols))}
    return out


def assert_exact(db: Engine, final_state: dict[str, dict[str, dict[str, Any]]], event_ids: list[str],
                 stream: str = "workos") -> None:
    """Mirror == ground truth; ledger == every requested event; one succeeded run per (workflow, event)."""
    expected, actual = truth(final_state), mirrored(db)
    for bucket in MIRRORS:
        assert set(actual[bucket]) == set(expected[bucket]), f"{bucket}: ids differ"
        assert actual[bucket] == expected[bucket], f"{bucket}: rows differ"
    with db.connect() as conn:
        stored = list(conn.execute(sa.select(ledger.c.event_id).where(ledger.c.stream == stream)
                                   .order_by(ledger.c.event_id)).scalars())
        run_rows = conn.execute(sa.select(runs.c.workflow, runs.c.event_id, runs.c.status)
                                .where(runs.c.stream == stream)).all()
    assert stored == sorted(event_ids), "the ledger is not exactly the requested events"
    assert len(run_rows) == len({(w, e) for w, e, _ in run_rows}) == len(event_ids)  # one mirror per event
    assert {s for _, _, s in run_rows} == {"succeeded"}


def requested(sim: WorkOSSimulator, types: frozenset[str] = MIRROR_TYPES) -> list[str]:
    return [e["id"] for e in sim.events() if e["event"] in types]


def source_row(db: Engine, key: str = "workos") -> Any:
    with db.connect() as conn:
        return conn.execute(sa.select(sources).where(sources.c.key == key)).one()


def run_row(db: Engine, workflow: str, event_id: str, stream: str = "workos") -> Any:
    with db.connect() as conn:
        return conn.execute(sa.select(runs).where(runs.c.workflow == workflow, runs.c.stream == stream,
                                                  runs.c.event_id == event_id)).one()


def tick_until_caught_up(app: App, clock: FakeClock, max_ticks: int) -> list[TickResult]:
    """Tick until caught up, letting failed ticks happen (faults) and stepping over pauses. Bounded."""
    results: list[TickResult] = []
    for _ in range(max_ticks):
        [result] = app.tick_all()
        results.append(result)
        if result.ok and result.caught_up:
            return results
        clock.advance(10)  # past any short Retry-After pause
    raise AssertionError(f"not caught up after {max_ticks} ticks: {[r.error for r in results]}")


def build(apps: list[App], db_url: str, clock: FakeClock, registry: Registry | None = None,
          connectors: list[Any] | None = None, **env: str) -> App:
    app = App.build(settings_for(db_url, **env), registry=registry or Registry(), clock=clock,
                    connectors=connectors)
    apps.append(app)
    return app


# ---- 1. HTTP: timeouts, retries with backoff, Retry-After ----------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    ("3", 3.0), ("0.5", 0.5), (" 120 ", 120.0), ("-4", 0.0), ("Thu, 15 Jan 2026 12:00:30 GMT", 30.0),
    ("Thu, 15 Jan 2026 11:59:00 GMT", 0.0), ("soon", None), ("", None), (None, None), ("inf", None),
])
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=DEFAULT_NOW) == seconds


@pytest.mark.parametrize(("error", "decision"), [
    (RetryableError("s", "HTTP 503"), True),  # no Retry-After: stamina's exponential backoff with jitter
    (RetryableError("s", "HTTP 429", retry_after=2.0), 2.0),  # short: wait exactly what the provider said
    (RetryableError("s", "HTTP 429", retry_after=60.0), False),  # long: stop; the engine pauses the source
    (ValueError("a bug"), False),  # anything else is not retried
])
def test_retry_hook_decides_by_error_kind(error: Exception, decision: bool | float) -> None:
    assert retry_hook(error) == decision


@pytest.fixture
def retries_seen() -> Iterator[list[int]]:
    """The number of every retry stamina schedules in this test (1, 2, …: attempts - 1 of them per loop)."""
    seen: list[int] = []
    previous = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([*previous, lambda details: seen.append(details.retry_num)])
    yield seen
    stamina.instrumentation.set_on_retry_hooks(previous)


#: The attempts README's "What happens when…" table promises for an unreachable or failing provider.
HTTP_ATTEMPTS = 4


# Each fault with its own message: a 5xx must not be reported as a timeout, nor a reset as bad JSON.
@pytest.mark.parametrize(("fault", "statuses", "message"), [
    (Faults(error_rate=1.0), {500, 502, 503}, r"HTTP 50[023]"),
    (Faults(rate_limit_rate=1.0, retry_after=0.5), {429}, r"rate limited \(HTTP 429"),
    (Faults(broken_rate=1.0), {200}, r"invalid JSON in a 200 response \(\d+ bytes\)"),
    (Faults(reset_rate=1.0), {0}, r"cannot reach the provider \("),
    (Faults(timeout_rate=1.0, slow_seconds=3.0), {200}, r"timed out talking to the provider \(\w*Timeout\)"),
], ids=["5xx", "429", "broken-json", "reset", "timeout"])
def test_each_transient_fault_is_retried_then_fails_the_tick_without_moving_the_cursor(
        sqlite_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator, fault: Faults,
        statuses: set[int], message: str, retries_seen: list[int]) -> None:
    app = build(apps, sqlite_url, clock, **workos_env(workos_sim), SYNCD_HTTP_TIMEOUT="0.2")
    workos_sim.faults = fault
    started = time.monotonic()
    [result] = app.tick_all()
    # four attempts, each cut at the 0.2 s client timeout: ~1 s; uncut, the simulator's 3 s each would take 12 s
    assert time.monotonic() - started < 10
    assert not result.ok and result.pages == 0
    assert result.error and re.search(message, result.error), result.error
    # conftest's testing mode caps far above the client's own attempts, so the count is the client's setting
    # (the one the App built from the settings), seen by the client's retry loop and by the simulator.
    assert app.connectors[0].attempts == HTTP_ATTEMPTS
    assert retries_seen == list(range(1, HTTP_ATTEMPTS))
    deadline = time.monotonic() + 5  # slow responses are logged by the simulator once they finish
    while len(workos_sim.requests) < HTTP_ATTEMPTS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workos_sim.requests) == HTTP_ATTEMPTS  # the client's attempts, no more
    assert {status for _, status in workos_sim.requests} <= statuses
    assert source_row(app.db).cursor is None and source_row(app.db).last_error == result.error

    workos_sim.faults = Faults()
    clock.advance(1)  # past the pause a 429's Retry-After asked for
    [result] = app.tick_all()
    assert result.ok and result.caught_up
    assert_exact(app.db, workos_sim.final_state(MIRROR_TYPES), requested(workos_sim))


def closed_port_url() -> str:
    with socket.socket() as probe:  # bound, never listening: every connection is refused
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("provider", ["workos", "github", "stripe"])
def test_each_connector_the_app_builds_makes_its_own_attempts_against_an_unreachable_provider(
        sqlite_url: str, apps: list[App], clock: FakeClock, retries_seen: list[int], provider: str) -> None:
    """Every connector built from the settings retries HTTP_ATTEMPTS times, counted by its retry loop (the
    testing mode's cap is far above): raising a client's attempts fails this test."""
    url = closed_port_url()
    env = {
        "workos": {"WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": url},
        "github": {"GITHUB_REPOS": "acme/web", "GITHUB_BASE_URL": url},
        "stripe": {"STRIPE_API_KEY": "sk_test_unreachable_stripe", "STRIPE_BASE_URL": url},
    }[provider]
    app = build(apps, sqlite_url, clock, **env)
    [result] = app.tick_all()
    assert not result.ok and "cannot reach the provider (ConnectError" in (result.error or ""), result.error
    [connector] = app.connectors
    assert connector.attempts == HTTP_ATTEMPTS  # the setting, as the README promises it
    assert retries_seen == list(range(1, connector.attempts))  # and the loop really made that many attempts


def test_a_revoked_key_is_not_retried(sqlite_url: str, apps: list[App], clock: FakeClock,
                                      workos_sim: WorkOSSimulator) -> None:
    app = build(apps, sqlite_url, clock, WORKOS_API_KEY="sk_test_revoked", WORKOS_BASE_URL=workos_sim.url)
    [result] = app.tick_all()
    assert not result.ok and "401" in (result.error or "")
    assert [status for _, status in workos_sim.requests] == [401]


@pytest.fixture
def real_waits() -> Iterator[list[float]]:
    """Leave stamina's testing mode for one test, recording every wait it schedules."""
    waits: list[float] = []
    previous = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([lambda details: waits.append(details.wait_for)])
    with stamina.set_testing(False):
        yield waits
    stamina.instrumentation.set_on_retry_hooks(previous)


def connector_for(sim: WorkOSSimulator, attempts: int, timeout: float = 5.0, key: str = "workos",
                  api_key: str = WORKOS_KEY) -> WorkOSConnector:
    return WorkOSConnector(api_key=Secret(api_key), base_url=sim.url, event_types=sorted(MIRROR_TYPES),
                           attempts=attempts, timeout=timeout, key=key)


def test_a_short_retry_after_is_really_waited(workos_sim: WorkOSSimulator, real_waits: list[float]) -> None:
    workos_sim.faults = Faults(rate_limit_rate=1.0, retry_after=0.3)
    connector = connector_for(workos_sim, attempts=2)
    started = time.monotonic()
    try:
        with pytest.raises(RetryableError) as info:
            connector.fetch_page(None)
    finally:
        connector.close()
    assert real_waits == [0.3]
    assert time.monotonic() - started >= 0.3
    assert info.value.retry_after == 0.3  # handed to the engine, which pauses the source that long


def test_server_errors_back_off_exponentially_with_jitter(workos_sim: WorkOSSimulator,
                                                          real_waits: list[float]) -> None:
    workos_sim.faults = Faults(error_rate=1.0)
    connector = connector_for(workos_sim, attempts=3)
    try:
        with pytest.raises(RetryableError):
            connector.fetch_page(None)
    finally:
        connector.close()
    assert len(real_waits) == 2
    assert 0.2 <= real_waits[0] <= 0.2 + 0.5 and 0.4 <= real_waits[1] <= 0.4 + 0.5  # initial * 2^n + jitter


def test_a_long_retry_after_pauses_the_source_instead_of_blocking_the_tick(
        sqlite_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator,
        capsys: pytest.CaptureFixture[str]) -> None:
    app = build(apps, sqlite_url, clock, **workos_env(workos_sim))
    workos_sim.faults = Faults(rate_limit_rate=1.0, retry_after=120)
    [result] = app.tick_all()
    assert not result.ok and "rate limited" in (result.error or "")
    assert [status for _, status in workos_sim.requests] == [429]  # not slept on, not retried in the tick
    assert source_row(app.db).paused_until == clock.now() + timedelta(seconds=120)
    assert cli.main(["status"], environ={"DATABASE_URL": sqlite_url}) == 0
    assert "PAUSED until" in capsys.readouterr().out

    workos_sim.faults = Faults()
    clock.advance(60)
    [result] = app.tick_all()
    assert result.skipped_reason and result.skipped_reason.startswith("paused until")
    assert len(workos_sim.requests) == 1  # a paused source asks nothing
    clock.advance(61)
    [result] = app.tick_all()
    assert result.ok and result.caught_up
    assert source_row(app.db).paused_until is None


def test_every_fault_knob_is_a_flag_of_syncd_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["simulate", "workos", "--help"])
    text = capsys.readouterr().out
    for knob in Faults.__dataclass_fields__:
        assert f"--{knob.replace('_', '-')}" in text, knob


# ---- 2. run retries, dead letters, replay --------------------------------------------------------------

NOTES = sa.Table("test_notes", sa.MetaData(), sa.Column("event_id", sa.String(64), primary_key=True),
                 sa.Column("email", sa.String(320)))

WORKFLOW_MODULE = '''
"""notify: note every new user (a user's workflow module, loaded through SYNCD_WORKFLOWS)."""
import sqlalchemy as sa

from connectors import workos
from syncd import workflow

NOTES = sa.table("test_notes", sa.column("event_id"), sa.column("email"))
POISON = {poison!r}


@workflow(name="notify", on=workos.events("user.created"), version={version!r})
def notify(event, ctx):
    if {broken!r} and event.id == POISON:
        raise RuntimeError("smtp refused the address")
    ctx.db.execute(sa.insert(NOTES).values(event_id=event.id, email=event.data["email"]))
'''


def notify_registry(poison: str, *, retries: int | None = None) -> Registry:
    """The broken first version of ``notify``: it fails on one event (the poison)."""
    registry = Registry()

    @registry.workflow("notify", on=workos.events("user.created"), version="1", retries=retries)
    def notify(event: Event, ctx: Context) -> None:
        if event.id == poison:
            raise RuntimeError("smtp refused the address")
        ctx.db.execute(sa.insert(NOTES).values(event_id=event.id, email=event.data["email"]))

    return registry


def replay_cli(tmp_path: Path, db_url: str, poison: str, *args: str,
               broken: bool) -> subprocess.CompletedProcess[str]:
    """``syncd replay`` in its own process, with ``notify`` loaded from a module file (fixed or not)."""
    (tmp_path / "user_workflows.py").write_text(
        textwrap.dedent(WORKFLOW_MODULE.format(poison=poison, broken=broken, version="1" if broken else "2")))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
           "DATABASE_URL": db_url, "SYNCD_WORKFLOWS": "user_workflows", "OTEL_SDK_DISABLED": "true",
           "LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "syncd", "replay", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_poison_event_is_retried_dead_lettered_fixed_and_replayed(
        db_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    created = [e["id"] for e in workos_sim.events() if e["event"] == "user.created"]
    poison = created[len(created) // 3]  # early in the stream: many events come after it
    app = build(apps, db_url, clock, notify_registry(poison), **workos_env(workos_sim),
                SYNCD_MAX_ATTEMPTS="3")
    NOTES.create(app.db)
    wanted = requested(workos_sim)

    # first tick: the poison fails, the stream goes on to the end in the same tick
    [first] = app.tick_all()
    assert first.ok and first.caught_up and first.runs_failed == 1
    assert source_row(app.db).cursor == wanted[-1]
    later = created[created.index(poison) + 1:]
    assert later and all(run_row(app.db, "notify", e).status == "succeeded" for e in later)
    poisoned = run_row(app.db, "notify", poison)
    assert (poisoned.status, poisoned.attempts) == ("failed", 1)
    assert poisoned.next_attempt_at == clock.now() + run_backoff(1)
    assert "smtp refused" in poisoned.last_error

    # retried on later ticks, only once its backoff has passed, then dead after the last attempt
    attempts_seen = []
    for wait in (run_backoff(1) / 2, run_backoff(1) / 2, run_backoff(2), run_backoff(3), timedelta(hours=2)):
        clock.advance(wait.total_seconds())
        [tick] = app.tick_all()
        assert tick.ok and tick.new_events == 0
        row = run_row(app.db, "notify", poison)
        attempts_seen.append((row.attempts, row.status))
    assert attempts_seen == [(1, "failed"), (2, "failed"), (3, "dead"), (3, "dead"), (3, "dead")]

    assert cli.main(["status"], environ={"DATABASE_URL": db_url}) == 0
    shown = capsys.readouterr().out
    assert f"dead   notify ← workos {poison} (attempt 3): RuntimeError: smtp refused the address" in shown
    assert "1 dead" in shown

    # replaying before the fix fails again (exit 1); after the fix it succeeds (exit 0)
    before = replay_cli(tmp_path, db_url, poison, "--event", poison, broken=True)
    assert before.returncode == 1, before.stderr
    assert "1 still failing" in before.stdout
    row = run_row(app.db, "notify", poison)
    assert (row.status, row.attempts) == ("dead", 4)  # the failed replay is an attempt too
    fixed = replay_cli(tmp_path, db_url, poison, "--workflow", "notify", broken=False)
    assert fixed.returncode == 0, fixed.stderr
    assert "1 succeeded, 0 still failing" in fixed.stdout
    row = run_row(app.db, "notify", poison)
    assert (row.status, row.attempts, row.workflow_version, row.last_error) == ("succeeded", 5, "2", None)
    with app.db.connect() as conn:
        noted = set(conn.execute(sa.select(NOTES.c.event_id)).scalars())
    assert noted == set(created)  # every user noted exactly once (primary key), the poison included
    assert source_row(app.db).cursor == wanted[-1]  # replay never touches the cursor
    again = replay_cli(tmp_path, db_url, poison, "--all", broken=False)
    assert again.returncode == 0 and "No dead runs match" in again.stdout


def test_retries_override_on_the_workflow_wins_over_syncd_max_attempts(
        sqlite_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator) -> None:
    poison = next(e["id"] for e in workos_sim.events() if e["event"] == "user.created")
    app = build(apps, sqlite_url, clock, notify_registry(poison, retries=2), **workos_env(workos_sim),
                SYNCD_MAX_ATTEMPTS="5")
    NOTES.create(app.db)
    app.tick_all()
    clock.advance(run_backoff(1).total_seconds())
    app.tick_all()
    row = run_row(app.db, "notify", poison)
    assert (row.status, row.attempts, row.next_attempt_at) == ("dead", 2, None)


def test_replay_selects_by_workflow_source_and_event(sqlite_url: str, apps: list[App], clock: FakeClock,
                                                     workos_sim: WorkOSSimulator) -> None:
    """Two workflows fail on every user.created of two sources; each filter replays only its runs."""
    fixed: set[str] = set()
    registry = Registry()
    for name in ("alpha", "beta"):
        @registry.workflow(name, on=workos.events("user.created"), retries=1)
        def fail(event: Event, ctx: Context, name: str = name) -> None:
            if name not in fixed:
                raise RuntimeError(f"{name} is broken")

    connectors = [connector_for(workos_sim, attempts=4, key="workos"),
                  connector_for(workos_sim, attempts=4, key="workos:eu")]
    app = build(apps, sqlite_url, clock, registry, connectors=connectors, SYNCD_BUILTINS="none")
    assert all(r.ok for r in app.tick_all())
    created = [e["id"] for e in workos_sim.events() if e["event"] == "user.created"]

    def dead() -> set[tuple[str, str, str]]:
        with app.db.connect() as conn:
            return {tuple(r) for r in conn.execute(sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id)
                                                   .where(runs.c.status == "dead"))}

    everything = {(w, s, e) for w in ("alpha", "beta") for s in ("workos", "workos:eu") for e in created}
    assert dead() == everything  # retries=1: dead on the first failure

    report = replay_dead(app.engine, Selection(event_id=created[0], source="workos:eu"))
    assert [(r.workflow, r.stream, r.status, r.attempts) for r in report.runs] == [
        ("alpha", "workos:eu", "dead", 2), ("beta", "workos:eu", "dead", 2)]  # still broken: attempt counted
    fixed.add("alpha")
    report = replay_dead(app.engine, Selection(workflow="alpha", source="workos:eu"), batch_size=7)
    assert report.ok and report.succeeded == len(created)
    assert dead() == everything - {("alpha", "workos:eu", e) for e in created}
    report = replay_dead(app.engine, Selection(source="workos"))  # a provider name: all its streams
    assert report.succeeded == len(created) and len(report.still_failing) == 2 * len(created)
    fixed.add("beta")
    assert replay_dead(app.engine).ok
    assert dead() == set()
    with app.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs).where(runs.c.status != "succeeded")
                            ).scalar_one() == 0
    assert cli.main(["replay"], environ={"DATABASE_URL": sqlite_url}) == 2  # nothing chosen: usage error


# ---- 3. fault-injecting provider: 20,000 events --------------------------------------------------------

def test_twenty_thousand_events_through_every_fault_end_exact(tmp_path: Path, apps: list[App],
                                                               clock: FakeClock) -> None:
    faults = Faults(error_rate=0.10, rate_limit_rate=0.05, retry_after=0.2, timeout_rate=0.02,
                    slow_seconds=1.0, broken_rate=0.01, reset_rate=0.005)
    with WorkOSSimulator(events=20_000, seed=6, api_key=WORKOS_KEY, faults=faults) as sim:
        app = build(apps, f"sqlite:///{tmp_path / 'faults.db'}", clock, **workos_env(sim),
                    SYNCD_HTTP_TIMEOUT="0.5")
        started = time.monotonic()
        results = tick_until_caught_up(app, clock, max_ticks=60)
        seconds = time.monotonic() - started
        statuses = [status for _, status in sim.requests]
        final_state = sim.final_state(MIRROR_TYPES)
        wanted = requested(sim)
    failed = sum(not r.ok for r in results)
    counts = ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses)))
    print(f"\n20k with faults: {seconds:.1f}s, {len(results)} ticks ({failed} failed), "
          f"{len(statuses)} requests by status ({counts})")
    assert all(statuses.count(s) for s in (0, 429, 500, 502, 503))  # every fault really happened
    assert_exact(app.db, final_state, wanted)
    assert source_row(app.db).cursor == wanted[-1]
    assert sum(r.new_events for r in results) == len(wanted)  # no event recorded twice, none lost


def test_an_event_repeated_across_page_boundaries_runs_once(
        sqlite_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator) -> None:
    workos_sim.faults = Faults(repeat_boundary=True)
    # one page per transaction: each repeat arrives in a later transaction
    app = build(apps, sqlite_url, clock, **workos_env(workos_sim), SYNCD_GROUP_EVENTS="1")
    [result] = app.tick_all()
    assert result.ok and result.caught_up and result.pages > 2
    assert result.events > result.new_events == len(requested(workos_sim))  # repeats seen, recorded once
    assert_exact(app.db, workos_sim.final_state(MIRROR_TYPES), requested(workos_sim))


def test_a_page_whose_after_does_not_move_stops_the_tick(sqlite_url: str, apps: list[App], clock: FakeClock,
                                                         workos_sim: WorkOSSimulator) -> None:
    wanted = requested(workos_sim)
    workos_sim.faults = Faults(stuck_after=wanted[99])
    app = build(apps, sqlite_url, clock, **workos_env(workos_sim))
    for _ in range(2):  # every tick stops at the same place: an error, never a loop
        started = time.monotonic()
        [result] = app.tick_all()
        assert time.monotonic() - started < 20  # a loop would never end: any bound catches it; generous for load
        assert not result.ok and "cursor did not move" in (result.error or "")
        assert source_row(app.db).cursor == wanted[199]
        assert source_row(app.db).last_error == result.error
    workos_sim.faults = Faults()
    [result] = app.tick_all()
    assert result.ok and result.caught_up
    assert_exact(app.db, workos_sim.final_state(MIRROR_TYPES), wanted)
