"""Scenario F (issue 20): workflow runs off the ingest path.

The WorkOS stream holds N ``user.created`` events and nothing else; the workflow
``bench.fanout_workflow`` makes three parallel calls per event to a sink answering each after 250 ms
(``bench.latencysink``, served by ``bench.simhost``). "One run at a time" is N x 0.25 s: a lower bound
on strictly sequential runs. Measured:

- **single**: ``syncd once`` on SQLite with default settings, for each size in ``Config.f_runs``: process
  start to exit, after which every run must have succeeded (read from ``syncd_runs``) and the sink must
  have seen exactly 3 calls per run, each with its own ``Idempotency-Key``. If the code knows
  ``SYNCD_WORKERS``, the smallest size once more with ``SYNCD_WORKERS=1``.
- **replicas**: on a throwaway PostgreSQL, 1 and then 3 ``syncd run`` processes (``SYNCD_WORKERS=4``,
  ``SYNC_INTERVAL_SECONDS=1``). Once every replica answers on its health port and a first tick is
  recorded, ``Config.f_replica_runs`` sign-ups arrive at once; timed from their arrival until every run
  has succeeded, so process start-up is not counted (it would weigh on 3 processes sharing 2 cores).
- **catch-up**: scenario A's ``syncd once`` (built-in mirrors) on ``Config.f_catchup_events`` events,
  alternated between this tree and ``Config.f_baseline`` (exported with ``git archive``, run by the
  same interpreter with ``PYTHONPATH`` on the export; checked to import from there).

Whether runs execute inline in the tick (before issue 20) or by workers, the measure is the same:
``syncd_runs`` read until every run of the workflow has succeeded.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import statistics
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

from bench.fanout_names import NAME as WORKFLOW
from bench.fanout_names import TARGETS
from bench.harness import PYTHON, ROOT, BenchError, SimHost, base_env, checked, measure, tree_cpu
from bench.scenarios import Config, Sample, alternate
from bench.simhost import WORKOS_KEY

LATENCY = 0.25  # seconds the sink takes per call
#: The code before the run queue: main just before the queue was merged (44062cc), runs in the page
#: transaction and the same connectors as today, so today's installed entry points (the Stripe connector)
#: import from its export too. 8991354, where the work began, lacks connectors.stripe: it no longer runs here.
BASELINE = "44062ccdd30f16c9e3c659531e36e3405045603a"
SPEEDUP, REPLICA_RATIO, CATCHUP_FLOOR = 10.0, 0.6, 0.9  # the targets
_SUCCEEDED = f"SELECT count(*) FROM syncd_runs WHERE workflow = '{WORKFLOW}' AND status = 'succeeded'"
Progress = Callable[[str], None]


def _env(database_url: str, sim: SimHost, **extra: str) -> dict[str, str]:
    return base_env(DATABASE_URL=database_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.workos,
                    SYNCD_SOURCES="workos", SYNCD_WORKFLOWS="bench.fanout_workflow",
                    SYNCD_INTEGRATION_SINK_URL=sim.sink, LOG_LEVEL="WARNING", **extra)


def _count(database_url: str, query: str = _SUCCEEDED) -> int:
    """One number from the database, read the way an operator would (SQLite: read-only; PostgreSQL)."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(f"file:{database_url[len('sqlite:///'):]}?mode=ro", uri=True, timeout=30) as conn:
            return int(conn.execute(query).fetchone()[0])
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def _outcome(runs: int, wall: float, succeeded: int, sim: SimHost) -> dict[str, Any]:
    sink = sim.requests()["sink"]
    calls = len(TARGETS) * runs
    return {"runs": runs, "wall": round(wall, 2), "succeeded": succeeded, "sink": sink,
            "complete": succeeded == runs and sink["calls"] == sink["keys"] == calls}


def workers_supported() -> bool:
    """Whether this tree's settings read ``SYNCD_WORKERS`` (issue 20's worker pool)."""
    return "SYNCD_WORKERS" in (ROOT / "syncd" / "settings.py").read_text()


