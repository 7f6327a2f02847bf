"""``syncd simulate sink``: an HTTP server that records every call and can fail a share of them.

It stands in for outbound integrations (Slack, Intercom, a CRM) in tests and demos. Each call is kept as
(method, path, body, Idempotency-Key, status). Failures are decided by a seeded RNG, so runs are
reproducible. ``successes_by_key()`` tells how many calls with a key succeeded: a receiver that dedupes
on the key performs each such effect once.

For flow-control tests and benchmarks: a ``latency`` knob (seconds every call waits), ``retry_after``
(sent with 429/503 failures), and measurements — ``max_in_flight`` overall and ``max_in_flight_by_path``,
``connections`` (distinct TCP connections), each call's ``arrived_at`` — also served as JSON at
``GET /_sink/stats`` for a sink run as its own process (``syncd simulate sink --latency 0.25``).
See ``SinkSimulator``.
"""

from simulators.sink.api import Call, SinkSimulator, main

__all__ = ["Call", "SinkSimulator", "main"]
