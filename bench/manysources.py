"""Scenario G (issue 28): many idle GitHub sources at a small, flat cost each.

For each size in ``SIZES`` (10, 100, 500 repositories of a few issues each, one token), against the
GitHub simulator served by ``python -m bench.manysources serve`` in a process of its own:

- a first ``syncd once`` catches every repository up (its CPU is reported, not judged);
- a second ``syncd once``, with nothing new anywhere, is measured from spawn to exit (``os.wait4``: the
  whole process, start-up included) — judged at ``ONCE_SIZE`` sources (≤ ``ONCE_CPU_S``);
- ``syncd run`` on the same database with ``SYNC_INTERVAL_SECONDS=INTERVAL``: after two full rounds of
  polls (warm) and its start-up chores (``STEADY_AFTER``: the first prune look comes
  ``retention.FIRST_AFTER_SECONDS`` after start, then hourly; on the bench's fresh database it prunes,
  ~30 ms once a day, which in the window would have added ~1 ms to every idle tick at 10 sources:
  bench/README.md "G", session 12), its CPU (``/proc``) and the simulator's count of issue requests are
  read, then again ``WINDOW`` seconds later. CPU per idle source tick = CPU spent / requests answered in
  between (an idle tick is exactly one conditional request, a 304); RSS is the daemon's ``VmRSS`` at the
  end. Judged at every size: ≤ ``TICK_CPU_MS`` and ≤ ``RSS_MB``.

``python -m bench --only G``. Numbers and their history: bench/README.md, "G — many sources".
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, ROOT, BenchError, base_env, checked, measure, stop_process, tree_cpu
from syncd.ops.retention import FIRST_AFTER_SECONDS

SIZES = (10, 100, 500)
QUICK_SIZES = (10, 100)
ONCE_SIZE = 200
ISSUES_PER_REPO = 3
INTERVAL = 10  # seconds between two polls of one source (SYNC_INTERVAL_SECONDS)
WINDOW = 30.0  # seconds of idle daemon measured
#: The window starts no sooner than this after ``syncd run`` starts: its first prune look (30 s) is behind.
STEADY_AFTER = FIRST_AFTER_SECONDS + 10.0
TICK_CPU_MS, RSS_MB, ONCE_CPU_S = 2.0, 150.0, 2.0
TOKEN = "ghp_bench_many_0123456789"


def repo_names(count: int) -> list[str]:
    return [f"org{n // 100}/repo{n:04d}" for n in range(count)]


# ----- the simulator's process -------------------------------------------------------------------------

class _Stats(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(getattr(self.server, "counts")()).encode()  # noqa: B009 - set on the instance
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


def serve(argv: list[str]) -> int:
    """``serve --repos N``: the simulator with N repositories on its wall clock, plus a request counter;
    prints one JSON line ``{"github": URL, "stats": URL}``; runs until SIGTERM."""
    from simulators.github import GitHubSimulator

    parser = argparse.ArgumentParser(prog="python -m bench.manysources serve")
    parser.add_argument("--repos", type=int, required=True)
    parser.add_argument("--issues", type=int, default=ISSUES_PER_REPO)
    args = parser.parse_args(argv)
    sim = GitHubSimulator(repos=dict.fromkeys(repo_names(args.repos), args.issues), seed=1, tokens=(TOKEN,))

    def counts() -> dict[str, Any]:
        records = list(sim.requests)
        issues = [r for r in records if "/issues" in r[0]]
        return {"requests": len(issues), "not_modified": sum(1 for r in issues if r[1] == 304),
                "throttled": sum(1 for r in issues if r[1] in (403, 429))}

    stats = ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    stats.daemon_threads = True
    stats.counts = counts  # type: ignore[attr-defined]
    threading.Thread(target=stats.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    url = sim.start()
    host, port = stats.server_address[:2]
    print(json.dumps({"github": url, "stats": f"http://{host!s}:{port}"}), flush=True)
    while not done.wait(0.5):  # the simulator's clock (and its rate-limit windows) on the wall clock
        sim.advance(max(0.0, time.time() - sim.now.timestamp()))
    sim.stop()
    stats.shutdown()
    return 0


class Host:
    """``serve`` as a child process."""

    def __init__(self, repos: int) -> None:
        self.repos = repos
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, str] = {}

    def __enter__(self) -> Host:
        self.proc = subprocess.Popen([PYTHON, "-m", "bench.manysources", "serve", "--repos", str(self.repos)],
                                     stdout=subprocess.PIPE, env=base_env(), cwd=ROOT)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 300)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.__exit__()
            raise BenchError("the GitHub simulator did not start")
        self.urls = json.loads(line)
        return self

    def __exit__(self, *_: object) -> None:
        stop_process(self.proc)

    def counts(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(self.urls["stats"], timeout=30) as response:  # loopback only
            counts: dict[str, int] = json.loads(response.read())
        return counts


# ----- measuring syncd -------------------------------------------------------------------------------

def _env(host: Host, workdir: Path, count: int) -> dict[str, str]:
    return base_env(DATABASE_URL=f"sqlite:///{workdir / 'many.db'}", GITHUB_TOKEN=TOKEN,
                    GITHUB_BASE_URL=host.urls["github"], GITHUB_REPOS=",".join(repo_names(count)),
                    SYNCD_HTTP_PORT="0", LOG_LEVEL="WARNING", SYNC_INTERVAL_SECONDS=str(INTERVAL))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of ``pid`` so far: each is a thread put to sleep
    or woken, the cost of hand-offs between the daemon's threads (bench/README.md, "G", session 11)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
    return total


def _daemon(host: Host, env: dict[str, str], workdir: Path, count: int) -> dict[str, float]:
    """CPU per idle source tick and RSS of ``syncd run`` (see the module docstring)."""
    start = host.counts()["requests"]
    proc = subprocess.Popen([PYTHON, "-m", "syncd", "run"], env=env, cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        deadline = started + 20 * INTERVAL + count
        while host.counts()["requests"] - start < 2 * count:  # two rounds: every source polled, warm
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"syncd run did not poll {count} sources twice: "
                                 f"{(proc.stderr.read() if proc.stderr else b'').decode()[-2000:]}")
            time.sleep(0.5)
        time.sleep(max(0.0, started + STEADY_AFTER - time.monotonic()))  # the first prune look is behind
        cpu0, switched0, before = tree_cpu(proc.pid), _switches(proc.pid), host.counts()
        time.sleep(WINDOW)
        cpu1, switched1, after = tree_cpu(proc.pid), _switches(proc.pid), host.counts()
        rss = _rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    ticks = after["requests"] - before["requests"]
    return {"ticks": ticks, "cpu_s": cpu1 - cpu0, "tick_cpu_ms": (cpu1 - cpu0) * 1000 / max(1, ticks),
            "switches_per_tick": (switched1 - switched0) / max(1, ticks), "rss_mb": rss,
            "throttled": after["throttled"] - before["throttled"], "load": os.getloadavg()[0],
            "per_source_per_interval": ticks / count / (WINDOW / INTERVAL)}


def one_size(count: int, timeout: float, progress: Callable[[str], None]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-many-"))
    try:
        with Host(count) as host:
            env = _env(host, workdir, count)
            once = [PYTHON, "-m", "syncd", "once"]
            catch_up = checked(measure(once, env=env, cwd=workdir, timeout=timeout), "syncd once (catch-up)")
            idle = checked(measure(once, env=env, cwd=workdir, timeout=timeout), "syncd once (idle)")
            progress(f"  {count} sources: catch-up once {catch_up.cpu:.1f} s CPU, idle once {idle.cpu:.2f} s CPU")
            daemon = _daemon(host, env, workdir, count)
            progress(f"  {count} sources: daemon {daemon['tick_cpu_ms']:.2f} ms CPU per idle tick over "
                     f"{daemon['ticks']:.0f} ticks ({daemon['switches_per_tick']:.1f} context switches each), "
                     f"RSS {daemon['rss_mb']:.0f} MB (load {daemon['load']:.1f})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"sources": count, "catch_up_cpu_s": catch_up.cpu, "once_cpu_s": idle.cpu, "once_wall_s": idle.wall,
            "once_rss_mb": idle.peak_rss_mb, **daemon}


def scenario_g(config: Any, progress: Callable[[str], None]) -> dict[str, Any]:
    quick = getattr(config, "a_events", 0) < 200_000
    sizes = QUICK_SIZES if quick else SIZES
    progress(f"G: {', '.join(map(str, sizes))} idle GitHub sources (+ syncd once over {ONCE_SIZE}); "
             f"load average {os.getloadavg()[0]:.2f}")
    results = [one_size(n, config.timeout, progress) for n in sizes]
    once_at = next((r for r in results if r["sources"] == ONCE_SIZE), None)
    if once_at is None:
        once_at = one_size(ONCE_SIZE, config.timeout, progress)
    return {"sizes": results, "once": once_at, "interval": INTERVAL, "window": WINDOW,
            "load": os.getloadavg()[0]}


def targets(g: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, ok) for each of issue 28's targets."""
    out: list[tuple[str, str, bool]] = []
    for r in g["sizes"]:
        n = r["sources"]
        out.append((f"G: {n} idle sources: ≤ {TICK_CPU_MS:g} ms CPU per idle source tick",
                    f"{r['tick_cpu_ms']:.2f} ms", r["tick_cpu_ms"] <= TICK_CPU_MS))
        out.append((f"G: {n} idle sources: daemon RSS ≤ {RSS_MB:.0f} MB", f"{r['rss_mb']:.0f} MB",
                    r["rss_mb"] <= RSS_MB))
    once = g["once"]
    out.append((f"G: syncd once over {once['sources']} idle sources ≤ {ONCE_CPU_S:g} s CPU (start-up included)",
                f"{once['once_cpu_s']:.2f} s", once["once_cpu_s"] <= ONCE_CPU_S))
    return out


