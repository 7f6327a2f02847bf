"""T — issue 21: what tracing costs on scenario A's catch-up (``syncd once``, built-in mirrors, SQLite),
with spans exported over OTLP/HTTP to a receiver on loopback (``bench.otlpsink``), against tracing off.

Targets: tracing on costs at most 1.5x the CPU of tracing off (medians of alternated runs), and no span is
lost at the default queue size: every event's ``event.process`` root arrives (one per mirrored event) and
``syncd once`` reports no dropped span. Also reported: spans and traces received, spans per event.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, BenchError, SimHost, base_env
from bench.otlpsink import OTLPSink
from bench.scenarios import _ONCE_LINE, Config, Contender, Sample, _timed, alternate, consistent
from bench.simhost import WORKOS_KEY

#: The issue's bound: tracing on at most this many times tracing off's CPU.
TARGET_RATIO = 1.5
ON, OFF = "tracing on (OTLP, loopback)", "tracing off"
#: ``syncd once``'s warning when spans were lost (``syncd.telemetry``).
_LOST = re.compile(r"(\d+) span\(s\) dropped")


def once(name: str, *, timeout: float, **extra_env: str) -> Contender:
    """Scenario A's ``syncd once`` (built-in mirrors, fresh SQLite), with its user CPU and lost spans."""

    def run(sim: SimHost, workdir: Path) -> Sample:
        env = base_env(DATABASE_URL=f"sqlite:///{workdir / 'syncd.db'}", WORKOS_API_KEY=WORKOS_KEY,
                       WORKOS_BASE_URL=sim.workos, SYNCD_SOURCES="workos", SYNCD_HTTP_PORT="0",
                       LOG_LEVEL="WARNING", **extra_env)
        result, sim_cpu = _timed(name, sim, [PYTHON, "-m", "syncd", "once"], env, workdir, timeout)
        found = _ONCE_LINE.search(result.stdout)
        if found is None:
            raise BenchError(f"{name}: unexpected output: {result.stdout[-500:]}")
        events, new, ok, failed = map(int, found.groups())
        if failed or new != events or ok != events:
            raise BenchError(f"{name}: {events} events, {new} new, {ok} runs ok, {failed} failed")
        lost = sum(int(n) for n in _LOST.findall(result.stderr))
        return Sample(name, events, result.wall, result.cpu, result.peak_rss_mb, sim_cpu,
                      extra={"user": result.user, "dropped": lost})

    return run


def scenario_t(config: Config, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"T: catch-up of {config.a_events:,} events, tracing on vs off, {config.runs} alternated runs")
    load_before = os.getloadavg()[0]
    received: list[dict[str, Any]] = []
    with SimHost(workos_events=config.a_events) as sim, OTLPSink() as sink:
        traced = once(ON, timeout=config.timeout, OTEL_EXPORTER_OTLP_ENDPOINT=sink.url)

        def on(simhost: SimHost, workdir: Path) -> Sample:
            sink.take()
            sample = traced(simhost, workdir)
            received.append(sink.take())  # `once` flushed every span before it exited
            return sample

        samples = alternate({OFF: once(OFF, timeout=config.timeout), ON: on}, sim, config.runs,
                            progress)
    events = consistent(samples)
    return {"events": events, "samples": samples, "received": received,
            "load": (load_before, os.getloadavg()[0])}


def ratio(t: dict[str, Any], what: str = "user") -> float:
    """Median CPU of tracing on over tracing off: ``user`` seconds, or ``cpu`` (user + system)."""
    on, off = (statistics.median(s.extra["user"] if what == "user" else s.cpu for s in t["samples"][name])
               for name in (ON, OFF))
    return float(on / off) if off else float("inf")


def targets(t: dict[str, Any]) -> list[tuple[str, str, bool]]:
    events = t["events"]
    roots = [r["by_name"].get("event.process", 0) for r in t["received"]]
    dropped = [s.extra.get("dropped", 0) for s in t["samples"][ON]]
    return [
        (f"T: tracing on <= {TARGET_RATIO}x the CPU of tracing off (catch-up, OTLP to loopback)",
         f"{ratio(t):.2f}x", ratio(t) <= TARGET_RATIO),
        ("T: no span lost at the default queue size (an event.process per event, none dropped)",
         f"event.process received per run {roots} for {events:,} events; dropped {dropped}",
         all(n == events for n in roots) and not any(dropped)),
    ]


def lines(t: dict[str, Any], table: Callable[[dict[str, list[Sample]]], list[str]]) -> list[str]:
    received = t["received"]
    spans = statistics.median(r["spans"] for r in received) if received else 0
    traces = statistics.median(r["traces"] for r in received) if received else 0
    return [
        f"## T — what tracing costs: catch-up of {t['events']:,} events, SQLite, OTLP/HTTP to loopback",
        "",
        *table(t["samples"]),
        "",
        f"User CPU tracing on / off: {ratio(t):.2f}x (user + system: {ratio(t, 'cpu'):.2f}x); user s per run: "
        + ", ".join(f"{name} {sorted(round(s.extra['user'], 1) for s in t['samples'][name])}" for name in (OFF, ON))
        + f". Received per traced run (median): "
        f"{spans:,.0f} spans in {traces:,.0f} traces ({spans / t['events']:.2f} spans per event). "
        f"Load average (1 min) before/after: {t['load'][0]:.2f} / {t['load'][1]:.2f}.",
        "",
    ]
