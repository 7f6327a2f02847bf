"""``syncd demo``: the main job on the embedded default — simulated providers on loopback → SQLite."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from syncd.engine import TickResult
from syncd.ops.app import App
from syncd.settings import Settings, safe_url
from syncd.store.db import reading

DEMO_DB = "sqlite:///syncd-demo.db"
DEMO_WORKOS_KEY = "sk_test_demo_simulator"


@contextlib.contextmanager
def simulators(events: int, seed: int, live_rate: float) -> Iterator[dict[str, str]]:
    """Start the simulated providers; yield the environment that points syncd at them."""
    from simulators.github import GitHubSimulator
    from simulators.workos import WorkOSSimulator

    with contextlib.ExitStack() as stack:
        workos = stack.enter_context(WorkOSSimulator(events=events, seed=seed, api_key=DEMO_WORKOS_KEY,
                                                     live_rate=live_rate))
        github = stack.enter_context(GitHubSimulator(seed=seed))
        yield {"WORKOS_API_KEY": DEMO_WORKOS_KEY, "WORKOS_BASE_URL": workos.url,
               "GITHUB_TOKEN": "ghp_simulator", "GITHUB_BASE_URL": github.url, "GITHUB_REPOS": "acme/web,acme/api"}


def run_demo(settings: Settings, *, events: int = 3000, live_seconds: float = 0.0, seed: int = 7,
             examples: bool = False) -> int:
    started = time.perf_counter()
    database_url = settings.environ.get("DATABASE_URL") or DEMO_DB
    if database_url == DEMO_DB:
        Path(make_url(DEMO_DB).database or "syncd-demo.db").unlink(missing_ok=True)
    print(f"syncd demo: {events} simulated WorkOS events → {safe_url(database_url)}")
    with simulators(events, seed, live_rate=20.0 if live_seconds > 0 else 0.0) as sim_env, \
            contextlib.ExitStack() as stack:
        env = {**settings.environ, **sim_env, "DATABASE_URL": database_url}
        sink = _example_sink(stack, env) if examples else None
        from syncd.examples.welcome_demo import DemoClock, prepare

        welcome = prepare(stack, env, database_url) if examples else None  # a users table + local SMTP
        clock = DemoClock()  # real time, fast-forwarded past the welcome email's 30-minute wait
        env.pop("SYNCD_SOURCES", None)
        demo_settings = replace(Settings.from_env(env), interval_seconds=2)
        app = App.build(demo_settings, clock=clock)
        try:
            results = app.tick_all()
            _print_ticks(results)
            deadline = time.monotonic() + live_seconds
            while time.monotonic() < deadline:
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
                _print_ticks(app.tick_all(), live=True)
            if welcome is not None:
                welcome.finish(app, clock)
            _summary(app, time.perf_counter() - started)
            if sink is not None:
                _sink_summary(sink)
            ok = all(r.ok for r in results)
        finally:
            app.close()
    return 0 if ok else 1


def _example_sink(stack: contextlib.ExitStack, env: dict[str, str]) -> Any:
    """Point the shipped examples' integrations at a local sink that fails 2% of calls."""
    from simulators.sink import SinkSimulator

    sink = stack.enter_context(SinkSimulator(fail_rate=0.02, seed=3))
    modules = [m for m in (env.get("SYNCD_WORKFLOWS") or "").split(",") if m.strip()]
    env["SYNCD_WORKFLOWS"] = ",".join([*modules, "syncd.examples.account_federation"])
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
    from connectors.workos.tables import memberships, organizations, users
    from syncd.ops.status import short

    with app.reads.snapshot() as reads:
        by_type = reads.event_counts_by_type()
        run_counts = reads.run_counts()
        cursors = reads.sources()
    print(f"\nEvents by type ({sum(n for _, n in by_type)} in the ledger):")
    for event_type, n in by_type:
        print(f"  {event_type:<40} {n:>7}")
    print("\nRows per mirror table:")
    for name, count in _row_counts(app.db, [users, organizations, memberships, issues]):
        print(f"  {name:<40} {count:>7}")
    statuses: dict[str, int] = {}
    for (_, status), n in run_counts.items():
        statuses[status] = statuses.get(status, 0) + n
    print(f"\nWorkflow runs: {statuses.get('succeeded', 0)} succeeded, {statuses.get('failed', 0)} failed, "
          f"{statuses.get('dead', 0)} dead")
    print("Cursors:")
    for row in cursors:
        print(f"  {row.key:<20} {short(row.cursor) if row.cursor else '(start)'}")
    print(f"\nDone in {seconds:.1f}s. Inspect with: DATABASE_URL={app.settings.database_url} syncd status")


def _row_counts(db: Engine, tables: Sequence[sa.Table]) -> list[tuple[str, int]]:
    """Rows in each of the user's mirror tables (their data, not syncd's state)."""
    with reading(db) as conn:
        return [(table.name, int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()))
                for table in tables]
