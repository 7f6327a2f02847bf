"""``python -m simulators.stripe [--events N] [--seed S] [--port P] [--api-key KEY]``: serve until stopped."""

from __future__ import annotations

import argparse
import threading

from simulators.stripe.api import StripeSimulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.stripe", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk_test_simulator")
    args = parser.parse_args(argv)
    simulator = StripeSimulator(events=args.events, seed=args.seed, api_key=args.api_key, port=args.port)
    url = simulator.start()
    print(f"Stripe simulator on {url} ({args.events} events)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()


if __name__ == "__main__":
    main()
