"""``syncd simulate workos`` / ``python -m simulators.workos``: serve the simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from simulators.workos.api import WorkOSSimulator
from simulators.workos.faults import Faults
from simulators.workos.ids import parse_timestamp

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncd simulate workos",
                                     description="Serve a simulated WorkOS Events API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--events", type=int, default=1000, help="events generated up front")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default="sk_test_simulator")
    parser.add_argument("--live-rate", type=float, default=0.0, help="new events per second")
    parser.add_argument("--timestamp-style", choices=("iso", "mixed"), default="iso")
    parser.add_argument("--dsync", type=float, default=0.0, metavar="SHARE",
                        help="share of generated events that are Directory Sync events (0..1)")
    parser.add_argument("--now", type=parse_timestamp, default=None,
                        help="end of the generated history (ISO-8601); default: the wall clock")
    for knob in ("error", "rate-limit", "timeout", "broken", "reset"):
        parser.add_argument(f"--{knob}-rate", type=float, default=0.0, help="fraction of /events requests")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds sent with 429s")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="delay of a timeout fault")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every /events answer waits")
    parser.add_argument("--repeat-boundary", action="store_true",
                        help="each page after=X starts with event X again")
    parser.add_argument("--stuck-after", metavar="EVENT_ID", default=None,
                        help="once a request has after=EVENT_ID, every later page repeats that page")
    parser.add_argument("--expired-before", metavar="EVENT_ID", default=None,
                        help="refuse every after= cursor at or before EVENT_ID (an expired cursor)")
    parser.add_argument("--expired-status", type=int, choices=(400, 422), default=400,
                        help="the status of a refused cursor (default 400)")
    parser.add_argument("--stale-events", type=int, default=0, metavar="N",
                        help="each page after=X ends with N events from before X")
    parser.add_argument("--cycle-after", metavar="EVENT_ID", default=None,
                        help="a page after=EVENT_ID is the stream's first page again (pages cycle)")
    parser.add_argument("--poison-every", type=int, default=0, metavar="N",
                        help="serve every N-th event broken (NUL, surrogate, deep nesting, no data, not an "
                             "object), in rotation: syncd quarantines them")
    parser.add_argument("--newest-first", action="store_true",
                        help="list every page newest first, whatever order= asks (syncd refuses such pages)")
    return parser


def _mask(secret: str) -> str:
    return (secret[:8] if len(secret) > 12 else "") + "…"


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; prints one line with its URL. Returns the exit code."""
    args = _parser().parse_args(argv)
    faults = Faults(error_rate=args.error_rate, rate_limit_rate=args.rate_limit_rate,
                    retry_after=args.retry_after, timeout_rate=args.timeout_rate,
                    slow_seconds=args.slow_seconds, broken_rate=args.broken_rate, reset_rate=args.reset_rate,
                    repeat_boundary=args.repeat_boundary, stuck_after=args.stuck_after, latency=args.latency,
                    expired_before=args.expired_before, expired_status=args.expired_status,
                    stale_events=args.stale_events, cycle_after=args.cycle_after,
                    poison_every=args.poison_every, newest_first=args.newest_first)
    simulator = WorkOSSimulator(events=args.events, seed=args.seed, api_key=args.api_key,
                                live_rate=args.live_rate, faults=faults, host=args.host, port=args.port,
                                timestamp_style=args.timestamp_style, now=args.now or datetime.now(UTC),
                                dsync=args.dsync)
    done = threading.Event()
    previous = _install_signals(lambda signum, frame: done.set())
    try:
        url = simulator.start()
        print(f"WorkOS simulator on {url} ({args.events} events, api key {_mask(args.api_key)})", flush=True)
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
        _install_signals(previous)
    return 0


_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def _install_signals(handler: _SignalHandler | dict[int, _SignalHandler]) -> dict[int, _SignalHandler]:
    """Set handlers for SIGINT and SIGTERM (one for both, or per signal); returns the previous ones."""
    previous: dict[int, _SignalHandler] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # signals can only be handled in the main thread; KeyboardInterrupt still works
    for signum in (signal.SIGINT, signal.SIGTERM):
        chosen = handler.get(signum) if isinstance(handler, dict) else handler
        if chosen is not None:
            previous[signum] = signal.signal(signum, chosen)
    return previous