def lines(g: dict[str, Any]) -> list[str]:
    """The Markdown section of ``bench/results/latest.md``."""
    rows = [f"## G — many idle GitHub sources (one token; daemon at {g['interval']} s, {g['window']:.0f} s "
            f"measured; load average {g['load']:.2f})", "",
            "| sources | CPU ms per idle source tick | idle ticks measured | polls per source per interval "
            "| daemon RSS MB | syncd once idle CPU s | once wall s | once peak RSS MB | catch-up once CPU s "
            "| context switches per idle tick |",
            "|---:" * 10 + "|"]
    shown = list(g["sizes"]) + ([g["once"]] if g["once"] not in g["sizes"] else [])
    for r in shown:
        rows.append(f"| {r['sources']} | {r['tick_cpu_ms']:.2f} | {r['ticks']:.0f} | "
                    f"{r['per_source_per_interval']:.2f} | {r['rss_mb']:.0f} | {r['once_cpu_s']:.2f} | "
                    f"{r['once_wall_s']:.1f} | {r['once_rss_mb']:.0f} | {r['catch_up_cpu_s']:.1f} | "
                    f"{r.get('switches_per_tick', float('nan')):.1f} |")
    return [*rows, ""]


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        raise SystemExit("usage: python -m bench.manysources serve --repos N (the scenario: python -m bench --only G)")
    sys.exit(serve(sys.argv[2:]))
