"""The simulated providers of a benchmark, in a process of their own, with a request counter.

``python -m bench.simhost --workos-events N [--github-issues N]`` builds the simulators, serves them on
free loopback ports, and prints one JSON line ``{"workos": URL, "github": URL|null, "stats": URL}`` once
they accept connections. ``GET <stats>/`` answers ``{"workos": R, "github": R}``: the API requests each
simulator has answered so far (``/events`` for WorkOS, issue listings for GitHub), which is how the
idle scenario counts requests per tick at the provider rather than trusting the client. Runs until
SIGTERM or SIGINT.

For the run-queue scenario (``bench.runqueue``): ``--users N`` makes the WorkOS stream N
``user.created`` events and nothing else, ``POST <stats>/users?n=K`` appends K more (a burst of sign-ups
arriving at a running cluster), and ``--sink-latency S`` adds a receiver of outbound calls answering each
after S seconds (``bench.latencysink``; its URL is ``"sink"`` in the JSON line, its counters ``"sink"``
in the stats).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.latencysink import LatencySink
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
        self._answer(counts)

    def do_POST(self) -> None:
        """``/users?n=K``: append K ``user.created`` events to the WorkOS stream; answers ``{"added": K}``."""
        add_users: Callable[[int], None] = getattr(self.server, "add_users")  # noqa: B009 - set on the instance
        url = urlsplit(self.path)
        count = int(parse_qs(url.query).get("n", ["0"])[0]) if url.path == "/users" else 0
        add_users(count)
        self._answer({"added": count})

    def _answer(self, value: Any) -> None:
        body = json.dumps(value).encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


def user_created(serial: int) -> dict[str, Any]:
    """A ``user.created`` event for ``WorkOSSimulator.append`` (id and times filled in by the simulator)."""
    user_id = f"user_bench{serial:016d}"
    return {"event": "user.created", "data": {
        "object": "user", "id": user_id, "email": f"user.{serial}@example-bench.com", "first_name": "Bench",
        "last_name": f"User {serial}", "email_verified": True, "profile_picture_url": None,
        "external_id": None, "last_sign_in_at": None, "metadata": {},
        "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simhost")
    parser.add_argument("--workos-events", type=int, default=1000)
    parser.add_argument("--github-issues", type=int, default=0, help="0: no GitHub simulator")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workos-latency", type=float, default=0.0, help="seconds each /events answer waits")
    parser.add_argument("--users", type=int, default=None, help="a stream of only N user.created events")
    parser.add_argument("--sink-latency", type=float, default=None, help="serve a sink answering after S s")
    args = parser.parse_args(argv)
    workos = WorkOSSimulator(events=args.workos_events if args.users is None else 0, seed=args.seed,
                             api_key=WORKOS_KEY, faults=Faults(latency=args.workos_latency))
    serial = [0]

    def add_users(count: int) -> None:
        first, serial[0] = serial[0], serial[0] + count
        workos.append([user_created(n) for n in range(first, first + count)])

    add_users(args.users or 0)
    sink = LatencySink(latency=args.sink_latency) if args.sink_latency is not None else None
    github = (
        GitHubSimulator(repos={GITHUB_REPO: args.github_issues}, seed=args.seed, tokens=(GITHUB_TOKEN,))
        if args.github_issues
        else None
    )

    def counts() -> dict[str, Any]:
        return {
            "workos": sum(1 for path, _ in list(workos.requests) if path.startswith("/events")),
            "github": None
            if github is None
            else sum(1 for record in list(github.requests) if "/issues" in record[0]),
            **({"sink": sink.stats()} if sink is not None else {}),
        }

    stats = ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
    stats.daemon_threads = True
    stats.counts = counts  # type: ignore[attr-defined]
    stats.add_users = add_users  # type: ignore[attr-defined]
    threading.Thread(target=stats.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    workos_url = workos.start()
    github_url = github.start() if github is not None else None
    sink_url = sink.start() if sink is not None else None
    host, port = stats.server_address[:2]
    urls = {"workos": workos_url, "github": github_url, "stats": f"http://{host!s}:{port}", "sink": sink_url}
    print(json.dumps(urls), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        workos.stop()
        if github is not None:
            github.stop()
        if sink is not None:
            sink.stop()
        stats.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
