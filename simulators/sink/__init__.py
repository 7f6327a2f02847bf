"""``syncd simulate sink``: an HTTP server that records every call and can fail a share of them.

It stands in for outbound integrations (Slack, Intercom, a CRM) in tests and demos. Each call is kept as
(method, path, body, Idempotency-Key, status). Failures are decided by a seeded RNG, so runs are
reproducible. ``successes_by_key()`` tells how many calls with a key succeeded: a receiver that dedupes
on the key performs each such effect once.
"""

from simulators.sink.api import Call, SinkSimulator, main

__all__ = ["Call", "SinkSimulator", "main"]
