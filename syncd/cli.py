"""The ``syncd`` command. Thin: parse, build settings, call the app, map errors to exit codes
(0 ok, 1 a failed run, 2 bad usage or configuration)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from syncd.errors import ConfigError, SyncdError
from syncd.settings import Settings, env_file_warnings

log = logging.getLogger("syncd.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    sub.add_parser("migrate", help="apply database migrations")
    st = sub.add_parser("status", help="cursors, last success, failed runs per source")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    sim = sub.add_parser("simulate", help="run a simulated provider on loopback (workos, github)")
    sim.add_argument("provider", choices=["workos", "github"])
    sim.add_argument("args", nargs=argparse.REMAINDER, help="options of the simulator (--port, --events, …)")
    demo = sub.add_parser("demo", help="sync a simulated WorkOS into SQLite and print a summary")
    demo.add_argument("--events", type=int, default=3000, help="events in the simulated stream (default 3000)")
    demo.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                      help="keep ticking this long while the simulator produces new events")
    demo.add_argument("--seed", type=int, default=7)
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


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "status":
        return cmd_status(settings, as_json=args.json)
    if args.command == "once":
        return cmd_once(settings)
    if args.command == "run":
        return cmd_run(settings)
    if args.command == "demo":
        from syncd.demo import run_demo

        return run_demo(settings, events=args.events, live_seconds=args.live, seed=args.seed)
    raise AssertionError(args.command)


def cmd_migrate(settings: Settings) -> int:
    from syncd.db import create_engine
    from syncd.schema import current_revision, migrate

    db = create_engine(settings.database_url)
    try:
        migrate(db)
        print(f"database at revision {current_revision(db)}")
    finally:
        db.dispose()
    return EXIT_OK


def cmd_status(settings: Settings, *, as_json: bool) -> int:
    from syncd import status
    from syncd.db import create_engine
    from syncd.schema import migrate

    db = create_engine(settings.database_url)
    try:
        migrate(db)
        report = status.collect(db, jaeger_url=settings.environ.get("SYNCD_JAEGER_URL"))
    finally:
        db.dispose()
    print(json.dumps(report, indent=2) if as_json else status.render(report))
    return EXIT_OK


def cmd_once(settings: Settings) -> int:
    from syncd.app import App
    from syncd.telemetry import setup_telemetry

    telemetry = setup_telemetry(settings.environ)
    app = App.build(settings)
    try:
        results = app.tick_all()
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
    return EXIT_FAILED if failed else EXIT_OK


def cmd_run(settings: Settings) -> int:
    from syncd.app import App
    from syncd.scheduler import Daemon, install_signal_handlers
    from syncd.telemetry import setup_telemetry

    telemetry = setup_telemetry(settings.environ)
    app = App.build(settings)
    install_signal_handlers(app.stop)
    daemon = Daemon([(c.key, lambda c=c: app.tick(c)) for c in app.connectors],
                    interval=settings.interval_seconds, stop=app.stop)
    log.info("syncd running: sources %s, workflows %s", ", ".join(c.key for c in app.connectors),
             ", ".join(sorted(w.name for w in app.registry.all())))
    daemon.start()
    try:
        daemon.wait()
    finally:
        telemetry.shutdown()
    log.info("stopped")
    if not daemon.idle:
        logging.shutdown()
        os._exit(EXIT_OK)  # a tick is stuck in I/O; its transaction was never committed, so nothing is lost
    app.close()
    return EXIT_OK


def simulate(provider: str, argv: Sequence[str]) -> int:
    if provider == "workos":
        from connectors.workos.simulator import main as sim_main
    else:
        from connectors.github.simulator import main as sim_main
    return int(sim_main(list(argv)) or 0)


def entrypoint() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
