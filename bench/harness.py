"""Process measurement for the benchmarks: run one contender as a child process and take its own wall time,
CPU time and peak RSS from ``os.wait4``; host the simulators in a process of their own.

``wait4`` reports the rusage of exactly that child (plus any grandchildren it waited for), so neither the
simulator's nor the harness's CPU and memory leak into a contender's numbers.
"""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measured:
    """One finished child process: exit code, output, and what it cost."""

    returncode: int
    wall: float  # seconds from spawn to exit
    cpu: float  # user + system seconds
    peak_rss_mb: float
    stdout: str
    stderr: str
    user: float = 0.0  # user seconds alone

    def report(self) -> dict[str, Any]:
        """The contender's JSON report line (its last stdout line that parses as a JSON object), or {}."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return value
        return {}


class BenchError(RuntimeError):
    """A contender or simulator failed; the message carries the tail of its output."""


def measure(command: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float) -> Measured:
    """Run ``command`` to completion and measure it. The child is killed after ``timeout`` seconds."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(command), stdout=out, stderr=err, env=dict(env), cwd=cwd)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=proc.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            user=usage.ru_utime,
        )


def checked(result: Measured, what: str) -> Measured:
    """``result`` if it exited 0, else BenchError with the end of its output."""
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BenchError(f"{what} exited {result.returncode}:\n{tail}")
    return result


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every child: no OTel endpoint, no stray .env, the repo importable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SYNCD_", "WORKOS_", "GITHUB_", "DATABASE_", "EVENTS_"))
    }
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # dlt: no anonymous telemetry (loopback only)
    env.update(extra)
    return env


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants, live or exited and reaped (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
        parents[int(entry)] = int(fields[1])
        # utime + stime + cutime + cstime: exited children (e.g. PostgreSQL backends) count in their parent.
        times[int(entry)] = sum(int(f) for f in fields[11:15]) / _TICKS
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


class SimHost:
    """``python -m bench.simhost`` as a child process: the simulators, plus a request counter."""

    def __init__(
        self,
        *,
        workos_events: int,
        github_issues: int = 0,
        seed: int = 1,
        startup_timeout: float = 600,
        workos_latency: float = 0.0,
        users: int | None = None,
        sink_latency: float | None = None,
    ) -> None:
        self.args = [
            "--workos-events",
            str(workos_events),
            "--github-issues",
            str(github_issues),
            "--seed",
            str(seed),
            "--workos-latency",
            str(workos_latency),
            *(["--users", str(users)] if users is not None else []),
            *(["--sink-latency", str(sink_latency)] if sink_latency is not None else []),
        ]
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, Any] = {}
        self.startup_seconds = 0.0

    def __enter__(self) -> SimHost:
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "bench.simhost", *self.args], stdout=subprocess.PIPE, env=base_env(), cwd=ROOT
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.startup_timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.__exit__(None, None, None)
            raise BenchError("the simulator did not start")
        self.urls = json.loads(line)
        self.startup_seconds = time.perf_counter() - started
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        stop_process(self.proc)

    @property
    def workos(self) -> str:
        return str(self.urls["workos"])

    @property
    def github(self) -> str:
        return str(self.urls["github"])

    @property
    def sink(self) -> str:
        return str(self.urls["sink"])

    def add_users(self, count: int) -> None:
        """Append ``count`` ``user.created`` events to the WorkOS stream (a host started with ``users``)."""
        request = urllib.request.Request(f"{self.urls['stats']}/users?n={count}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:  # loopback only
            response.read()

    def requests(self) -> dict[str, Any]:
        """API requests each simulator has answered so far (and the sink's counters, if it has one)."""
        with urllib.request.urlopen(self.urls["stats"], timeout=10) as response:  # loopback only
            counts: dict[str, Any] = json.loads(response.read())
        return counts

    def cpu(self) -> float:
        assert self.proc is not None
        return tree_cpu(self.proc.pid)


@dataclass(frozen=True)
class Spread:
    """Median, min and max of a series of runs."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def text(self, digits: int = 0) -> str:
        fmt = f"{{:,.{digits}f}}"
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}-{fmt.format(self.high)})"


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    """SIGTERM ``proc`` (a simulator host), SIGKILL it after 10 s, and close its stdout pipe."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc is not None and proc.stdout is not None:
        proc.stdout.close()
