"""In-process cost of one idle GitHub source tick (scenario G's profile; bench/README.md, "G: many sources").

``python -m bench.idletick [--repos 200] [--rounds 3] [--profile]``: the GitHub simulator in a process of
its own (``bench.manysources serve``), a ``syncd once`` that catches every repository up, then an ``App``
built as ``syncd run`` builds it (a started worker pool) ticking every repository ``--rounds`` times on
one thread; prints the ticking thread's CPU (``time.thread_time``) per tick, and with ``--profile`` the
top of a cProfile of those ticks timed by the same clock. ``--batch K``: in walks of K sources sharing one
claim and one release transaction (``syncd.engine.idlebatch.TickBatch``, as ``syncd run``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.harness import PYTHON
from bench.manysources import Host, _env


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idletick")
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--split", action="store_true", help="CPU per tick of claim, fetch and release apart")
    parser.add_argument("--threads", type=int, default=0,
                        help="tick on N threads at once (as the daemon's tick pool) and count the process's CPU")
    parser.add_argument("--batch", type=int, default=0,
                        help="tick in walks of K sources sharing one claim and one release (TickBatch, syncd run)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-idletick-"))
    try:
        with Host(args.repos) as host:
            env = _env(host, workdir, args.repos)
            subprocess.run([PYTHON, "-m", "syncd", "once"], env=env, cwd=workdir, check=True,
                           stdout=subprocess.DEVNULL)
            os.environ.update(env)
            from syncd.ops.app import App
            from syncd.settings import Settings

            app = App.build(Settings.from_env(dict(os.environ)))
            workers = app.workers().start()
            app.engine.workers = workers
            try:
                for connector in app.connectors:  # warm: every statement and connection made once
                    app.tick(connector)
                parts = _split(app) if args.split else {}
                profile = cProfile.Profile(time.thread_time) if args.profile else None
                load = os.getloadavg()[0]
                clock = time.process_time if args.threads else time.thread_time
                started = clock()
                if profile is not None:
                    profile.enable()
                _rounds(app, args.rounds, args.threads, args.batch)
                if profile is not None:
                    profile.disable()
                spent = clock() - started
                threads = _thread_cpu() if args.threads else {}
            finally:
                workers.close()
                app.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ticks = args.rounds * args.repos
    print(f"{spent * 1000 / ticks:.3f} ms CPU per idle tick over {ticks} ticks "
          f"(load {load:.1f} -> {os.getloadavg()[0]:.1f})")
    for thread, cpu in sorted(threads.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  thread {thread}: {cpu * 1000 / ticks:.3f} ms per tick (whole run, warm-up included)")
    for name, seconds in parts.items():
        print(f"  {name}: {seconds[0] * 1000 / ticks:.3f} ms per tick")
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
    return 0


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process (``/proc/self/task``), summed by name prefix."""
    import threading

    names = {t.native_id: t.name.split("_")[0].rstrip("-0123456789") for t in threading.enumerate()}
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), f"native {task.name}")
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks_per_second
    return found


def _rounds(app: Any, rounds: int, threads: int, batch: int = 0) -> None:
    def tick(connector: Any) -> None:
        result = app.tick(connector)
        assert result.ok and result.pages == 1 and result.new_events == 0, result

    for _ in range(rounds):
        if batch > 1:  # as a walk: members in turn on one thread, the last one's end flushes the releases
            for at in range(0, len(app.connectors), batch):
                keys = [c.key for c in app.connectors[at:at + batch]]
                walk = app.batcher(keys)
                for key in keys:
                    result = walk.run(key) if walk is not None else app.tick(app.connectors[at])
                    assert result.ok and result.pages == 1 and result.new_events == 0, result
                    if walk is not None:
                        walk.finished(key)
        elif threads:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(tick, app.connectors))
        else:
            for connector in app.connectors:
                tick(connector)


def _split(app: Any) -> dict[str, list[float]]:
    """Wrap the tick's claim, fetch and release (this process only) to add up their thread CPU time."""
    from syncd.store.sqlstore import SqlLease

    parts: dict[str, list[float]] = {}

    def timed(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)
        total = parts.setdefault(label, [0.0])

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                total[0] += time.thread_time() - started

        setattr(owner, name, wrapper)

    timed(app.engine.store, "claim", "claim")
    timed(app.engine.store, "claim_many", "claim_many (--batch)")
    timed(app.engine.store, "release_many", "release_many + tick records (--batch)")
    timed(SqlLease, "release", "release + tick record")
    timed(app.engine, "_commit", "page transaction")
    for connector in app.connectors:
        timed(connector, "fetch_page", "fetch_page")
    return parts


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
