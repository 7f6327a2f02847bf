"""HTTP helpers shared by connectors: one retry policy (stamina), Retry-After parsing, error mapping.

Connectors map status codes to errors with their own policy function; this module turns transport
failures into ``RetryableError`` and retries short waits. Error texts never hold a URL's path or query
(:func:`syncd.redaction.redact_url`): those may carry secrets. Waits longer than ``PAUSE_THRESHOLD_SECONDS``
are not slept here: the error goes up and the engine pauses the source until then.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import stamina

from syncd import jsoncodec, retrylog
from syncd.errors import RetryableError
from syncd.redaction import scrub

T = TypeVar("T")

PAUSE_THRESHOLD_SECONDS = 5.0
#: A provider's wait beyond a day is taken as a day (and a pause time never overflows a datetime).
MAX_RETRY_AFTER_SECONDS = 86_400.0
DEFAULT_ATTEMPTS = 4


def split_base_url(url: str) -> tuple[str, httpx.QueryParams]:
    """A base URL without its query, and the query as parameters for every request.

    httpx joins a relative path to a base URL's *raw* path, query included (``/v1?key=k`` + ``users``
    gives ``/v1?key=k/users``); apart, the path joins the path and the query stays a query.
    """
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None)), parsed.params


class _NoCookies(httpx.Cookies):
    """A cookie store that never stores: no provider API syncd talks to needs cookies, and keeping them
    costs every response a ``urllib`` request built for the cookie jar (about 6% of an idle poll)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Nothing from ``Set-Cookie`` is kept."""

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        raise TypeError("provider clients keep no cookies")

    def update(self, cookies: Any = None) -> None:  # type: ignore[override]
        if cookies:
            raise TypeError("provider clients keep no cookies")


class ProviderClient(httpx.Client):
    """``httpx.Client`` without cookies (:class:`_NoCookies`): a provider's ``Set-Cookie`` is ignored, and
    no ``Cookie`` header is ever sent. Setting ``cookies`` is refused rather than silently dropped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise TypeError("provider clients keep no cookies")


def make_client(base_url: str, *, headers: dict[str, str], timeout: float,
                transport: httpx.BaseTransport | None = None, max_connections: int = 4) -> httpx.Client:
    """An httpx client with explicit timeouts on every phase and keep-alive; redirects are not followed;
    cookies are neither kept nor sent (:class:`ProviderClient`). A query in ``base_url`` is sent with every
    request (:func:`split_base_url`). ``max_connections``: more for a client shared by many sources."""
    base, params = split_base_url(base_url)
    return ProviderClient(
        base_url=base, params=params, headers=headers, transport=transport, follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds (0 to a day): a number or an HTTP date. None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf", "nan" or 1e20 would overflow the pause time computed from it
        return min(MAX_RETRY_AFTER_SECONDS, max(0.0, seconds)) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER_SECONDS, max(0.0, (when - (now or datetime.now(UTC))).total_seconds()))


def retry_hook(exc: Exception) -> bool | float:
    """stamina backoff hook: retry transient errors; honour short Retry-After; leave long waits to the engine."""
    if not isinstance(exc, RetryableError):
        return False
    if exc.retry_after is None:
        return True
    if exc.retry_after > PAUSE_THRESHOLD_SECONDS:
        return False
    return exc.retry_after


def with_retries(fn: Callable[[], T], *, attempts: int = DEFAULT_ATTEMPTS, timeout: float = 60.0) -> T:
    """Call ``fn`` with exponential backoff and jitter on ``RetryableError`` (bounded in count and time).
    Each retry logs what it retries (``syncd.retrylog``)."""
    retrylog.install()
    with retrylog.scope(attempts):
        for attempt in stamina.retry_context(on=retry_hook, attempts=attempts, timeout=timeout,
                                             wait_initial=0.2, wait_max=5.0, wait_jitter=0.5):
            with attempt:
                return fn()
    raise AssertionError("unreachable: stamina re-raises the last error")


def send(client: httpx.Client, source: str, method: str, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
    """One request; transport failures (connect, timeout, reset, protocol) become ``RetryableError``."""
    retrylog.note_request(source, lambda: client.base_url.join(url).host or None)
    params = kwargs.get("params")
    if params and isinstance(url, str) and url.startswith("/") and not client.params:
        # The URL whole, parsed once: httpx parses a path given with params three times (its own, joined to
        # the base URL, with the params merged), character by character; idle polls are mostly that.
        del kwargs["params"]
        base = str(client.base_url)
        url = httpx.URL(f"{base if base.endswith('/') else base + '/'}{url[1:]}?{httpx.QueryParams(params)}")
    try:
        return client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise RetryableError(source, f"timed out talking to the provider ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise RetryableError(source, f"cannot reach the provider ({type(exc).__name__}: {scrub(str(exc))})") from None


def decode_json(source: str, response: httpx.Response) -> Any:
    """The response body as JSON; a truncated or non-JSON body is transient (retried)."""
    try:
        return jsoncodec.loads(response.content)
    except (ValueError, RecursionError):  # loads cuts deep nesting; RecursionError only from a tiny stack
        raise RetryableError(source, f"invalid JSON in a {response.status_code} response "
                                     f"({len(response.content)} bytes)") from None


def status_error_text(response: httpx.Response) -> str:
    """A short, secret-free description of an error response (provider message if any)."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("error") or "")
            errors = body.get("errors")
            if isinstance(errors, list) and errors:
                fields = ", ".join(f"{e.get('field')}: {e.get('code')}" for e in errors if isinstance(e, dict))
                message = f"{message} ({fields})" if message else fields
    except ValueError:
        pass
    # A provider's message may quote the request's URL (with its query) back: scrubbed like any URL.
    return f"HTTP {response.status_code}" + (f": {scrub(message[:300])}" if message else "")