def single(runs: int, timeout: float, progress: Progress, **extra: str) -> dict[str, Any]:
    """``syncd once`` over ``runs`` sign-ups into a fresh SQLite file: its wall time, then the checks."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-runqueue-"))
    try:
        with SimHost(workos_events=0, users=runs, sink_latency=LATENCY) as sim:
            url = f"sqlite:///{workdir / 'syncd.db'}"
            env = _env(url, sim, SYNCD_HTTP_PORT="0", **extra)
            result = checked(measure([PYTHON, "-m", "syncd", "once"], env=env, cwd=workdir, timeout=timeout),
                             "syncd once")
            outcome = _outcome(runs, result.wall, _count(url), sim)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    outcome.update(cpu=round(result.cpu, 2), peak_rss_mb=round(result.peak_rss_mb), settings=extra)
    progress(f"  {runs:,} runs, syncd once {extra or ''}: {outcome['wall']:.1f}s, CPU {outcome['cpu']:.1f}s, "
             f"{outcome['succeeded']:,} succeeded, sink {outcome['sink']}")
    return outcome


# ---- replicas on PostgreSQL --------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):  # loopback only
            return True
    except urllib.error.HTTPError:
        return True  # 503 before the first tick: the process is up all the same
    except OSError:
        return False


def _wait(check: Callable[[], bool], timeout: float, what: str, logs: list[Path]) -> float:
    """Poll ``check`` every 0.1 s; the moment it held (monotonic), or BenchError with the replicas' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except (sqlite3.Error, psycopg.Error):  # not migrated yet
            pass
        time.sleep(0.1)
    tails = "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-10:])
                      for log in logs)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(15))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    return codes


def cluster(database_url: str, replicas: int, runs: int, timeout: float, workdir: Path) -> dict[str, Any]:
    """``replicas`` ``syncd run`` processes on one database; ``runs`` sign-ups arrive once they are up."""
    with SimHost(workos_events=0, users=0, sink_latency=LATENCY) as sim, ExitStack() as stack:
        ports = [_free_port() for _ in range(replicas)]
        logs = [workdir / f"replica-{i + 1}.log" for i in range(replicas)]
        procs: list[subprocess.Popen[bytes]] = []
        codes: list[int | None] = []
        stack.callback(lambda: codes.extend(_stop(procs)))
        for i, (port, log) in enumerate(zip(ports, logs, strict=True)):
            env = _env(database_url, sim, SYNCD_HTTP_PORT=str(port), SYNC_INTERVAL_SECONDS="1",
                       SYNCD_WORKERS="4", SYNCD_REPLICA_ID=f"replica-{i + 1}")
            with log.open("wb") as out:
                procs.append(subprocess.Popen([PYTHON, "-m", "syncd", "run"], env=env, cwd=workdir, stdout=out,
                                              stderr=subprocess.STDOUT))
        _wait(lambda: all(_answers(p) for p in ports), 120, "every replica's health port", logs)
        _wait(lambda: _count(database_url, "SELECT count(*) FROM syncd_ticks") > 0, 120, "a first tick", logs)
        began = time.monotonic()
        sim.add_users(runs)
        done = _wait(lambda: _count(database_url) >= runs, timeout, f"{runs:,} succeeded runs", logs)
        outcome = _outcome(runs, done - began, _count(database_url), sim)
        cpu = sum(tree_cpu(proc.pid) for proc in procs)  # start-up included; read before they exit
    outcome.update(replicas=replicas, exit_codes=codes, cpu=round(cpu, 2))
    outcome["complete"] = outcome["complete"] and codes == [0] * replicas
    return outcome


