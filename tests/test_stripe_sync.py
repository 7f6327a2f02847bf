"""Stripe as a source, end to end: the engine, SQLite and PostgreSQL, real loopback HTTP to the Stripe
simulator, the CLI in real processes where it matters.

What issue 24 asks to be shown for Stripe, and where:
- a first sync takes every retained event, later ticks only newer ones, each event run once
  → ``test_first_sync_then_only_newer_events_each_run_once``
- same-second runs split across pages, and events arriving while a walk is in progress, ticks stopped
  after every page (as a crash would) → ``test_same_second_runs_and_arrivals_mid_walk_*``
- an idle tick is one request → ``test_an_idle_tick_is_one_request``
- ``syncd backfill --source stripe`` asks ``created[gte]``/``created[lt]``; events already processed are
  not run again → ``test_backfill_*``
- 429s honour Retry-After (short: waited; long: the source pauses until then) → ``test_rate_limit_*``
- a wrong key names STRIPE_API_KEY and never shows the key → ``test_a_wrong_key_*``
- ``STRIPE_EVENTS`` beyond 20 types exits 2; ``SYNCD_SOURCES=stripe`` selects it → ``test_settings_*``
- the event's api_version is kept and visible → ``test_the_api_version_is_visible_to_workflows``
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors import stripe
from connectors.stripe.client import StripeConnector
from simulators.stripe import DEFAULT_NOW, StripeSimulator
from syncd import cli
from syncd.contracts import Event, FakeClock
from syncd.ops.app import App
from syncd.settings import Secret
from syncd.store.db import create_engine
from syncd.store.schema import migrate
from syncd.store.tables import events as ledger
from syncd.store.tables import runs, sources
from syncd.workflows import Context, Registry
from tests.conftest import settings_for
from tests.test_github_sync import catch_up

KEY = "sk_test_stripe_sync_6b0d2e"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator(events=400, seed=8, api_key=KEY) as simulator:
        yield simulator


def env_of(sim: StripeSimulator, **extra: str) -> dict[str, str]:
    return {"STRIPE_API_KEY": KEY, "STRIPE_BASE_URL": sim.url, "SYNCD_BUILTINS": "none", "SYNCD_WORKERS": "1",
            **extra}


class Recorder:
    """A workflow on every Stripe event that records what it ran, in order. The apps run it with one worker
    (``SYNCD_WORKERS=1``), which executes runs in the order syncd recorded their events: the order under test.
    (With 16 workers side by side, runs may finish, and append, out of order.)"""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.versions: set[str | None] = set()
        self.registry = Registry()
        self.registry.workflow("record", on=stripe.events())(self.handle)

    def handle(self, event: Event, ctx: Context) -> None:
        self.ran.append(event.id)
        self.versions.add(stripe.api_version(event))


def build(db_url: str, sim: StripeSimulator, apps: list[App], recorder: Recorder, *, page_size: int = 100,
          clock: FakeClock | None = None, key: str = KEY) -> App:
    connector = StripeConnector(api_key=Secret(key), base_url=sim.url, page_size=page_size, timeout=5)
    app = App.build(settings_for(db_url, **env_of(sim)), registry=recorder.registry, connectors=[connector],
                    clock=clock)
    apps.append(app)
    return app


def ledger_ids(app: App) -> Counter[str]:
    with app.db.connect() as conn:
        return Counter(r[0] for r in conn.execute(sa.select(ledger.c.event_id).where(ledger.c.stream == "stripe")))


def truth(sim: StripeSimulator) -> list[str]:
    return [e["id"] for e in sim.events()]


def test_first_sync_then_only_newer_events_each_run_once(db_url: str, sim: StripeSimulator,
                                                          apps: list[App]) -> None:
    recorder = Recorder()
    app = build(db_url, sim, apps, recorder)
    catch_up(app, app.connectors[0])
    assert recorder.ran == truth(sim)  # every retained event, oldest first
    first = len(sim.requests)
    sim.advance(5)
    sim.generate(130)
    results = catch_up(app, app.connectors[0])
    assert sum(r.new_events for r in results) == 130
    assert len(sim.requests) - first == 2  # two pages after the cursor: no search, no walk from the top
    assert recorder.ran == truth(sim)
    assert ledger_ids(app) == Counter(truth(sim))


@pytest.mark.parametrize("page_size", [3, 7])
def test_same_second_runs_and_arrivals_mid_walk_each_run_once_oldest_first(
        db_url: str, apps: list[App], page_size: int) -> None:
    """Runs of 11 and 25 events in one second (split across pages of 3 or 7), events arriving while
    every tick walks (on every 4th request), and ticks stopped after one page as a crash would."""
    sim = StripeSimulator(events=60, seed=3, api_key=KEY)
    sim.start()
    recorder = Recorder()
    app = build(db_url, sim, apps, recorder, page_size=page_size)
    connector = app.connectors[0]
    catch_up(app, connector, limit=1000)
    arrived: list[int] = []

    def arrive(n: int) -> None:
        if n % 4 == 0:
            arrived.extend(e["created"] for e in sim.generate(2))

    sim.on_request = arrive
    for batch, max_pages in ((11, None), (25, 1), (4, 1), (9, None)):
        sim.generate(batch)  # all in the simulator's current second
        catch_up(app, connector, limit=1000, max_pages=max_pages)
        sim.advance(1)
    sim.on_request = None
    catch_up(app, connector, limit=1000)
    assert len(arrived) >= 4  # events arrived during walks (twice or more)
    assert recorder.ran == truth(sim)
    assert ledger_ids(app) == Counter(truth(sim))
    sim.stop()


def test_an_idle_tick_is_one_request(db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    app = build(db_url, sim, apps, Recorder())
    catch_up(app, app.connectors[0])
    before = len(sim.requests)
    [result] = app.tick_all()
    assert result.ok and result.caught_up and result.events == 0
    assert len(sim.requests) == before + 1
    assert "ending_before=" in sim.requests[-1][0]


def test_rate_limit_short_retry_after_is_waited(db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    recorder = Recorder()
    app = build(db_url, sim, apps, recorder)
    sim.faults.fail_next(2, 429, retry_after=1)
    catch_up(app, app.connectors[0])
    assert [s for _, s in sim.requests[:3]] == [429, 429, 200]
    assert recorder.ran == truth(sim)


def test_rate_limit_long_retry_after_pauses_the_source_until_then(
        db_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    clock = FakeClock(datetime.fromtimestamp(DEFAULT_NOW, UTC))
    recorder = Recorder()
    app = build(db_url, sim, apps, recorder, clock=clock)
    sim.faults.fail_next(1, 429, retry_after=300)
    [failed] = app.tick_all()
    assert not failed.ok and "rate limited" in (failed.error or "")
    with app.db.connect() as conn:
        paused = conn.execute(sa.select(sources.c.paused_until).where(sources.c.key == "stripe")).scalar_one()
    assert paused == clock.now() + timedelta(seconds=300)
    requests = len(sim.requests)
    [skipped] = app.tick_all()
    assert skipped.skipped_reason and "paused until" in skipped.skipped_reason and len(sim.requests) == requests
    clock.advance(301)
    catch_up(app, app.connectors[0])
    assert recorder.ran == truth(sim)


def test_a_wrong_key_names_the_variable_and_never_shows_the_key(
        db_url: str, sim: StripeSimulator, apps: list[App], caplog: pytest.LogCaptureFixture) -> None:
    wrong = "sk_test_wrong_stripe_key_77aa31"
    app = build(db_url, sim, apps, Recorder(), key=wrong)
    [result] = app.tick_all()
    assert not result.ok and "STRIPE_API_KEY" in (result.error or "") and "401" in (result.error or "")
    with app.db.connect() as conn:
        stored = " ".join(str(v) for v in conn.execute(sa.select(sources)).one())
    for text in (result.error or "", stored, caplog.text):
        assert "77aa" not in text and wrong not in text and KEY not in text


def test_the_api_version_is_visible_to_workflows(db_url: str, apps: list[App]) -> None:
    with StripeSimulator(events=30, seed=1, api_key=KEY, api_version="2025-03-31.basil") as sim:
        recorder = Recorder()
        app = build(db_url, sim, apps, recorder)
        catch_up(app, app.connectors[0])
    assert recorder.versions == {"2025-03-31.basil"}
    with app.db.connect() as conn:
        assert set(conn.execute(sa.select(ledger.c.action).where(ledger.c.stream == "stripe")).scalars()) == {
            "2025-03-31.basil"}


# ---- settings and the CLI ------------------------------------------------------------------------


def test_settings_more_than_20_stripe_events_exit_2(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    types = ",".join(f"customer.kind_{i}" for i in range(21))
    environ = {"DATABASE_URL": sqlite_url, "OTEL_SDK_DISABLED": "true", "STRIPE_API_KEY": KEY,
               "STRIPE_EVENTS": types}
    assert cli.main(["once"], environ=environ) == 2
    err = capsys.readouterr().err
    assert "configuration error: STRIPE_EVENTS" in err and "at most 20" in err and KEY not in err


@pytest.mark.parametrize(("value", "sent"), [
    ("customer.created, invoice.paid,customer.created", ["customer.created", "invoice.paid"]),
    ("", None),
])
def test_settings_stripe_events_are_sent_as_types(value: str, sent: list[str] | None) -> None:
    assert stripe.event_types({"STRIPE_EVENTS": value}, Registry()) == sent


def test_settings_a_bad_stripe_event_type_is_a_config_error() -> None:
    with pytest.raises(Exception, match="STRIPE_EVENTS"):
        stripe.event_types({"STRIPE_EVENTS": "customer created"}, Registry())


def test_settings_syncd_sources_selects_stripe(sqlite_url: str, sim: StripeSimulator, apps: list[App]) -> None:
    env = env_of(sim, SYNCD_SOURCES="stripe", GITHUB_REPOS="acme/web", GITHUB_BASE_URL=sim.url)
    app = App.build(settings_for(sqlite_url, **env), registry=Recorder().registry)
    apps.append(app)
    assert [c.key for c in app.connectors] == ["stripe"]
    assert isinstance(app.connectors[0], StripeConnector)


WORKFLOWS = """
import sqlalchemy as sa
from connectors import stripe
from syncd import workflow

