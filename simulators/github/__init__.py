"""A loopback HTTP server that speaks GitHub's "list repository issues" REST contract.

Stands in for api.github.com in the tests, `syncd demo` and the benchmarks (``python -m simulators.github``).
It imports nothing from `syncd`, so it can never agree with the client by accident.

Contract served (GET only):

- ``/repos/{owner}/{repo}/issues`` and ``/repositories/{repo_id}/issues`` with ``state``
  (open|closed|all, default open), ``sort`` (created|updated|comments, default created),
  ``direction`` (asc|desc, default desc), ``since`` (ISO-8601; keeps ``updated_at >= since``),
  ``per_page`` (default 30, at most 100) and ``page`` (1-based). Ties in the sort key are broken
  by issue number in the same direction, so the order is total and deterministic. Pull requests
  are listed too and carry a ``pull_request`` key. An invalid enum or ``since`` is a 422.
- ``Link`` (prev/next/last/first, absolute URLs) always points at ``/repositories/{id}/issues``,
  so a client that rebuilds URLs instead of following them breaks here as it would on GitHub.
  Fault knob ``link_base``: Link URLs on another host, or relative ("").
- Every 200 has a weak ``ETag`` (a hash of the body and the Link header); ``If-None-Match``
  with it gives a 304 without a body that does not count against the rate limit.
- Rate limits per token, or per client IP without one: 5000 / 60 per hour-long window that
  starts at the window's first request (knobs: ``token_limit``, and ``count_not_modified`` to count
  304s too, as secondary limits do); ``x-ratelimit-limit/remaining/used/reset/resource``
  on every API response. An exhausted window gives 403 "API rate limit exceeded" until reset.
  ``rate_limit_next`` injects throttling responses (403 or 429, with or without retry-after).
- ``/repos/{owner}/{repo}/issues/{number}`` (and ``/repositories/{id}/issues/{number}``): the issue
  (200, with an ETag), 410 Gone once ``delete``d, 301 Moved Permanently with ``Location`` once
  ``transfer``red to another repository (which lists it under a new number), 404 for an unused number.
  ``/repos/{owner}/{repo}``: a minimal repository object.
- ``Authorization: Bearer <t>`` or ``token <t>``; an unknown token is a 401, no header is
  anonymous. An unknown repository or path is a 404. ``/rate_limit`` (not counted) and
  ``/health`` (no auth) are 200.

Time: the simulator has its own clock, which moves only through `advance` (the CLI keeps it on
the wall clock). A change is visible once its ``updated_at`` is at or before the clock. Fault knob:
``edit(…, at=<future>, listed_now=True)`` lists a version dated in the future right away.
``x-ratelimit-reset`` is in epoch seconds of that clock; the default start is the current
wall-clock second, so both agree unless a test picks another ``now``.

Data: deterministic from the seed and the repos (their order gives the repo ids). Each repo's
history spans at least 30 days before the start and is a series of bursts of 1-8 changes in
the same second (creates, title/label/body/comment edits, closes, reopens), so several issues
sharing an ``updated_at`` second is common.

Modules, by responsibility: ``data`` (issue versions and their generation), ``ratelimit`` (windows and
injected throttling), ``wire`` (responses and the HTTP handler), ``routes`` (the listing, one issue, one
repository), ``api`` (``GitHubSimulator``: routing, changes, the clock), ``cli`` (``main``).
"""

from simulators.github.api import DEFAULT_TOKEN, GitHubSimulator
from simulators.github.cli import main

__all__ = ["DEFAULT_TOKEN", "GitHubSimulator", "main"]
