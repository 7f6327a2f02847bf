"""GitHub's rate limits as the simulator keeps them, and its fault knob: injected throttling responses.

Per token, or per client IP without one: 5000 / 60 requests per hour-long window that starts at the
window's first request. An exhausted window gives 403 "API rate limit exceeded" until reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from simulators.github.data import USERS
from simulators.github.wire import Response, error

__all__ = ["ANONYMOUS_LIMIT", "TOKEN_LIMIT", "WINDOW_SECONDS", "Bucket", "Throttle", "exceeded", "new_bucket",
           "throttled"]

TOKEN_LIMIT: Final = 5000
ANONYMOUS_LIMIT: Final = 60
WINDOW_SECONDS: Final = 3600


@dataclass(frozen=True, slots=True)
class Throttle:
    """One injected throttling response: ``retry_after`` set is a secondary limit, None a primary one."""

    status: int
    retry_after: int | None
    reset_in: int


@dataclass(slots=True)
class Bucket:
    limit: int
    used: int
    reset: int

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(max(0, self.limit - self.used))),
            ("x-ratelimit-used", str(self.used)),
            ("x-ratelimit-reset", str(self.reset)),
            ("x-ratelimit-resource", "core"),
        )


def new_bucket(key: str, now: int, token_limit: int = TOKEN_LIMIT) -> Bucket:
    """A fresh window for the rate-limit ``key`` (``token:…`` or ``ip:…``) starting at ``now``."""
    limit = token_limit if key.startswith("token:") else ANONYMOUS_LIMIT
    return Bucket(limit, 0, now + WINDOW_SECONDS)


def exceeded(bucket: Bucket, key: str, status: int) -> Response:
    who = f"user ID {USERS[0][1]}" if key.startswith("token:") else key.removeprefix("ip:")
    return error(status, f"API rate limit exceeded for {who}.", bucket.headers())


def throttled(throttle: Throttle, bucket: Bucket, key: str, now: int) -> Response:
    if throttle.retry_after is None:
        drained = Bucket(bucket.limit, bucket.limit, now + throttle.reset_in)
        return exceeded(drained, key, throttle.status)
    headers = (("retry-after", str(throttle.retry_after)), *bucket.headers())
    return error(
        throttle.status,
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        headers,
    )