def replicas(config: Config, progress: Progress) -> dict[str, Any]:
    from tests.pgserver import PostgresServer, postgres_unavailable_reason

    reason = postgres_unavailable_reason()
    if reason is not None:
        progress(f"  replicas: skipped: {reason}")
        return {"skipped": reason}
    runs = config.f_replica_runs
    timeout = 120 + runs * LATENCY * 3
    out: dict[str, Any] = {"runs": runs}
    with PostgresServer() as server:
        for count in (1, 3):
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-replicas-{count}-"))
            try:
                out[str(count)] = cluster(server.create_database(), count, runs, timeout, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            result = out[str(count)]
            progress(f"  {count} replica(s) x SYNCD_WORKERS=4, {runs:,} runs: {result['wall']:.1f}s, "
                     f"CPU {result['cpu']:.1f}s, "
                     f"{result['succeeded']:,} succeeded, sink {result['sink']}, exits {result['exit_codes']}")
    return out


# ---- catch-up A/B --------------------------------------------------------------------------------------


def export(revision: str, into: Path) -> Path:
    """The tree of ``revision`` (``git archive``), unpacked under ``into``; the repository is not touched."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision], stdout=out, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    archive.unlink()
    compiled(tree)
    env = base_env(PYTHONPATH=str(tree))
    found = subprocess.run([PYTHON, "-c", "import syncd, connectors; print(syncd.__file__, connectors.__file__)"],
                           env=env, cwd=into, capture_output=True, text=True, check=True).stdout.split()
    if not all(Path(path).is_relative_to(tree) for path in found):
        raise BenchError(f"the baseline tree is not what gets imported: {found}")
    return tree


def compiled(tree: Path) -> None:
    """Byte-compile ``tree``'s code: children run with PYTHONDONTWRITEBYTECODE, so a tree without .pyc
    files would compile every module at each start (measured: ~0.1 s of CPU a start) and lose the A/B unfairly."""
    folders = [str(tree / name) for name in ("syncd", "connectors", "migrations") if (tree / name).is_dir()]
    subprocess.run([PYTHON, "-m", "compileall", "-q", *folders], check=True, capture_output=True)


def catch_up(tree: Path | None, timeout: float, name: str) -> Callable[[SimHost, Path], Sample]:
    """``syncd once`` with the built-in mirrors (scenario A's contender), from ``tree`` or this checkout;
    the events are counted in the ledger, not parsed from the output, which issue 20 may change. Then a second
    ``syncd once`` on the same database (nothing new to fetch), measured apart as ``extra["next"]`` (wall, CPU):
    work a tree leaves to the next tick shows there (issue 22's object index is built by it)."""

    def run(sim: SimHost, workdir: Path) -> Sample:
        url = f"sqlite:///{workdir / 'syncd.db'}"
        env = base_env(DATABASE_URL=url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.workos,
                       SYNCD_SOURCES="workos", SYNCD_HTTP_PORT="0", LOG_LEVEL="WARNING",
                       **({"PYTHONPATH": str(tree)} if tree else {}))
        before = sim.cpu()
        result = checked(measure([PYTHON, "-m", "syncd", "once"], env=env, cwd=workdir, timeout=timeout), name)
        events = _count(url, "SELECT count(*) FROM syncd_events")
        after = sim.cpu()
        following = checked(measure([PYTHON, "-m", "syncd", "once"], env=env, cwd=workdir, timeout=timeout), name)
        return Sample(name, events, result.wall, result.cpu, result.peak_rss_mb, after - before,
                      extra={"next": (following.wall, following.cpu)})

    return run


def catchup(config: Config, progress: Progress) -> dict[str, Any]:
    revision = config.f_baseline or BASELINE
    rounds = max(config.runs, 5)  # two contenders this close need more rounds than A's three
    scratch = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    try:
        tree = export(revision, scratch)
        compiled(ROOT)
        with SimHost(workos_events=config.f_catchup_events) as sim:
            samples = alternate({"before": catch_up(tree, config.timeout, "before"),
                                 "after": catch_up(None, config.timeout, "after")}, sim, rounds, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"baseline": revision, "events": config.f_catchup_events, "samples": samples}


def scenario_f(config: Config, progress: Progress) -> dict[str, Any]:
    progress(f"F: workflow runs, 3 parallel calls of {LATENCY * 1000:.0f} ms each: {config.f_runs} runs on one "
             f"replica; {config.f_replica_runs:,} on 1 vs 3 PostgreSQL replicas; catch-up A/B")
    results: dict[str, Any] = {"latency": LATENCY, "single": [], "workers_1": None}
    for runs in config.f_runs:
        results["single"].append(single(runs, 120 + runs * LATENCY * 3, progress))
    if workers_supported():
        smallest = min(config.f_runs)
        results["workers_1"] = single(smallest, 120 + smallest * LATENCY * 3, progress, SYNCD_WORKERS="1")
    results["replicas"] = replicas(config, progress)
    results["catchup"] = catchup(config, progress)
    return results


# ---- report --------------------------------------------------------------------------------------------


def _median(samples: list[Sample]) -> float:
    return statistics.median(s.events_per_second for s in samples)


def targets(f: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, ok) for each of issue 20's targets that ``f`` measured."""
    out: list[tuple[str, str, bool]] = []
    for one in f["single"]:
        bound = one["runs"] * f["latency"]
        shown = (f"{one['wall']:.1f} s vs {bound:,.0f} s one at a time = {bound / one['wall']:.1f}x"
                 + ("" if one["complete"] else f"; INCOMPLETE: {one['succeeded']:,} succeeded, sink {one['sink']}"))
        out.append((f"F: {one['runs']:,} runs on one replica ≥ {SPEEDUP:.0f}x faster than one at a time",
                    shown, one["complete"] and bound / one["wall"] >= SPEEDUP))
    cluster = f.get("replicas") or {}
    if "1" in cluster and "3" in cluster:
        one, three = cluster["1"], cluster["3"]
        ratio = three["wall"] / one["wall"]
        shown = f"{three['wall']:.1f} s vs {one['wall']:.1f} s = {ratio:.2f}x"
        complete = one["complete"] and three["complete"]
        out.append((f"F: 3 PostgreSQL replicas (SYNCD_WORKERS=4) ≤ {REPLICA_RATIO}x the time of 1, "
                     f"{cluster['runs']:,} runs", shown + ("" if complete else "; INCOMPLETE"),
                     complete and ratio <= REPLICA_RATIO))
    catchup = f.get("catchup")
    if catchup:
        before, after = (_median(catchup["samples"][n]) for n in ("before", "after"))
        cpu_before, cpu_after = (statistics.median(s.cpu_per_10k for s in catchup["samples"][n])
                                 for n in ("before", "after"))
        out.append((f"F: catch-up ≥ {CATCHUP_FLOOR:.0%} of the events/s before ({catchup['baseline'][:9]})",
                    f"{after:,.0f} vs {before:,.0f} = {after / before:.0%} (CPU s per 10k events: "
                    f"{cpu_after:.2f} vs {cpu_before:.2f})", after >= CATCHUP_FLOOR * before))
    return out


def lines(f: dict[str, Any], table: Callable[[dict[str, list[Sample]]], list[str]]) -> list[str]:
    """The Markdown section of ``bench/results/latest.md`` (``table``: report's table of samples)."""
    rows = ["| setting | runs | wall s | one at a time s | speed-up | succeeded | sink calls (keys) "
            "| most calls in flight | sink busy s | syncd CPU s |", "|---" + "|---:" * 9 + "|"]
    measured = [("syncd once, SQLite, " + (", ".join(f"{k}={v}" for k, v in one["settings"].items())
                                           or "default settings"), one)
                for one in [*f["single"], *([f["workers_1"]] if f.get("workers_1") else [])]]
    cluster = f.get("replicas") or {}
    measured += [(f"syncd run x {n}, PostgreSQL, SYNCD_WORKERS=4", cluster[n]) for n in ("1", "3") if n in cluster]
    for name, one in measured:
        bound, sink = one["runs"] * f["latency"], one["sink"]
        rows.append(f"| {name} | {one['runs']:,} | {one['wall']:.1f} | {bound:,.0f} | {bound / one['wall']:.1f}x "
                    f"| {one['succeeded']:,} | {sink['calls']:,} ({sink['keys']:,}) | {sink['max_in_flight']} "
                    f"| {sink['span']:.1f} | {one['cpu']:.1f} |")
    out = [f"## F — workflow runs: 3 parallel calls of {f['latency'] * 1000:.0f} ms per user.created event", "",
           *rows, ""]
    if "skipped" in cluster:
        out += [f"Replicas: skipped: {cluster['skipped']}", ""]
    spread = [f"{n} replica(s): {cluster[n]['sink'].get('by_replica')}" for n in ("1", "3") if n in cluster]
    if spread:
        out += ["Calls made per replica (the sink counts the workflow's `X-Bench-Replica` header): "
                + "; ".join(spread), ""]
    catchup = f.get("catchup")
    if catchup:
        out += [f"Catch-up of {catchup['events']:,} events, this tree against {catchup['baseline'][:9]}:", "",
                *table(catchup["samples"]), ""]
    return out




def _catchup_main(argv: list[str] | None = None) -> int:
    """``python -m bench.runqueue [--events N] [--rounds R] [--baseline REV]``: F's catch-up A/B alone; prints
    each run, the medians (wall events/s, CPU s, and the next tick's CPU s) and the PASS/FAIL line."""
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser(prog="python -m bench.runqueue", description=_catchup_main.__doc__)
    parser.add_argument("--events", type=int, default=Config.full().f_catchup_events)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default=None)
    args = parser.parse_args(argv)
    config = dataclasses.replace(Config.full(), f_catchup_events=args.events, runs=args.rounds,
                                 f_baseline=args.baseline)
    result = catchup(config, lambda line: print(line, flush=True))
    for name, samples in result["samples"].items():
        print(f"{name}: median {_median(samples):,.0f} events/s, CPU {statistics.median(s.cpu for s in samples):.2f} s"
              f" (user+sys), next tick CPU {statistics.median(s.extra['next'][1] for s in samples):.2f} s")
    ok = True
    for target, measured, passed in targets({"single": [], "catchup": result}):
        print(f"{'PASS' if passed else 'FAIL'}  {target}: {measured}")
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(_catchup_main())