effects = sa.table("st_effects", sa.column("workflow"), sa.column("event_id"))

def record(name):
    def handler(event, ctx):
        ctx.db.execute(sa.insert(effects).values(workflow=name, event_id=event.id))
    return handler

for name in ("a", "b"):
    workflow(name=name, on=stripe.events())(record(name))
"""

effects = sa.Table("st_effects", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                   sa.Column("workflow", sa.String(20)), sa.Column("event_id", sa.String(64)))


def effect_counts(db: sa.Engine) -> Counter[tuple[str, str]]:
    with db.connect() as conn:
        return Counter((r[0], r[1]) for r in conn.execute(sa.select(effects.c.workflow, effects.c.event_id)))


@pytest.mark.slow
def test_backfill_asks_created_bounds_and_runs_only_what_is_missing(
        db_url: str, sim: StripeSimulator, tmp_path: Path) -> None:
    """``syncd once`` runs workflow ``a`` on everything; then ``syncd backfill`` over the middle of the
    history, with ``b`` deployed: ``b`` runs on exactly the window's events, ``a`` runs on nothing again."""
    db = create_engine(db_url)
    migrate(db)
    effects.metadata.create_all(db)
    (tmp_path / "st_workflows.py").write_text(WORKFLOWS.replace('("a", "b")', '("a",)'))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
           "DATABASE_URL": db_url, "OTEL_TRACES_EXPORTER": "none", "SYNCD_ENV_FILE": str(tmp_path / "none.env"),
           "SYNCD_HTTP_PORT": "0", "SYNCD_WORKFLOWS": "st_workflows", **env_of(sim)}

    def syncd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "syncd", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    once = syncd("once")
    assert once.returncode == 0, once.stderr
    everything = truth(sim)
    assert effect_counts(db) == Counter(("a", i) for i in everything)
    (tmp_path / "st_workflows.py").write_text(WORKFLOWS)
    created = {e["id"]: e["created"] for e in sim.events()}
    start, end = created[everything[100]], created[everything[300]]
    inside = [i for i in everything if start <= created[i] < end]
    requests = len(sim.requests)
    done = syncd("backfill", "--start", datetime.fromtimestamp(start, UTC).isoformat(),
                  "--end", datetime.fromtimestamp(end, UTC).isoformat(), "--source", "stripe")
    assert done.returncode == 0, done.stderr
    asked = [path for path, _ in sim.requests[requests:]]
    assert all(f"created%5Blt%5D={end}" in p or "limit=1" in p for p in asked)
    assert any(f"created%5Bgte%5D={start}" in p for p in asked)
    counts = effect_counts(db)
    assert Counter(i for (wf, i) in counts if wf == "b") == Counter(inside)
    assert Counter(i for (wf, i) in counts if wf == "a") == Counter(everything)  # nothing run again
    assert set(counts.values()) == {1}
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == len(everything) + len(inside)
    db.dispose()
