"""Scenario D as an A/B: ``python -m bench.pgab --baseline REV [--events 20000] [--rounds 5] [--env K=V]``.

Three contenders on one throwaway PostgreSQL server, each run on a fresh database, in an order rotated
between rounds: ``syncd once`` from ``REV``'s tree (``git archive``; the repository is not touched),
``syncd once`` from this checkout, and the floor. Prints each run's wall time, own CPU, the server's CPU
and the load average as it started, then the medians and each syncd's share of the floor in wall time
and in CPU (own + server). ``--env`` adds variables to "after" only (to try a setting). How the levers of
issue 26 were measured (bench/README.md, "D: PostgreSQL catch-up").
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.harness import ROOT, SimHost
from bench.runqueue import compiled, export
from bench.scenarios import Contender, Sample, floor, syncd_once


def main(argv: list[str] | None = None) -> int:
    from tests.pgserver import PostgresServer

    parser = argparse.ArgumentParser(prog="python -m bench.pgab", description=__doc__)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--env", action="append", default=[], help="K=V for the 'after' syncd only")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    scratch = Path(tempfile.mkdtemp(prefix="bench-pgab-"))
    rows: dict[str, list[tuple[Sample, float, float]]] = {}
    try:
        tree = export(args.baseline, scratch)
        compiled(ROOT)
        with PostgresServer() as server, SimHost(workos_events=args.events) as sim:
            from bench.harness import tree_cpu

            postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
            contenders: dict[str, Callable[[], Contender]] = {
                "before": lambda: syncd_once(server.create_database(), timeout=args.timeout, name="before",
                                             PYTHONPATH=str(tree)),
                "after": lambda: syncd_once(server.create_database(), timeout=args.timeout, name="after", **extra),
            }
            if not args.no_floor:
                contenders["floor"] = lambda: floor(server.create_database(), timeout=args.timeout)
            names = list(contenders)
            for round_ in range(args.rounds):
                for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                    contender = contenders[name]()
                    workdir = Path(tempfile.mkdtemp(prefix="pgab-", dir=scratch))
                    load = os.getloadavg()[0]
                    before = tree_cpu(postmaster)
                    sample = contender(sim, workdir)
                    server_cpu = tree_cpu(postmaster) - before
                    rows.setdefault(name, []).append((sample, server_cpu, load))
                    print(f"round {round_ + 1} {name:>6}: {sample.events:,} events, wall {sample.wall:6.2f} s, "
                          f"own CPU {sample.cpu:5.2f} s, server CPU {server_cpu:5.2f} s, load {load:4.1f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _summary(rows)
    return 0


def _summary(rows: dict[str, list[tuple[Sample, float, float]]]) -> None:
    med = {name: (statistics.median(s.wall for s, _, _ in runs), statistics.median(s.cpu for s, _, _ in runs),
                  statistics.median(c for _, c, _ in runs)) for name, runs in rows.items()}
    loads = [load for runs in rows.values() for _, _, load in runs]
    print(f"medians (load {min(loads):.1f}-{max(loads):.1f}):")
    for name, (wall, cpu, server) in med.items():
        print(f"  {name:>6}: wall {wall:6.2f} s, own CPU {cpu:5.2f} s, server CPU {server:5.2f} s")
    if "floor" in med:
        f_wall, f_cpu, f_server = med["floor"]
        for name in ("before", "after"):
            wall, cpu, server = med[name]
            share = (f_cpu + f_server) / (cpu + server)
            print(f"  {name} / floor: {f_wall / wall:.0%} in wall time, {share:.0%} in CPU (own + server)")


if __name__ == "__main__":
    sys.exit(main())
