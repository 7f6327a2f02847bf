"""The subcommands: each builds what it needs from the typed settings, calls the app, and returns an exit
code (0 ok, 1 a failed run, 2 bad usage). ``syncd.cli`` parses the command line and maps errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from syncd.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    if args.command == "cursor":
        from syncd.cli.cursor import command as cursor_command

        return cursor_command(settings, args)
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
