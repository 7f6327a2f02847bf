"""The ``syncd`` command. Thin: parse, build settings, call the app, map errors to exit codes
(0 ok, 1 a failed run, 2 bad usage or configuration)."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from syncd.errors import ConfigError, SyncdError
from syncd.settings import Settings, env_file_warnings

if TYPE_CHECKING:
    from syncd.ops.app import App
    from syncd.ops.http import HealthServer

log = logging.getLogger("syncd.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: From SIGTERM to exit (the container's grace period is longer): ticks finish, then spans are flushed.
STOP_BUDGET_SECONDS = 9.0


def load_environment(env_file: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``.env`` values under the real environment (the environment wins). Warns about likely typos."""
    from dotenv import dotenv_values

    environ = dict(os.environ if base is None else base)
    path = Path(env_file or environ.get("SYNCD_ENV_FILE") or ".env")
    if env_file and not path.is_file():
        raise ConfigError("SYNCD_ENV_FILE", f"{path} does not exist")
    merged = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    merged.update(environ)
    for warning in env_file_warnings(path):
        print(f"syncd: warning: {warning}", file=sys.stderr)
    return merged


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncd", description="Poll provider events into idempotent workflows.")
    p.add_argument("--env-file", help="read settings from this file (default: ./.env if present)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon: tick every source every SYNC_INTERVAL_SECONDS")
    sub.add_parser("once", help="one tick of every source, then exit (1 if a source failed)")
    bf = sub.add_parser("backfill", help="re-sync a time window [start, end) beside live sync; resumable")
    bf.add_argument("--start", required=True, help="window start: unix milliseconds or ISO-8601 (inclusive)")
    bf.add_argument("--end", required=True, help="window end: unix milliseconds or ISO-8601 (exclusive)")
    bf.add_argument("--source", help="only this source key (or every source of a provider)")
    bf.add_argument("--workflow", help="only this workflow (e.g. one added since the events were synced)")
    sub.add_parser("migrate", help="apply database migrations")
    st = sub.add_parser("status", help="cursors, last success, failed runs per source")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("check", help="exit 0 if every source had a successful tick within 3 intervals, else 1 "
                                 "(the container's health check; same rule as /healthz)")
    rp = sub.add_parser("replay", help="re-run dead runs from the ledger (exit 1 if any fails again)")
    rp.add_argument("--workflow", help="only runs of this workflow")
    rp.add_argument("--source", help="only events of this source key (or every source of a provider)")
    rp.add_argument("--event", dest="event_id", metavar="ID", help="only this event id")
    rp.add_argument("--all", action="store_true", help="every dead run (needed when no filter is given)")
    sim = sub.add_parser("simulate", help="run a simulated provider on loopback (workos, github, sink)")
    sim.add_argument("provider", choices=["workos", "github", "sink"])
    sim.add_argument("args", nargs=argparse.REMAINDER, help="options of the simulator (--port, --events, …)")
    demo = sub.add_parser("demo", help="sync a simulated WorkOS into SQLite and print a summary")
    demo.add_argument("--events", type=int, default=3000, help="events in the simulated stream (default 3000)")
    demo.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                      help="keep ticking this long while the simulator produces new events")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--examples", action="store_true",
                      help="also run the shipped example workflows against a local sink (account federation)")
    sn = sub.add_parser("sql-notify", help="PostgreSQL: install/remove the LISTEN/NOTIFY trigger that wakes "
                                           "table sources at once (opt-in; polling works without it)")
    sn.add_argument("action", choices=["install", "remove"])
    sn.add_argument("tables", nargs="+", metavar="TABLE")
    sn.add_argument("--url", help="database holding the tables (default SYNCD_SQL_URL or DATABASE_URL)")
    return p


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "simulate":
            return simulate(args.provider, args.args)
        env = load_environment(args.env_file, environ)
        settings = Settings.from_env(env)
        from syncd.logs import setup_logging

        setup_logging(settings.log_level, settings.log_format)
        return dispatch(args, settings)
    except ConfigError as exc:
        print(f"syncd: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SyncdError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as exc:  # unreachable or refusing database: one line, not a traceback
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines() or [type(orig).__name__]
        print(f"syncd: database error: {lines[0]}", file=sys.stderr)
        return EXIT_FAILED


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "status":
        return cmd_status(settings, as_json=args.json)
    if args.command == "check":
        return cmd_check(settings)
    if args.command == "replay":
        return cmd_replay(settings, args)
    if args.command == "once":
        return cmd_once(settings)
    if args.command == "sql-notify":
        from connectors.sql.notify import command

        print(command(settings.environ, args.action, args.tables, args.url))
        return EXIT_OK
    if args.command == "backfill":
        from syncd.ops.backfill import run_command

        return run_command(settings, start=args.start, end=args.end, source=args.source,
                           workflow=args.workflow)
    if args.command == "run":
        return cmd_run(settings)
    if args.command == "demo":
        from syncd.ops.demo import run_demo

        return run_demo(settings, events=args.events, live_seconds=args.live, seed=args.seed,
                        examples=args.examples)
    raise AssertionError(args.command)


def cmd_migrate(settings: Settings) -> int:
    from syncd.store.db import create_engine
    from syncd.store.schema import current_revision, migrate

    db = create_engine(settings.database_url)
    try:
        migrate(db)
        print(f"database at revision {current_revision(db)}")
    finally:
        db.dispose()
    return EXIT_OK


def cmd_status(settings: Settings, *, as_json: bool) -> int:
    from syncd.ops import status
    from syncd.store.db import create_engine
    from syncd.store.reads import SqlReads
    from syncd.store.schema import migrate

    db = create_engine(settings.database_url)
    try:
        migrate(db)
        report = status.collect(SqlReads(db), jaeger_url=settings.jaeger_url)
    finally:
        db.dispose()
    print(json.dumps(report, indent=2) if as_json else status.render(report))
    return EXIT_OK


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.ops.app import App
    from syncd.ops.replay import Selection, render, replay_dead
    from syncd.telemetry import setup_telemetry

    if not (args.all or args.workflow or args.source or args.event_id):
        print("syncd replay: choose --all, --workflow W, --source S or --event ID", file=sys.stderr)
        return EXIT_USAGE
    telemetry = setup_telemetry(settings.telemetry)
    app = App.build(settings, require_sources=False)
    try:
        report = replay_dead(app.engine, Selection(workflow=args.workflow, source=args.source,
                                                   event_id=args.event_id))
    finally:
        app.close()
        telemetry.shutdown()
    print(render(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_check(settings: Settings) -> int:
    from syncd.ops.health import check

    report = check(settings)
    print(report.text(), end="")
    return EXIT_OK if report.healthy else EXIT_FAILED


def cmd_once(settings: Settings) -> int:
    from syncd.ops.app import App
    from syncd.ops.backfill import drive_settings_windows
    from syncd.ops.backfill import report as backfill_report
    from syncd.telemetry import setup_telemetry

    telemetry = setup_telemetry(settings.telemetry)
    app = App.build(settings)
    try:
        results = app.tick_all()
        windows = drive_settings_windows(app)  # EVENTS_RANGE_START/END: that window, to done
    finally:
        app.close()
        telemetry.shutdown()
    failed = False
    for r in results:
        state = "ok" if r.ok else "FAILED"
        extra = f" ({r.skipped_reason})" if r.skipped_reason else ""
        print(f"{r.source}: {state}{extra} — {r.pages} pages, {r.events} events ({r.new_events} new), "
              f"{r.runs_ok} runs ok, {r.runs_failed} failed" + (f"; error: {r.error}" if r.error else ""))
        failed = failed or not r.ok
    if windows and backfill_report(windows, out=sys.stdout) != EXIT_OK:
        failed = True
    return EXIT_FAILED if failed else EXIT_OK


def cmd_run(settings: Settings) -> int:
    from syncd.ops.app import App
    from syncd.ops.backfill import window_jobs
    from syncd.ops.scheduler import Daemon, install_signal_handlers
    from syncd.telemetry import setup_telemetry

    telemetry = setup_telemetry(settings.telemetry)
    app = App.build(settings)
    install_signal_handlers(app.stop)
    jobs: list[tuple[str, Callable[[], object]]] = [(c.key, functools.partial(app.tick, c))
                                                    for c in app.connectors]
    jobs += [(job.key, job) for job in window_jobs(app)]  # EVENTS_RANGE_*: one job per window
    daemon = Daemon(jobs, interval=settings.interval_seconds, stop=app.stop)
    log.info("syncd running: sources %s, workflows %s", ", ".join(c.key for c in app.connectors),
             ", ".join(sorted(w.name for w in app.registry.all())))
    health = start_health_server(settings, app)
    daemon.start()
    from connectors.sql.notify import start_listeners

    listeners = start_listeners(app.connectors, daemon.scheduler)  # PostgreSQL tables: NOTIFY wakes a job
    stopping = time.monotonic()
    try:
        while not app.stop.wait(0.5):
            pass
        stopping = time.monotonic()
        daemon.wait()
    finally:
        for listener in listeners:
            listener.stop(timeout=1.0)
        if health is not None:
            health.stop()
        # Whatever is left of the SIGTERM budget, at most OTEL_EXPORTER_OTLP_TIMEOUT, even if Jaeger is down.
        left = STOP_BUDGET_SECONDS - (time.monotonic() - stopping)
        telemetry.shutdown(timeout=max(0.5, min(telemetry.timeout, left)))
    log.info("stopped")
    if not daemon.idle:
        logging.shutdown()
        os._exit(EXIT_OK)  # a tick is stuck in I/O; its transaction was never committed, so nothing is lost
    app.close()
    return EXIT_OK


def start_health_server(settings: Settings, app: App) -> HealthServer | None:
    """/healthz and /metrics on SYNCD_HTTP_HOST:SYNCD_HTTP_PORT (None when the port is 0)."""
    from datetime import UTC, datetime

    from syncd.ops.http import HealthServer, Monitor
    from syncd.store.reads import SqlReads

    if settings.http_port == 0:
        return None
    monitor = Monitor(SqlReads(app.db), [c.key for c in app.connectors], interval=settings.interval_seconds,
                      now=app.engine.clock.now, started_at=datetime.now(UTC))
    server = HealthServer(monitor, host=settings.http_host, port=settings.http_port)
    try:
        server.start()
    except ConfigError:
        app.close()
        raise
    return server


def simulate(provider: str, argv: Sequence[str]) -> int:
    if provider == "workos":
        from connectors.workos.simulator import main as sim_main
    elif provider == "github":
        from connectors.github.simulator import main as sim_main
    else:
        from connectors.sink.simulator import main as sim_main
    return int(sim_main(list(argv)) or 0)


#: Container allocations between two young-generation collections (Python's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fewer cyclic-GC passes for a process that turns pages into rows all day.

    A catch-up allocates and frees millions of short-lived dicts and tuples (JSON, rows). With Python's
    default threshold the collector ran once every 115 events or so, and seven times in a 100,000-event
    catch-up it walked every object of the process (SQLAlchemy's and OpenTelemetry's included): 5% of
    the catch-up's CPU. With young collections every 10,000 net allocations it is 0.2%. Reference
    counting still frees everything that is not in a cycle at once; what waits longer for the collector
    costs about 8 MB of peak RSS (a 100k-event catch-up: 78 -> 85 MB; bench scenario B's limit is 150).
    """
    import gc

    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def entrypoint() -> None:  # pragma: no cover
    tune_gc()
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `syncd status | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
