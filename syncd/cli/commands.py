"""The subcommands: each builds what it needs from the typed settings, calls the app, and returns an exit
code (0 ok, 1 a failed run, 2 bad usage; `syncd once` adds 3, a source skipped: ``syncd.ops.once``).
``syncd.cli`` parses the command line and maps errors."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import ConfigError
from syncd.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncd.ops.statusparts import Filters

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "status":
        from syncd.ops.statusparts import Filters

        return cmd_status(settings, as_json=args.json,
                          filters=Filters(source=args.source, workflow=args.workflow, status=args.status,
                                          everything=args.everything))
    if args.command == "check":
        return cmd_check(settings)
    if args.command == "prune":
        return cmd_prune(settings, vacuum=args.vacuum)
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
    if args.command == "ui":
        return cmd_ui(settings, host=args.host, port=args.port)
    if args.command == "cursor":
        from syncd.cli.cursor import command as cursor_command

        return cursor_command(settings, args)
    if args.command == "demo":
        from syncd.ops.demo import run_demo

        return run_demo(settings, events=args.events, live_seconds=args.live, seed=args.seed,
                        examples=args.examples, database=args.database)
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


def cmd_status(settings: Settings, *, as_json: bool, filters: Filters | None = None) -> int:
    """Read-only: never creates or migrates a database (a mistyped path says so instead)."""
    from syncd.ops import status
    from syncd.ops.statusparts import NoMatch
    from syncd.store.db import create_engine
    from syncd.store.reads import SqlReads

    require_database(settings.database_url)
    db = create_engine(settings.database_url)
    try:
        require_tables(db)
        report = status.collect(SqlReads(db), jaeger_url=settings.jaeger_url, filters=filters,
                                retention_days=settings.retention_days)
    except NoMatch as exc:
        print(f"syncd status: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.dispose()
    print(json.dumps(report, indent=2) if as_json else status.render(report))
    return EXIT_OK


def require_database(url: str) -> None:
    """ConfigError (exit 2, naming DATABASE_URL) when ``url`` is a SQLite file that does not exist."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    path = parsed.database or ""
    local_file = parsed.get_backend_name() == "sqlite" and path not in ("", ":memory:") and not path.startswith("file:")
    if local_file and not Path(path).is_file():
        raise ConfigError("DATABASE_URL", f"no database at {path}: nothing has synced there "
                                              "(check the path, or run `syncd migrate` or `syncd once` first)")


def require_tables(db: Engine) -> None:
    """ConfigError (exit 2) when the database has no syncd tables (it was never migrated)."""
    import sqlalchemy as sa

    from syncd.store.db import reading

    with reading(db) as conn:  # a read never waits for SQLite's write lock (a catch-up holds it)
        present = sa.inspect(conn).has_table("syncd_sources")
    if not present:
        raise ConfigError("DATABASE_URL", "the database has no syncd tables yet "
                                          "(run `syncd migrate` or `syncd once` first)")


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.ops.app import App
    from syncd.ops.replay import Selection, render, replay_dead
    from syncd.ops.spanlosses import report_losses
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
        report_losses(app.db, app.engine.replica_id)  # for `syncd status` (syncd.ops.spanlosses)
    print(render(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_prune(settings: Settings, *, vacuum: bool) -> int:
    """``syncd prune``: 0 pruned (or another replica is pruning right now), 1 on a database error."""
    from syncd.ops.retention import run_command
    from syncd.ops.scheduler import install_signal_handlers

    stop = threading.Event()
    install_signal_handlers(stop)
    report = run_command(settings.database_url, days=settings.retention_days, lease_seconds=settings.lease_seconds,
                         replica_id=settings.replica_id, vacuum=vacuum, stop=stop)
    print(report.text())
    return EXIT_OK


def cmd_check(settings: Settings) -> int:
    from syncd.ops.check import check

    report = check(settings)
    print(report.text(), end="")
    return EXIT_OK if report.healthy else EXIT_FAILED


def cmd_once(settings: Settings) -> int:
    """``syncd once``: exit codes and output in ``syncd.ops.once``; SIGTERM/SIGINT finish the page in hand
    and release every lease before it returns."""
    from syncd.ops.app import App
    from syncd.ops.once import run_once
    from syncd.ops.spanlosses import report_losses
    from syncd.stopping import install_signal_handlers

    stop_tracing = start_tracing(settings)
    app = App.build(settings)
    try:
        install_signal_handlers(app.stop)
        report = run_once(app)
    finally:
        app.close()
        stop_tracing()
        report_losses(app.db, app.engine.replica_id)  # for `syncd status` (syncd.ops.spanlosses)
    report.print()
    return report.exit_code


def start_tracing(settings: Settings) -> Callable[[], object]:
    """Install tracing as the ``OTEL_*`` settings ask (``syncd.telemetry``); returns its bounded shutdown.
    With tracing off (the default) the OpenTelemetry SDK is not imported at all: 15-20 ms of CPU saved on
    every short-lived command (``syncd once`` from cron, over many sources)."""
    if settings.telemetry.exporter == "none":
        return lambda: True
    from syncd.telemetry import setup_telemetry

    return setup_telemetry(settings.telemetry).shutdown


def cmd_ui(settings: Settings, *, host: str, port: int) -> int:
    """``syncd ui``: the dashboard of DATABASE_URL until SIGTERM/SIGINT; read-only on the schema (never migrates)."""
    from syncd.ops.dashboard.serve import serve_dashboard
    from syncd.store.db import create_engine

    if not 0 <= port <= 65_535:
        print(f"syncd ui: --port must be 0 to 65535, got {port}", file=sys.stderr)
        return EXIT_USAGE
    require_database(settings.database_url)
    db = create_engine(settings.database_url)
    try:
        require_tables(db)
    finally:
        db.dispose()
    serve_dashboard(settings, host=host, port=port)
    return EXIT_OK


def cmd_run(settings: Settings) -> int:
    from syncd.ops.daemon import run_daemon

    run_daemon(settings)
    return EXIT_OK


def simulate(provider: str, argv: Sequence[str]) -> int:
    if provider == "workos":
        from simulators.workos import main as sim_main
    elif provider == "github":
        from simulators.github import main as sim_main
    else:
        from simulators.sink import main as sim_main
    return int(sim_main(list(argv)) or 0)
