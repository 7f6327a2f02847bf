"""Scenario C's driver: catch every configured source up, then time N idle ticks in this process.

The App is built exactly as ``syncd run`` builds it (settings from the environment); each tick is what
the scheduler calls (``App.tick`` per source). Between ticks — outside the timed part — the simulators'
request counter is read, so every single tick's requests are counted at the provider.
``python -m bench.contenders.idle --ticks N --stats URL`` (sources from WORKOS_*/GITHUB_* variables).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request

from bench.contenders.common import report


def counts(stats_url: str) -> dict[str, int]:
    with urllib.request.urlopen(stats_url, timeout=10) as response:  # loopback only
        raw: dict[str, int | None] = json.loads(response.read())
    return {name: value for name, value in raw.items() if value is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.idle")
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--stats", required=True)
    args = parser.parse_args(argv)
    from syncd.ops.app import App
    from syncd.settings import Settings

    app = App.build(Settings.from_env(dict(os.environ)))
    try:
        for _ in range(20):  # catch up (a source pages until it is caught up; one tick normally does it)
            if all(r.ok and r.caught_up for r in app.tick_all()):
                break
        else:
            raise SystemExit("idle: the sources did not catch up")
        per_source: dict[str, list[int]] = {}
        cpu_ms: list[float] = []
        wall_ms: list[float] = []
        before = counts(args.stats)
        source_cpu_ms: dict[str, list[float]] = {c.key: [] for c in app.connectors}
        for _ in range(args.ticks):
            cpu, wall = time.process_time(), time.perf_counter()
            results = []
            for connector in app.connectors:  # what the scheduler runs: one App.tick per source
                started = time.process_time()
                results.append(app.tick(connector))
                source_cpu_ms[connector.key].append((time.process_time() - started) * 1000)
            cpu_ms.append((time.process_time() - cpu) * 1000)
            wall_ms.append((time.perf_counter() - wall) * 1000)
            if not all(r.ok for r in results):
                raise SystemExit(f"idle: a tick failed: {[r.error for r in results if not r.ok]}")
            after = counts(args.stats)
            for name, value in after.items():
                per_source.setdefault(name, []).append(value - before.get(name, 0))
            before = after
    finally:
        app.close()
    report(
        ticks=args.ticks,
        sources=[c.key for c in app.connectors],
        requests={
            name: {"min": min(v), "max": max(v), "mean": statistics.fmean(v)}
            for name, v in per_source.items()
        },
        cpu_ms={"median": statistics.median(cpu_ms), "max": max(cpu_ms), "mean": statistics.fmean(cpu_ms)},
        source_cpu_ms={
            key: {"median": statistics.median(v), "max": max(v)} for key, v in source_cpu_ms.items()
        },
        wall_ms={"median": statistics.median(wall_ms), "max": max(wall_ms)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
