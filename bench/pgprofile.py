"""Where scenario D's time goes: ``python -m bench.pgprofile [--events 20000] [--rounds 2] [--cprofile]``.

The same runs as scenario D (``syncd once`` and the floor, alternated, each on a fresh database of one
throwaway PostgreSQL server), but on a server with ``pg_stat_statements`` loaded (``track_planning`` on),
so each run also prints the server's statements by total time: calls, rows, execution and planning ms,
WAL records and bytes and local (temp-table) blocks written, which show index and WAL work, not just time.
With ``--cprofile`` one more ``syncd once`` runs under cProfile and its top functions are printed (own
time and cumulative), the file kept in ``bench/results/pgprofile-syncd.prof``.

Only for profiling: scenario D itself runs on a plain server, since the extension costs a little on
every statement.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, ROOT, SimHost, base_env, checked, measure, tree_cpu
from bench.simhost import WORKOS_KEY

RESULTS = ROOT / "bench" / "results"
# ``syncd once`` under cProfile timed by the process's CPU clock: wall time would count the waits for the
# server (psycopg's ``wait``) as the client's own cost.
_CPROFILE = """
import cProfile, runpy, sys, time
out = sys.argv.pop(1)
sys.argv[1:] = ["once"]
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    runpy.run_module("syncd", run_name="__main__")
finally:
    profile.disable()
    profile.dump_stats(out)
"""
_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track_planning": "on",
    "pg_stat_statements.max": "1000",
}
_STATEMENTS = """
SELECT calls, rows, total_exec_time, total_plan_time, wal_records, wal_bytes, local_blks_written, query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time + total_plan_time DESC
"""


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _with_statements(server: Any) -> None:
    """Load pg_stat_statements on ``server`` (restarted)."""
    with (server.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("\n# bench.pgprofile\n")
        for key, value in _SETTINGS.items():
            conf.write(f"{key} = '{value}'\n")
    server.restart()


def _fresh_database(server: Any) -> str:
    import psycopg

    url: str = server.create_database()
    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
    return url


# calls, rows, exec ms, plan ms, WAL records, WAL bytes, local blocks written, query
Statement = tuple[int, int, float, float, int, int, int, str]


def _statements(url: str, top: int) -> list[Statement]:
    import psycopg

    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        rows = conn.execute(_STATEMENTS).fetchall()
    return [(int(c), int(r), float(e), float(p), int(wr), int(wb), int(lw), " ".join(str(q).split()))
            for c, r, e, p, wr, wb, lw, q in rows][:top]


def _print_statements(name: str, rows: Sequence[Statement], width: int) -> None:
    total = sum(row[2] + row[3] for row in rows)
    wal = sum(row[5] for row in rows)
    print(f"  {name}: server statements by time (top {len(rows)}, {total:,.0f} ms exec+plan, "
          f"{wal / 1e6:,.1f} MB WAL)")
    print(f"  {'calls':>7} {'rows':>8} {'exec ms':>9} {'plan ms':>8} {'WAL recs':>9} {'WAL kB':>8} {'local':>6}  query")
    for calls, nrows, exec_ms, plan_ms, wal_records, wal_bytes, local, query in rows:
        print(f"  {calls:>7,} {nrows:>8,} {exec_ms:>9.1f} {plan_ms:>8.1f} {wal_records:>9,} {wal_bytes / 1e3:>8,.0f} "
              f"{local:>6,}  {query[:width]}")


def _run(command: list[str], url: str, sim: SimHost, postmaster: int, timeout: float) -> tuple[float, float, float]:
    workdir = Path(tempfile.mkdtemp(prefix="pgprofile-"))
    env = base_env(DATABASE_URL=url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.workos, SYNCD_SOURCES="workos",
                   SYNCD_HTTP_PORT="0", LOG_LEVEL="WARNING")
    try:
        before = tree_cpu(postmaster)
        result = checked(measure(command, env=env, cwd=workdir, timeout=timeout), command[2])
        return result.wall, result.cpu, tree_cpu(postmaster) - before
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from tests.pgserver import PostgresServer, postgres_unavailable_reason

    parser = argparse.ArgumentParser(prog="python -m bench.pgprofile", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--width", type=int, default=150, help="characters of each statement shown")
    parser.add_argument("--cprofile", action="store_true", help="also one syncd once under cProfile (CPU time)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    reason = postgres_unavailable_reason()
    if reason is not None:
        print(f"pgprofile: {reason}", file=sys.stderr)
        return 2
    syncd = [PYTHON, "-m", "syncd", "once"]
    with PostgresServer() as server, SimHost(workos_events=args.events) as sim:
        _with_statements(server)
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        for round_ in range(args.rounds):
            for name in ("syncd", "floor"):
                url = _fresh_database(server)
                floor = [PYTHON, "-m", "bench.contenders.floor", "--url", sim.workos, "--key", WORKOS_KEY,
                         "--database", url]
                load = os.getloadavg()[0]
                wall, cpu, server_cpu = _run(syncd if name == "syncd" else floor, url, sim, postmaster, args.timeout)
                print(f"round {round_ + 1} {name}: wall {wall:.2f} s, own CPU {cpu:.2f} s, "
                      f"server CPU {server_cpu:.2f} s, load {load:.1f}")
                _print_statements(name, _statements(url, args.top), args.width)
        if args.cprofile:
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / "pgprofile-syncd.prof"
            url = _fresh_database(server)
            wall, cpu, server_cpu = _run([PYTHON, "-c", _CPROFILE, str(out)], url, sim, postmaster, args.timeout)
            print(f"cProfile syncd: wall {wall:.2f} s, own CPU {cpu:.2f} s, server CPU {server_cpu:.2f} s -> {out}")
            for order in ("tottime", "cumulative"):
                text = io.StringIO()
                pstats.Stats(str(out), stream=text).sort_stats(order).print_stats(args.top)
                print(text.getvalue().split("\n", 6)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
