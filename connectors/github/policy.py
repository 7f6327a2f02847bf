"""The GitHub connector's status-code policy and rate-limit reading: plain functions that never sleep.

Every wait they compute is bounded (``MAX_WAIT_SECONDS``): an ``x-ratelimit-reset`` years away, or a
number too large for a float or a datetime, is a provider fault; it is capped and the message says so,
instead of pausing a repository for good or raising ``OverflowError`` through the tick.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import httpx

from syncd.errors import AuthError, FatalError, RetryableError
from syncd.http import parse_retry_after, status_error_text

#: A secondary rate limit without retry-after or reset: wait this long, doubling while it repeats.
SECONDARY_WAIT_SECONDS = 60.0
SECONDARY_WAIT_CAP_SECONDS = 3600.0
#: GitHub's primary window is an hour: no wait is longer (the engine's own pause cap is the same hour).
MAX_WAIT_SECONDS = 3600.0
#: A reset up to this much beyond the hour is clock skew, not a fault worth a note.
RESET_SKEW_SECONDS = 60.0
ANONYMOUS_NOTE = "60/hour without GITHUB_TOKEN"


def secondary_wait(strikes: int) -> float:
    """At least 60 s, doubling with each consecutive secondary limit (``strikes`` before this one)."""
    doublings: int = max(0, min(strikes, 10))
    return min(SECONDARY_WAIT_CAP_SECONDS, SECONDARY_WAIT_SECONDS * float(2**doublings))


def throttle_wait(response: httpx.Response, *, now: float, strikes: int = 0) -> float | None:
    """Seconds to wait when this 403/429 is a rate limit, None when it is not one. Never sleeps.

    retry-after → that long; ``x-ratelimit-remaining: 0`` → until ``x-ratelimit-reset`` (epoch seconds,
    +1 s as reset is a whole second); a 429, or a 403 whose message says "rate limit", with neither →
    a secondary limit: ``secondary_wait(strikes)``. At most ``MAX_WAIT_SECONDS``.
    """
    wait = _asked_wait(response, now=now, strikes=strikes)
    return None if wait is None else min(MAX_WAIT_SECONDS, wait)


def _asked_wait(response: httpx.Response, *, now: float, strikes: int) -> float | None:
    """``throttle_wait`` before the cap (``inf`` for a reset no float holds)."""
    if response.status_code not in (403, 429):
        return None
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is not None:
        return max(1.0, retry_after)
    if response.headers.get("x-ratelimit-remaining", "").strip() == "0":
        reset = _header_int(response.headers, "x-ratelimit-reset")
        return reset_wait(reset, now) if reset is not None else secondary_wait(strikes)
    if response.status_code == 429 or "rate limit" in status_error_text(response).lower():
        return secondary_wait(strikes)
    return None


def reset_wait(reset: int, now: float) -> float:
    """Seconds until the epoch second ``reset`` (+1), at least 1; ``inf`` when it lies beyond 10^9 s (any
    int works: it is compared as an int before any float is made of it)."""
    if reset - int(now) > 10**9:
        return math.inf
    return max(1.0, reset - now + 1)


def status_policy(source: str, repo: str, response: httpx.Response, *, now: float, strikes: int = 0,
                  anonymous: bool = False) -> None:
    """Map a response that is neither 2xx nor 304 to the error saying what to do. Never sleeps."""
    code = response.status_code
    if code < 300 or code == 304:
        return
    text = status_error_text(response)
    asked = _asked_wait(response, now=now, strikes=strikes)
    if asked is not None:
        wait = min(MAX_WAIT_SECONDS, asked)
        capped = (" (capped: the provider's reset lies further than an hour away)"
                  if asked > MAX_WAIT_SECONDS + RESET_SKEW_SECONDS else "")
        raise RetryableError(source, f"rate limited ({text}); next try in {wait:.0f}s{capped}", wait)
    if code == 401:
        raise AuthError(source, "GITHUB_TOKEN rejected (401 Bad credentials); check the token")
    if code == 403:
        hint = "set GITHUB_TOKEN" if anonymous else "GITHUB_TOKEN lacks access"
        raise AuthError(source, f"access to {repo} denied ({text}); {hint}")
    if code == 404:
        hint = " (a private repository needs GITHUB_TOKEN)" if anonymous else ""
        raise FatalError(source, f"repository {repo} not found (HTTP 404){hint}; check GITHUB_REPOS")
    if code in (301, 302, 307, 308):
        raise FatalError(source, f"repository {repo} moved (HTTP {code}); update GITHUB_REPOS")
    if code >= 500 or code == 408:
        raise RetryableError(source, f"provider error ({text})")
    raise FatalError(source, f"unexpected response ({text})")


def rate_limit_meta(headers: httpx.Headers, *, anonymous: bool) -> dict[str, Any]:
    """What ``syncd status`` shows about the rate limit, from a response's headers."""
    meta: dict[str, Any] = {}
    for name, key in (("x-ratelimit-remaining", "ratelimit_remaining"),
                      ("x-ratelimit-limit", "ratelimit_limit")):
        value = _header_int(headers, name)
        if value is not None:
            meta[key] = value
    reset = _header_int(headers, "x-ratelimit-reset")
    if reset is not None:
        meta["ratelimit_reset"] = epoch_text(reset)
    if anonymous:
        meta["ratelimit_note"] = ANONYMOUS_NOTE
    return meta


def epoch_text(seconds: int) -> str:
    """An epoch second as ISO-8601, or a short note when no datetime can hold it."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return f"out of range ({str(seconds)[:20]}{'…' if len(str(seconds)) > 20 else ''})"


def is_secondary(response: httpx.Response) -> bool:
    """A throttle that gave neither retry-after nor an exhausted primary window."""
    headers = response.headers
    return (response.status_code in (403, 429) and not headers.get("retry-after")
            and headers.get("x-ratelimit-remaining", "").strip() != "0")


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    text = headers.get(name, "").strip()
    if len(text) > 40:  # no real header is this long; int() of thousands of digits is slow and refused
        return 10 ** 40 if text.isdigit() else None
    try:
        return int(text)
    except ValueError:
        return None


__all__ = ["ANONYMOUS_NOTE", "MAX_WAIT_SECONDS", "RESET_SKEW_SECONDS", "SECONDARY_WAIT_CAP_SECONDS",
           "SECONDARY_WAIT_SECONDS", "epoch_text", "is_secondary", "rate_limit_meta", "reset_wait",
           "secondary_wait", "status_policy", "throttle_wait"]
