"""A loopback HTTP server that speaks Stripe's Events API (``GET /v1/events``), with knobs for faults.

Used by the tests (``python -m simulators.stripe`` serves one by hand); it imports nothing from ``syncd``.

Contract served (Stripe's API reference, "Pagination" and "List all events"):

- ``Authorization: Bearer <key>`` (or HTTP Basic with the key as user name), else ``401`` with Stripe's
  error body, which quotes the wrong key masked (``sk_test_****abcd``) as Stripe does.
- Lists are newest first. ``limit`` 1..100 (default 10). ``starting_after=X`` lists the events just older
  than X; ``ending_before=X`` the ``limit`` events just newer than X, the ones nearest X, still newest
  first, with ``has_more`` saying newer ones remain (what Stripe's own libraries rely on: they page
  backwards with ``ending_before=data[0].id`` and reverse each page). The two are mutually exclusive
  (400). A cursor naming no listed event (unknown, or expired) is a ``404 resource_missing`` naming the
  parameter.
- ``types[]`` (at most 20, else 400), ``created[gte|gt|lte|lt]`` and ``created`` (exact), on the
  event's ``created`` (epoch seconds). Unknown parameters are a 400, as Stripe answers them.
- Ids are random (``evt_`` + 24 alphanumerics): only the list says which event is newer.
- Events are retained 30 days of the simulator's clock (``advance``); older ones expire.

Faults (``simulator.faults``, a ``Faults``): a rate of 429s (``Retry-After``) and of 500s from a seeded
RNG, a queue of one-shot answers (``fail_next``), latency. ``on_request(n)`` lets a test add events
while a client walks, right before the n-th request is answered.
"""

from simulators.stripe.api import API_VERSION, DEFAULT_NOW, RETENTION_SECONDS, Faults, StripeSimulator
from simulators.stripe.data import mirror_state

__all__ = ["API_VERSION", "DEFAULT_NOW", "RETENTION_SECONDS", "Faults", "StripeSimulator", "mirror_state"]
