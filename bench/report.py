"""Results → the Markdown table (``bench/results/latest.md``) and PASS/FAIL against issue 8's targets."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import manysources, runqueue, tracing
from bench.harness import Spread
from bench.scenarios import Sample

PACKAGES = ("syncd", "httpx", "sqlalchemy", "psycopg", "dlt", "pyinstrument")


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    ok: bool

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.target}: {self.measured}"


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "?"
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join(versions),
    }


def median_eps(samples: list[Sample]) -> float:
    return Spread.of([s.events_per_second for s in samples]).median


def table(samples: dict[str, list[Sample]]) -> list[str]:
    rows = [
        "| contender | events | events/s | CPU s per 10k events | peak RSS MB | wall s | simulator CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in samples.items():
        rows.append(
            f"| {name} | {runs[0].events:,} | {Spread.of([s.events_per_second for s in runs]).text()} | "
            f"{Spread.of([s.cpu_per_10k for s in runs]).text(2)} | "
            f"{Spread.of([s.peak_rss_mb for s in runs]).text()} | "
            f"{Spread.of([s.wall for s in runs]).text(1)} | "
            f"{Spread.of([s.simulator_cpu for s in runs]).text(1)} |"
        )
    return rows


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    a = results.get("A")
    if a:
        s = a["samples"]
        syncd, dlt, floor, sim = (median_eps(s[n]) for n in ("syncd", "dlt", "floor", "simulator alone"))
        out.append(
            Verdict(
                "A: syncd ≥ 2x dlt events/s",
                f"{syncd:,.0f} vs {dlt:,.0f} = {syncd / dlt:.2f}x",
                syncd >= 2 * dlt,
            )
        )
        out.append(
            Verdict(
                "A: syncd ≥ 50% of the floor",
                f"{syncd:,.0f} vs {floor:,.0f} = {syncd / floor:.0%}",
                syncd >= 0.5 * floor,
            )
        )
        out.append(
            Verdict(
                "A: simulator alone ≥ 3x syncd (else the numbers measure the simulator)",
                f"{sim:,.0f} vs {syncd:,.0f} = {sim / syncd:.1f}x",
                sim >= 3 * syncd,
            )
        )
    b = results.get("B")
    if b:
        small, large = (b["samples"][f"syncd {n:,}"][0].peak_rss_mb for n in b["sizes"])
        out.append(
            Verdict(
                f"B: peak RSS at {b['sizes'][1]:,} ≤ 1.2x at {b['sizes'][0]:,}",
                f"{large:.0f} MB vs {small:.0f} MB = {large / small:.2f}x",
                large <= 1.2 * small,
            )
        )
        out.append(Verdict(f"B: peak RSS at {b['sizes'][1]:,} ≤ 150 MB", f"{large:.0f} MB", large <= 150))
    c = results.get("C")
    if c:
        requests = c["requests"]
        exact = all(r["min"] == 1 and r["max"] == 1 for r in requests.values())
        shown = ", ".join(f"{name} {r['min']}-{r['max']}" for name, r in requests.items())
        out.append(Verdict("C: idle tick = exactly 1 request per source", shown, exact and bool(requests)))
        # A tick is one source's sync (App.tick, one syncd_ticks row); the total of all sources is shown too.
        per_source = c["source_cpu_ms"]
        shown = ", ".join(
            f"{name} median {v['median']:.1f} ms (max {v['max']:.1f})" for name, v in per_source.items()
        )
        out.append(
            Verdict(
                "C: idle tick <= 20 ms CPU (median per source tick)",
                f"{shown}; all sources together median {c['cpu_ms']['median']:.1f} ms",
                all(v["median"] <= 20 for v in per_source.values()),
            )
        )
    d = results.get("D")
    if d and "skipped" not in d:
        syncd, floor = (median_eps(d["samples"][n]) for n in ("syncd on Postgres", "floor on Postgres"))
        server = {n: Spread.of(v).median for n, v in d["server_cpu"].items() if v}
        own = {n: Spread.of([s.cpu for s in runs]).median for n, runs in d["samples"].items()}
        cpu = {n: own[n] + server.get(n, 0.0) for n in own}  # per run, own + server
        load = d.get("load") or [0.0]
        out.append(
            Verdict(
                "D: syncd on PostgreSQL ≥ 60% of the PostgreSQL floor (events/s, whole process)",
                f"{syncd:,.0f} vs {floor:,.0f} = {syncd / floor:.0%}; server CPU s per run "
                f"{server.get('syncd on Postgres', 0):.1f} vs {server.get('floor on Postgres', 0):.1f}; "
                f"own + server CPU s {cpu['syncd on Postgres']:.1f} vs {cpu['floor on Postgres']:.1f} = "
                f"{cpu['floor on Postgres'] / cpu['syncd on Postgres']:.0%} in CPU; "
                f"load {min(load):.1f}-{max(load):.1f}",
                syncd >= D_FLOOR_SHARE * floor,
            )
        )
    f = results.get("F")
    if f:
        out += [Verdict(*target) for target in runqueue.targets(f)]
    if results.get("G"):
        out += [Verdict(*target) for target in manysources.targets(results["G"])]
    if results.get("T"):
        out += [Verdict(*target) for target in tracing.targets(results["T"])]
    return out


#: Issue 26: PostgreSQL catch-up at this share of the PostgreSQL floor's events/s.
D_FLOOR_SHARE = 0.6


def postgres_table(d: dict[str, Any]) -> list[str]:
    """D's runs: the contender's own CPU next to the PostgreSQL server's CPU during each of its runs."""
    rows = [
        "| contender | events | events/s | wall s | CPU s | server CPU s | CPU s per 10k (own + server) | "
        "peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in d["samples"].items():
        server = d["server_cpu"].get(name) or [0.0] * len(runs)
        both = [(s.cpu + c) / s.events * 10_000 for s, c in zip(runs, server, strict=True)]
        rows.append(
            f"| {name} | {runs[0].events:,} | {Spread.of([s.events_per_second for s in runs]).text()} | "
            f"{Spread.of([s.wall for s in runs]).text(1)} | {Spread.of([s.cpu for s in runs]).text(1)} | "
            f"{Spread.of(server).text(1)} | {Spread.of(both).text(2)} | "
            f"{Spread.of([s.peak_rss_mb for s in runs]).text()} |"
        )
    load = d.get("load") or []
    if load:
        rows += ["", f"1-minute load average as each run started: {', '.join(f'{x:.1f}' for x in load)}"]
    return rows


def render(results: dict[str, Any], *, mode: str, started: datetime, load: tuple[float, float]) -> str:
    info = machine()
    lines = [
        f"# syncd benchmark results ({mode})",
        "",
        f"Run {started.strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{(datetime.now(UTC) - started).total_seconds() / 60:.1f} min. "
        f"Load average (1 min) before/after: {load[0]:.2f} / {load[1]:.2f} — on a shared machine, "
        "wall-clock rates move with the load; CPU per event does not.",
        "",
        f"- Machine: {info['cpu']}, {info['memory']}, {info['os']}",
        f"- Python {info['python']}, SQLite {info['sqlite']}; {info['packages']}",
        "",
    ]
    a = results.get("A")
    if a:
        lines += [
            f"## A — catch-up: {a['events_generated']:,} events generated, {a['events_served']:,} of the "
            "mirrored types served, 100 per page; median (min-max) of alternated runs",
            "",
            *table(a["samples"]),
            "",
        ]
    b = results.get("B")
    if b:
        lines += ["## B — syncd's peak RSS under a large backlog", "", *table(b["samples"]), ""]
    c = results.get("C")
    if c:
        reqs = "; ".join(
            f"{name}: min {r['min']}, max {r['max']}, mean {r['mean']:.2f}"
            for name, r in c["requests"].items()
        )
        lines += [
            f"## C — idle cost: {c['ticks']} ticks with nothing new ({', '.join(c['sources'])})",
            "",
            f"- requests per tick per source (counted at the simulators): {reqs}",
            "- CPU per source tick: "
            + "; ".join(
                f"{k} median {v['median']:.1f} ms, max {v['max']:.1f} ms"
                for k, v in c["source_cpu_ms"].items()
            ),
            f"- CPU of all sources' ticks together: median {c['cpu_ms']['median']:.1f} ms, mean "
            f"{c['cpu_ms']['mean']:.1f} ms, max {c['cpu_ms']['max']:.1f} ms; wall median "
            f"{c['wall_ms']['median']:.1f} ms",
            f"- peak RSS of the ticking process: {c['peak_rss_mb']:.0f} MB",
            "",
        ]
    d = results.get("D")
    if d and "skipped" not in d:
        lines += [
            f"## D — PostgreSQL {d['postgres']} (throwaway server, fsync off), same stream as A's size",
            "",
            "Alternated runs, each on a fresh database; median (min-max). The server's CPU (the postmaster and "
            "its backends, from /proc) is not in the contender's own CPU.",
            "",
            *postgres_table(d),
            "",
        ]
    elif d:
        lines += ["## D — PostgreSQL", "", f"skipped: {d['skipped']}", ""]
    e = results.get("E")
    if e and "skipped" not in e:
        without, ahead = (median_eps(e["samples"][n]) for n in ("syncd, no prefetch", "syncd, 20 pages ahead"))
        lines += [
            f"## E — a provider taking {e['latency'] * 1000:.0f} ms per page, PostgreSQL",
            "",
            *table(e["samples"]),
            "",
            f"Prefetching: {ahead / without:.2f}x; the provider's own bound (100 events per round trip): "
            f"{e['bound']:,.0f} events/s, of which {ahead / e['bound']:.0%} reached.",
            "",
        ]
    elif e:
        lines += ["## E — slow provider", "", f"skipped: {e['skipped']}", ""]
    if results.get("F"):
        lines += runqueue.lines(results["F"], table)
    if results.get("G"):
        lines += manysources.lines(results["G"])
    if results.get("T"):
        lines += tracing.lines(results["T"], table)
    lines += ["## Targets", "", "```", *(v.line() for v in verdicts(results)), "```", ""]
    return "\n".join(lines)
