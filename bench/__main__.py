"""``python -m bench [--quick] [--only A,B,C,D,E,F,G,T] [--profile]``: run the scenarios, print PASS/FAIL, write
``bench/results/latest.md`` (and ``latest.json``). Exit 0 when every target passes, 1 otherwise."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.harness import PYTHON, ROOT, SimHost, base_env, measure
from bench.manysources import scenario_g
from bench.report import render, verdicts
from bench.runqueue import scenario_f
from bench.scenarios import Config, Sample, scenario_a, scenario_b, scenario_c, scenario_d, scenario_e
from bench.simhost import WORKOS_KEY
from bench.tracing import scenario_t

RESULTS = ROOT / "bench" / "results"
SCENARIOS = {"A": scenario_a, "B": scenario_b, "C": scenario_c, "D": scenario_d, "E": scenario_e, "F": scenario_f,
             "G": scenario_g, "T": scenario_t}


def progress(text: str) -> None:
    print(text, flush=True)


def profile(config: Config) -> None:
    """``syncd once`` on scenario A's stream under pyinstrument → bench/results/profile-syncd.{txt,html}."""
    events = min(config.a_events, 20_000)  # the profiler's overhead makes a full run needlessly long
    progress(f"profile: syncd once on {events:,} events under pyinstrument")
    workdir = RESULTS / "profile-work"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "syncd.db").unlink(missing_ok=True)
    with SimHost(workos_events=events) as sim:
        env = base_env(
            DATABASE_URL=f"sqlite:///{workdir / 'syncd.db'}",
            WORKOS_API_KEY=WORKOS_KEY,
            WORKOS_BASE_URL=sim.workos,
            SYNCD_SOURCES="workos",
            SYNCD_HTTP_PORT="0",
            LOG_LEVEL="WARNING",
        )
        for renderer, suffix in (("text", "txt"), ("html", "html")):
            (workdir / "syncd.db").unlink(missing_ok=True)
            out = RESULTS / f"profile-syncd.{suffix}"
            result = measure(
                [PYTHON, "-m", "pyinstrument", "-r", renderer, "-o", str(out), "-m", "syncd", "once"],
                env=env,
                cwd=workdir,
                timeout=config.timeout,
            )
            progress(f"  {out} (exit {result.returncode})")


def _plain(value: Any) -> Any:
    if isinstance(value, Sample):
        return {
            **dataclasses.asdict(value),
            "events_per_second": value.events_per_second,
            "cpu_per_10k": value.cpu_per_10k,
        }
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller streams (about a tenth)")
    parser.add_argument("--only", default="A,B,C,D,E,F,G,T", help="comma list of scenarios (default all)")
    parser.add_argument("--runs", type=int, default=None, help="alternated runs per contender (default 3)")
    parser.add_argument("--events", type=int, default=None,
                        help="events of scenarios A, D and T and of F's catch-up (development)")
    parser.add_argument("--profile", action="store_true", help="also profile syncd with pyinstrument")
    parser.add_argument("--runs-sizes", default=None, help="F: comma list of run counts on one replica")
    parser.add_argument("--replica-runs", type=int, default=None, help="F: runs for 1 vs 3 replicas")
    parser.add_argument("--baseline", default=None, help="F: git revision of the code before the run queue")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config.full()
    if args.runs is not None:
        config = dataclasses.replace(config, runs=args.runs, d_runs=args.runs)
    if args.events is not None:
        config = dataclasses.replace(config, a_events=args.events, d_events=args.events,
                                     f_catchup_events=args.events)
    if args.runs_sizes:
        config = dataclasses.replace(config, f_runs=tuple(int(n) for n in args.runs_sizes.split(",") if n.strip()))
    if args.replica_runs is not None:
        config = dataclasses.replace(config, f_replica_runs=args.replica_runs)
    if args.baseline:
        config = dataclasses.replace(config, f_baseline=args.baseline)
    wanted = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started, clock, load_before = datetime.now(UTC), time.monotonic(), os.getloadavg()[0]
    results: dict[str, Any] = {}
    for name in wanted:
        results[name] = SCENARIOS[name](config, progress)
    if args.profile:
        profile(config)
    text = render(
        results,
        mode="quick" if args.quick else "full",
        started=started,
        load=(load_before, os.getloadavg()[0]),
    )
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / "latest.json").write_text(json.dumps(_plain(results), indent=2))
    print()
    print(text)
    progress(f"written {RESULTS / 'latest.md'} in {(time.monotonic() - clock) / 60:.1f} min")
    return 0 if all(v.ok for v in verdicts(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
