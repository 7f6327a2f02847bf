"""The simulated providers of a benchmark, in a process of their own, with a request counter.

``python -m bench.simhost --workos-events N [--github-issues N]`` builds the simulators, serves them on
free loopback ports, and prints one JSON line ``{"workos": URL, "github": URL|null, "stats": URL}`` once
they accept connections. ``GET <stats>/`` answers ``{"workos": R, "github": R}``: the API requests each
simulator has answered so far (``/events`` for WorkOS, issue listings for GitHub), which is how the
idle scenario counts requests per tick at the provider rather than trusting the client. Runs until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from simulators.github import GitHubSimulator
from simulators.workos import Faults, WorkOSSimulator

WORKOS_KEY = "sk_test_bench_0123456789"
GITHUB_TOKEN = "ghp_bench_0123456789"
GITHUB_REPO = "bench/app"


class _Stats(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        counts: dict[str, Any] = getattr(self.server, "counts")()  # noqa: B009 - set on the instance
        body = json.dumps(counts).encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simhost")
    parser.add_argument("--workos-events", type=int, default=1000)
    parser.add_argument("--github-issues", type=int, default=0, help="0: no GitHub simulator")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workos-latency", type=float, default=0.0, help="seconds each /events answer waits")
    args = parser.parse_args(argv)
    workos = WorkOSSimulator(events=args.workos_events, seed=args.seed, api_key=WORKOS_KEY,
                             faults=Faults(latency=args.workos_latency))
    github = (
        GitHubSimulator(repos={GITHUB_REPO: args.github_issues}, seed=args.seed, tokens=(GITHUB_TOKEN,))
        if args.github_issues
        else None
    )

    def counts() -> dict[str, int | None]:
        return {
            "workos": sum(1 for path, _ in list(workos.requests) if path.startswith("/events")),
            "github": None
            if github is None
            else sum(1 for record in list(github.requests) if "/issues" in record[0]),
        }

    stats = ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    stats.daemon_threads = True
    stats.counts = counts  # type: ignore[attr-defined]
    threading.Thread(target=stats.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    workos_url = workos.start()
    github_url = github.start() if github is not None else None
    host, port = stats.server_address[:2]
    print(
        json.dumps({"workos": workos_url, "github": github_url, "stats": f"http://{host!s}:{port}"}),
        flush=True,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        workos.stop()
        if github is not None:
            github.stop()
        stats.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
