"""Fault injection: the knobs (``Faults``) and the responses a faulty provider or proxy gives."""

from __future__ import annotations

from dataclasses import dataclass

from simulators.workos.wire import REASONS, RESET, Response

__all__ = ["POISONS", "Faults", "broken", "fault_response", "poison"]


@dataclass(frozen=True)
class Faults:
    """Fault knobs; rates are fractions of ``/events`` requests. Replace ``simulator.faults`` to change them.

    ``error_rate``: 500/502/503 in rotation. ``rate_limit_rate``: 429 with ``Retry-After: retry_after``.
    ``timeout_rate``: wait ``slow_seconds`` before answering normally. ``broken_rate``: a 200 whose body
    is truncated, not JSON, or shorter than its Content-Length (rotating). ``reset_rate``: the connection
    is reset without a response. ``repeat_boundary``: a page requested with ``after=X`` starts with X
    again (asc order). ``stuck_after``: once a request has ``after=<id>``, every later ``/events``
    response repeats that same page. ``latency``: seconds every ``/events`` answer waits, as a real API
    over the internet does (benchmarks of prefetching).

    ``expired_before``: an ``after`` id that sorts at or before this one is refused with ``expired_status``
    (400 or 422, ``{"errors":[{"code":"invalid","field":"after"}]}``), as WorkOS refuses an expired or
    unknown cursor; ``range_start`` requests still work. ``stale_events``: a page asked ``after=X`` (asc)
    ends with up to this many of the events just before X, as a provider listing old events again would
    (the page's last id is then older than X). ``cycle_after``: a page asked ``after=<id>`` is answered with
    the stream's first page again, whose ``list_metadata.after`` moves on: a client that follows the
    provider's ids walks in a circle (every ``after`` differs, the sequence repeats).

    ``newest_first``: every page is listed newest first whatever ``order`` asks (``desc``: ``after=X`` then
    gives events older than X), as WorkOS's documented default is and as users report ``order`` being ignored.

    ``poison_every``: every n-th event of the stream (by position, so the same ones on every request) is
    served broken, in rotation (``poison``): a NUL in its data, an unpaired surrogate, nesting 3,000 levels
    deep, no ``data`` field, not an object at all (a list). The rest of the stream is served as it is.
    """

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    timeout_rate: float = 0.0
    slow_seconds: float = 5.0
    broken_rate: float = 0.0
    reset_rate: float = 0.0
    repeat_boundary: bool = False
    stuck_after: str | None = None
    latency: float = 0.0
    expired_before: str | None = None
    expired_status: int = 400
    stale_events: int = 0
    cycle_after: str | None = None
    poison_every: int = 0
    newest_first: bool = False

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.rate_limit_rate, self.timeout_rate, self.broken_rate, self.reset_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must each be within [0, 1] and sum to at most 1")
        if self.retry_after < 0 or self.slow_seconds < 0 or self.latency < 0:
            raise ValueError("retry_after, slow_seconds and latency must not be negative")
        if self.expired_status not in (400, 422) or self.stale_events < 0 or self.poison_every < 0:
            raise ValueError("expired_status must be 400 or 422, stale_events and poison_every not negative")

    def draw(self, uniform: float) -> str | None:
        """The fault for one request given a uniform draw in [0, 1), or None."""
        edge = 0.0
        for name, rate in (("reset", self.reset_rate), ("timeout", self.timeout_rate),
                           ("rate_limit", self.rate_limit_rate), ("error", self.error_rate),
                           ("broken", self.broken_rate)):
            edge += rate
            if uniform < edge:
                return name
        return None



def fault_response(fault: str, faults: Faults, turn: int) -> Response:
    """The response of a ``reset``, ``rate_limit`` or ``error`` fault; ``turn`` counts earlier errors."""
    if fault == "reset":
        return RESET
    if fault == "rate_limit":
        wait = faults.retry_after
        text = str(int(wait)) if float(wait).is_integer() else f"{wait:g}"
        return Response(429, b'{"message":"Too many requests"}', headers=(("Retry-After", text),))
    status = (500, 502, 503)[turn % 3]
    if status == 502:  # proxies answer in HTML: clients must not assume a JSON error body
        return Response(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
    return Response(status, b'{"message":"%s"}' % REASONS[status].encode())


def broken(response: Response, turn: int) -> Response:
    """A 200 spoiled one of three ways, in rotation by ``turn``."""
    body, variant = response.body, turn % 3
    if variant == 0:  # a valid prefix, correctly framed: the JSON decoder must fail
        return Response(200, body[:max(1, len(body) // 2)])
    if variant == 1:
        return Response(200, b'{"object":"list","data":[<!-- upstream error -->')
    return Response(200, body, send_only=len(body) // 2)  # framing says more than arrives


#: The ways ``poison`` breaks an event, in rotation.
POISONS = ("nul", "surrogate", "deep", "no_data", "not_object")


def poison(body: bytes, turn: int) -> bytes:
    """One event's JSON ``body`` broken the ``turn``-th way of ``POISONS`` (see ``Faults.poison_every``)."""
    kind = POISONS[turn % len(POISONS)]
    if kind == "not_object":  # a list quoting the turn: not an event, yet not like the other ones
        return b'["poisoned event",%d]' % turn
    if kind == "no_data":
        return body.replace(b'"data":', b'"dat_":', 1)
    value = {"nul": b'"Ada\\u0000"', "surrogate": b'"\\ud800Ada"',
             "deep": b"[" * 3000 + b"]" * 3000}[kind]
    return body.replace(b'"data":{', b'"data":{"poison":' + value + b",", 1)
