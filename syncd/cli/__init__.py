"""The ``syncd`` command. Thin: parse, build settings, call the app, map errors to exit codes
(0 ok, 1 a failed run, 2 bad usage or configuration)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from syncd.cli import cursor
from syncd.cli.commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, dispatch, simulate
from syncd.envfile import export_otel
from syncd.errors import ConfigError, SyncdError
from syncd.settings import Settings, env_file_warnings

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "entrypoint", "load_environment", "main", "parser"]

# httpx imports its command-line client when click and rich are installed (rich is a dependency of ours),
# pulling in click, rich's console and pygments' lexers: 50-70 ms of CPU at every start of every command,
# for a client syncd never runs. A None entry makes that optional import raise ImportError, which httpx
# expects (it defines a stub). Nothing above imports httpx (tests/test_startup_imports.py holds it).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def load_environment(env_file: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``.env`` values under the real environment (the environment wins). Warns about likely typos.
    With the process environment (``base`` None), the file's ``OTEL_*`` values are also exported into it,
    where the OpenTelemetry SDK reads them (``OTEL_EXPORTER_OTLP_HEADERS`` for a hosted collector…)."""
    from dotenv import dotenv_values

    environ = dict(os.environ if base is None else base)
    path = Path(env_file or environ.get("SYNCD_ENV_FILE") or ".env")
    if env_file and not path.is_file():
        raise ConfigError("SYNCD_ENV_FILE", f"{path} does not exist")
    from_file = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    if base is None:
        export_otel(from_file)
    merged = {**from_file, **environ}
    for warning in env_file_warnings(path):
        print(f"syncd: warning: {warning}", file=sys.stderr)
    return merged


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="syncd", description="Poll provider events into idempotent workflows.")
    p.add_argument("--env-file", help="read settings from this file (default: ./.env if present)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon: tick every source every SYNC_INTERVAL_SECONDS")
    sub.add_parser("once", help="one tick of every source, then exit (1: a source or run failed; 3: a source "
                                "was skipped, its lease held elsewhere or paused)")
    bf = sub.add_parser("backfill", help="re-sync a time window [start, end) beside live sync; resumable")
    bf.add_argument("--start", required=True, help="window start: unix milliseconds or ISO-8601 (inclusive)")
    bf.add_argument("--end", required=True, help="window end: unix milliseconds or ISO-8601 (exclusive)")
    bf.add_argument("--source", help="only this source key (or every source of a provider)")
    bf.add_argument("--workflow", help="only this workflow (e.g. one added since the events were synced)")
    sub.add_parser("migrate", help="apply database migrations")
    st = sub.add_parser("status", help="cursors, last success, failed runs per source")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--source", help="only this source key (or every source of a provider: workos, github)")
    st.add_argument("--workflow", help="only runs of this workflow")
    st.add_argument("--status", choices=["failed", "dead"], help="only failed (retrying) or dead runs")
    st.add_argument("--all", action="store_true", dest="everything",
                    help="also backfill windows that finished more than a day ago")
    pr = sub.add_parser("prune", help="remove history older than SYNCD_RETENTION_DAYS: old events with their "
                                      "succeeded runs, ticks, finished windows (`syncd run` prunes daily)")
    pr.add_argument("--vacuum", action="store_true",
                    help="SQLite, once: rewrite a file created before syncd used incremental vacuum, so pruning "
                         "shrinks it (blocks syncs while it runs; needs as much free disk as the file)")
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
    demo = sub.add_parser("demo", help="sync a simulated WorkOS into its own SQLite file and print a summary "
                                       "(never DATABASE_URL, never SYNCD_WORKFLOWS)")
    demo.add_argument("--database", metavar="PATH",
                      help="the demo's SQLite file (default ./syncd-demo.db; replaced if it is an earlier "
                           "demo's, refused if it is any other file)")
    demo.add_argument("--events", type=int, default=3000, help="events in the simulated stream (default 3000)")
    demo.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                      help="keep ticking this long while the simulator produces new events")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--examples", action="store_true",
                      help="also run the shipped example workflows against a local sink (account federation)")
    ui = sub.add_parser("ui", help="serve the dashboard against DATABASE_URL without syncing (Ctrl-C stops)")
    ui.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; any other needs SYNCD_UI_TOKEN)")
    cursor.add_parser(sub)
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
        if args.command == "demo":  # the demo uses none of the user's settings, so none can stop it
            env = {k: v for k, v in env.items() if k in ("LOG_LEVEL", "LOG_FORMAT")}
        settings = Settings.from_env(env)
        from syncd.logs import setup_logging

        setup_logging(settings.log_level, settings.log_format)
        from syncd import payloads

        payloads.enable(settings.log_payloads)
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
    if sys.argv[1:2] == ["run"]:  # the console script's way in (python -m syncd does it before its imports)
        from syncd.stopping import catch_early

        catch_early()
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
