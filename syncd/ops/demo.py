"""``syncd demo``: the main job on the embedded default — simulated providers (WorkOS, GitHub, Stripe) on
loopback → SQLite.

Contract: the demo never touches the user's data. It writes only to its own SQLite file (``syncd-demo.db``
in the working directory, or ``--database PATH``) and runs only the built-in mirrors and its own example
workflows: ``DATABASE_URL``, ``SYNCD_WORKFLOWS``, ``SYNCD_SOURCES``, SQL sources, integrations and
credentials from the environment or ``.env`` are not read. The file is marked as a demo database (SQLite's
``application_id`` header field); the demo replaces a file carrying that mark and refuses any other
existing file, so ``--database`` pointed at a real database changes nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.engine import TickResult
from syncd.engine.results import RunTally
from syncd.errors import ConfigError
from syncd.ops.app import App
from syncd.settings import Settings
from syncd.store.db import reading

DEMO_FILE = "syncd-demo.db"
DEMO_WORKOS_KEY = "sk_test_demo_simulator"
DEMO_STRIPE_KEY = "sk_test_demo_stripe_simulator"
#: SQLite's ``application_id`` (header offset 68) on every demo database: "syDm".
DEMO_APPLICATION_ID = 0x7379446D
_SQLITE_MAGIC = b"SQLite format 3\x00"


@contextlib.contextmanager
def simulators(events: int, seed: int, live_rate: float) -> Iterator[dict[str, str]]:
    """Start the simulated providers; yield the environment that points syncd at them."""
    from simulators.github import GitHubSimulator
    from simulators.stripe import StripeSimulator
    from simulators.workos import WorkOSSimulator

    with contextlib.ExitStack() as stack:
        workos = stack.enter_context(WorkOSSimulator(events=events, seed=seed, api_key=DEMO_WORKOS_KEY,
                                                     live_rate=live_rate))
        github = stack.enter_context(GitHubSimulator(seed=seed))
        stripe = stack.enter_context(StripeSimulator(events=stripe_events(events), seed=seed,
                                                     api_key=DEMO_STRIPE_KEY))
        yield {"WORKOS_API_KEY": DEMO_WORKOS_KEY, "WORKOS_BASE_URL": workos.url,
               "GITHUB_TOKEN": "ghp_simulator", "GITHUB_BASE_URL": github.url, "GITHUB_REPOS": "acme/web,acme/api",
               "STRIPE_API_KEY": DEMO_STRIPE_KEY, "STRIPE_BASE_URL": stripe.url}


def stripe_events(events: int) -> int:
    """The simulated Stripe account's events: a fifth of the WorkOS ones (the demo stays a few seconds)."""
    return max(events // 5, 1)


def run_demo(settings: Settings, *, events: int = 3000, live_seconds: float = 0.0, seed: int = 7,
             examples: bool = False, database: str | None = None) -> int:
    """Sync the simulators into the demo's own database (``database``, default ``./syncd-demo.db``).
    ``settings`` only says how to log (the CLI builds it from ``LOG_LEVEL`` and ``LOG_FORMAT`` alone):
    nothing else of the user's configuration is used."""
    started = time.perf_counter()
    path = demo_database(database)
    database_url = f"sqlite:///{path}"
    print(f"syncd demo: {events} simulated WorkOS events, {stripe_events(events)} Stripe events and two GitHub "
          f"repositories → {path}\n"
          "  (the demo's own SQLite file: DATABASE_URL, SYNCD_WORKFLOWS and your other settings are not used)")
    with simulators(events, seed, live_rate=20.0 if live_seconds > 0 else 0.0) as sim_env, \
            contextlib.ExitStack() as stack:
        env = {**sim_env, "DATABASE_URL": database_url}
        sink = _example_sink(stack, env) if examples else None
        from syncd.examples.welcome_demo import DemoClock, prepare

        welcome = prepare(stack, env, database_url) if examples else None  # a users table + local SMTP
        clock = DemoClock()  # real time, fast-forwarded past the welcome email's 30-minute wait
        demo_settings = replace(Settings.from_env(env), interval_seconds=2, log_level=settings.log_level,
                                log_format=settings.log_format)
        app = App.build(demo_settings, clock=clock)
        try:
            results = _tick(app)
            _print_ticks(results)
            deadline = time.monotonic() + live_seconds
            while time.monotonic() < deadline:
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
                _print_ticks(_tick(app), live=True)
            if welcome is not None:
                welcome.finish(app, clock)
            _summary(app, time.perf_counter() - started)
            if sink is not None:
                _sink_summary(sink)
            ok = all(r.ok for r in results)
        finally:
            app.close()
    return 0 if ok else 1


def _tick(app: App) -> list[TickResult]:
    """Tick every source, then run the runs it queued with the worker pool (as ``syncd once`` does)."""
    pool = app.workers()
    app.engine.workers = pool
    try:
        results = app.tick_all()
        drained = pool.drain()
    finally:
        app.engine.workers = None
    for result in results:
        result.add_runs(drained.by_stream.get(result.source, RunTally()))
    return results


def demo_database(database: str | None) -> Path:
    """The demo's SQLite file, new and marked as the demo's. An earlier demo database there is replaced;
    any other existing file is a ConfigError naming ``--database`` (and is left as it was)."""
    path = Path(database or DEMO_FILE).expanduser().resolve()
    if path.is_dir():
        raise ConfigError("--database", f"{path} is a directory; give a file path")
    if path.exists() and path.stat().st_size > 0 and application_id(path) != DEMO_APPLICATION_ID:
        raise ConfigError("--database", f"{path} exists and is not a syncd demo database; the demo never "
                                        "writes over other files: choose another path, or delete it")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise ConfigError("--database", f"cannot create {path}: {exc}") from None
    try:
        # Before syncd switches the file to WAL: the mark is then in the main file's header at once.
        conn.execute(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
        conn.execute("CREATE TABLE syncd_demo (created_at TEXT)")
        conn.execute("DROP TABLE syncd_demo")  # a write, so the header (and the mark) reach the file
        conn.commit()
    finally:
        conn.close()
    return path


def application_id(path: Path) -> int | None:
    """SQLite's ``application_id`` of the file at ``path``; None when it is not an SQLite database. Read
    from the header bytes, so checking a file never opens (or creates a journal beside) it."""
    with path.open("rb") as file:
        header = file.read(72)
    if len(header) < 72 or not header.startswith(_SQLITE_MAGIC):
        return None
    return int.from_bytes(header[68:72], "big")


def _example_sink(stack: contextlib.ExitStack, env: dict[str, str]) -> Any:
    """Point the shipped examples' integrations at a local sink that fails 2% of calls."""
    from simulators.sink import SinkSimulator

    sink = stack.enter_context(SinkSimulator(fail_rate=0.02, seed=3))
    env["SYNCD_WORKFLOWS"] = ",".join(filter(None, [env.get("SYNCD_WORKFLOWS"), "syncd.examples.account_federation"]))
    env.update({"SYNCD_INTEGRATION_INTERCOM_URL": f"{sink.url}/intercom",
                "SYNCD_INTEGRATION_CLOSE_URL": f"{sink.url}/close", "SYNCD_SLACK_WEBHOOK_URL": f"{sink.url}/slack"})
    return sink


def _sink_summary(sink: Any) -> None:
    print("\nAccount federation (example) — calls received by the local sink:")
    for path in ("/intercom", "/slack", "/close"):
        calls = [c for c in sink.calls if c.path.startswith(path)]
        ok = sink.successes_by_key(path)
        print(f"  {path[1:]:<10} {len(calls):>5} calls, {sum(1 for c in calls if c.status >= 500):>4} failed "
              f"(retried), {len(ok):>5} users reached, {sum(n - 1 for n in ok.values())} duplicates")


def _print_ticks(results: list[TickResult], live: bool = False) -> None:
    for r in results:
        if live and not r.new_events and r.ok:
            continue
        status = "ok" if r.ok else f"FAILED: {r.error}"
        print(f"  {r.source:<20} {r.pages:>4} pages  {r.events:>6} events  {r.new_events:>6} new  "
              f"{r.runs_ok:>6} runs ok  {r.runs_failed:>3} failed  {status}")


def _summary(app: App, seconds: float) -> None:
    from connectors.github.tables import issues
    from connectors.stripe.tables import customers, subscriptions
    from connectors.workos.tables import memberships, organizations, users
    from syncd.ops.statusparts import cursor_text
    from syncd.redaction import printable

    with app.reads.snapshot() as reads:
        by_type = reads.event_counts_by_type()
        run_counts = reads.run_counts()
        cursors = reads.sources()
    print(f"\nEvents by type ({sum(n for _, n in by_type)} in the ledger):")
    for event_type, n in by_type:
        print(f"  {event_type:<40} {n:>7}")
    print("\nRows per mirror table:")
    for name, count in _row_counts(app.db, [users, organizations, memberships, issues, customers,
                                                       subscriptions]):
        print(f"  {name:<40} {count:>7}")
    statuses: dict[str, int] = {}
    for (_, status), n in run_counts.items():
        statuses[status] = statuses.get(status, 0) + n
    print(f"\nWorkflow runs: {statuses.get('succeeded', 0)} succeeded, {statuses.get('failed', 0)} failed, "
          f"{statuses.get('dead', 0)} dead")
    print("Cursors:")
    for row in cursors:
        print(f"  {row.key:<20} {printable(cursor_text(row.cursor))}")
    print(f"\nDone in {seconds:.1f}s. Inspect with: DATABASE_URL={app.settings.database_url} syncd status")


def _row_counts(db: Engine, tables: Sequence[sa.Table]) -> list[tuple[str, int]]:
    """Rows in each of the user's mirror tables (their data, not syncd's state)."""
    with reading(db) as conn:
        return [(table.name, int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()))
                for table in tables]
