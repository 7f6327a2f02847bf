"""``syncd simulate github`` / ``python -m simulators.github``: serve until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import random
import signal
import threading
import time
from types import FrameType

from simulators.github.api import DEFAULT_TOKEN, GitHubSimulator
from simulators.github.data import DEFAULT_REPOS

__all__ = ["main"]


def _parse_repos(text: str) -> dict[str, int]:
    repos: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.rpartition(":")
        if not sep or "/" not in name or not count.isdigit():
            raise argparse.ArgumentTypeError(f"expected owner/repo:COUNT, got {item!r}")
        repos[name] = int(count)
    if not repos:
        raise argparse.ArgumentTypeError("at least one repo is needed")
    return repos


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.github",
        description="Serve a simulated GitHub issues API on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--repos",
        type=_parse_repos,
        default=dict(DEFAULT_REPOS),
        help="owner/repo:COUNT,... (default acme/web:120,acme/api:80)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--token", action="append", help=f"accepted token; repeatable (default {DEFAULT_TOKEN})"
    )
    parser.add_argument(
        "--mutate-rate",
        type=int,
        default=0,
        metavar="N",
        help="live traffic: N changes per second, spread over the repos",
    )
    parser.add_argument(
        "--link-base",
        default=None,
        metavar="URL",
        help="fault: serve Link URLs on this base (another host; '' for relative links)",
    )
    parser.add_argument("--token-limit", type=int, default=5000, metavar="N",
                        help="a token's requests per hour-long window (default 5000)")
    parser.add_argument("--count-not-modified", action="store_true",
                        help="304s to conditional requests count against the limit too")
    return parser


def _run_live(simulator: GitHubSimulator, rate: int, seed: int, stop: threading.Event) -> None:
    """Keep the clock on the wall clock and make `rate` changes each second until `stop`."""
    rng = random.Random(f"live:{seed}")
    names = simulator.repo_names
    next_tick = int(time.time()) + 1
    while not stop.wait(max(0.0, next_tick - time.time())):
        simulator.advance(max(0.0, time.time() - simulator.now.timestamp()))
        counts: dict[str, int] = {}
        for _ in range(rate):
            name = rng.choice(names)
            counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            simulator.mutate(name, count)
        next_tick += 1


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop (argparse exits 2 on bad usage)."""
    args = _parser().parse_args(argv)
    if args.mutate_rate < 0:
        _parser().error("--mutate-rate must be >= 0")
    if args.token_limit < 1:
        _parser().error("--token-limit must be >= 1")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    simulator = GitHubSimulator(
        repos=args.repos,
        seed=args.seed,
        host=args.host,
        port=args.port,
        tokens=tuple(args.token or (DEFAULT_TOKEN,)),
        token_limit=args.token_limit,
        count_not_modified=args.count_not_modified,
    )
    simulator.link_base = args.link_base
    with simulator:
        described = ", ".join(f"{name}:{count}" for name, count in args.repos.items())
        print(f"GitHub simulator on {simulator.url} (repos {described})", flush=True)
        _run_live(simulator, args.mutate_rate, args.seed, stop)
    return 0

