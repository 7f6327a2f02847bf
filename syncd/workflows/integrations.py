"""Outbound integrations for workflows: ``ctx.http(name)``, ``ctx.slack.send_message``, ``ctx.send_email``.

Configured by environment, read once into ``syncd.settings.Integrations`` (the only part of the
settings a workflow gets), secrets never logged: ``SYNCD_INTEGRATION_<NAME>_URL`` /
``SYNCD_INTEGRATION_<NAME>_TOKEN`` (Bearer) / ``SYNCD_INTEGRATION_<NAME>_RATE``, ``SYNCD_SLACK_WEBHOOK_URL``
/ ``SYNCD_SLACK_RATE``, ``SYNCD_SMTP_URL`` (``smtp://user:pass@host:587`` uses STARTTLS; ``smtps://``
implicit TLS) and ``SYNCD_SMTP_FROM``.

Every call carries a key derived from the run and the step (``Idempotency-Key`` header, or the email's
``Message-ID``), so a receiver can drop the repeat of a call whose result syncd could not record before
a crash. The HTTP clients are shared by every run of the process (``syncd.workflows.outbound.Outbound``):
the key is computed as each request is sent, from the run and step executing in that thread.

Every HTTP integration goes through :func:`outbound_client`, which gives the same contract to each:
only a 2xx answer is a delivery (redirects are not followed; a 3xx, 4xx or 5xx raises
:class:`IntegrationError`, so the step's retries apply and then the run fails), except a 429 or 503 with
``Retry-After``, which pauses the integration and defers the run (``outbound.Deferred``); calls wait
for the integration's rate limit, if it has one; and no error text holds the URL's path or query — a
Slack webhook's path is its secret, an integration's query may hold a key
(:func:`syncd.redaction.redact_url`). Transport errors (connect, timeout) are re-raised as
:class:`IntegrationError` with the same redaction.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx

from syncd.errors import ConfigError
from syncd.http import parse_retry_after, split_base_url
from syncd.redaction import redact_url, scrub
from syncd.settings import HttpIntegration, Rate
from syncd.workflows.outbound import Outbound, RateLimiter, current_run
from syncd.workflows.steps import RunKey, current_step

if TYPE_CHECKING:
    from syncd.workflows import Context

TIMEOUT = httpx.Timeout(15.0, connect=5.0)
#: Connections per integration client. One client serves every worker thread and each thread's
#: ``ctx.parallel`` branches; a request beyond this waits for a free connection (``TIMEOUT``'s pool phase).
POOL = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30.0)
#: Answers whose ``Retry-After`` pauses the integration instead of failing the call.
PAUSING_STATUSES = frozenset({429, 503})


class IntegrationError(httpx.HTTPError):
    """An integration call that did not deliver: a non-2xx answer (``response`` set) or a transport
    failure. Its text names the method, the redacted URL and the status or failure, never a secret."""

    def __init__(self, message: str, *, request: httpx.Request, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.request = request
        self.response = response


def outbound_client(*, base_url: str = "", headers: dict[str, str] | None = None,
                    request_hooks: list[Callable[[httpx.Request], None]] | None = None,
                    response_hooks: list[Callable[[httpx.Response], None]] | None = None) -> httpx.Client:
    """The client of every HTTP integration (module docstring), shared by threads: idempotency key on
    each request, redirects not followed, non-2xx and transport failures raised as
    :class:`IntegrationError`. A query in ``base_url`` is sent with every request, and relative paths
    join its path. ``request_hooks`` run after the key is set; ``response_hooks`` before the 2xx check."""
    base, params = split_base_url(base_url) if base_url else ("", None)
    return _OutboundClient(base_url=base, params=params, headers={"User-Agent": "syncd/0.1", **(headers or {})},
                           timeout=TIMEOUT, follow_redirects=False, limits=POOL,
                           event_hooks={"request": [_idempotency, *(request_hooks or ())],
                                        "response": [*(response_hooks or ()), _require_success]})


class _OutboundClient(httpx.Client):
    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            return super().send(request, **kwargs)
        except httpx.TransportError as exc:
            raise IntegrationError(f"{request.method} {redact_url(str(request.url))} failed: "
                                   f"{type(exc).__name__}: {scrub(str(exc))}", request=request) from None


def integration_client(name: str, integration: HttpIntegration, limiter: RateLimiter, slot: str) -> httpx.Client:
    """The shared client of ``ctx.http(name)``: :func:`outbound_client` on the integration's URL, its
    token as a Bearer, its calls held to its rate and its ``Retry-After`` (``slot``: its limiter name)."""
    headers = {"Authorization": f"Bearer {integration.token.reveal()}"} if integration.token else {}
    label = f"integration {name.lower()!r}"
    return outbound_client(base_url=integration.url, headers=headers,
                           request_hooks=[_flow(limiter, slot, integration.rate, label)],
                           response_hooks=[_retry_after(limiter, slot, label)])


def slack_client(rate: Rate | None, limiter: RateLimiter) -> httpx.Client:
    """The shared client of ``ctx.slack`` (requests name the webhook URL in full)."""
    return outbound_client(request_hooks=[_flow(limiter, "slack", rate, "the Slack webhook")],
                           response_hooks=[_retry_after(limiter, "slack", "the Slack webhook")])


def _idempotency(request: httpx.Request) -> None:
    run = current_run.get()
    if run is None:
        raise RuntimeError("an integration call outside a workflow run: no run to derive its Idempotency-Key "
                           "from (use ctx.http or ctx.slack inside the workflow)")
    request.headers.setdefault("Idempotency-Key", run.idempotency_key(current_step.get() or "http"))


def _flow(limiter: RateLimiter, slot: str, rate: Rate | None, label: str) -> Callable[[httpx.Request], None]:
    def hook(request: httpx.Request) -> None:
        limiter.acquire(slot, rate, label=label)  # may sleep briefly, or raise Deferred

    return hook


def _retry_after(limiter: RateLimiter, slot: str, label: str) -> Callable[[httpx.Response], None]:
    def hook(response: httpx.Response) -> None:
        if response.status_code not in PAUSING_STATUSES:
            return
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if wait is not None:
            response.read()  # the connection goes back to the pool
            raise limiter.pause(slot, wait, label=label, status=response.status_code)

    return hook


def _require_success(response: httpx.Response) -> None:
    if not response.is_success:
        response.read()
        moved = f" (redirect to {_location(response)}, not followed)" if response.is_redirect else ""
        raise IntegrationError(f"{response.request.method} {redact_url(str(response.request.url))} answered "
                               f"{response.status_code}{moved}; only a 2xx answer is a delivery",
                               request=response.request, response=response)


def _location(response: httpx.Response) -> str:
    """Where a redirect points, redacted (a relative ``Location`` is read against the request's URL)."""
    try:
        return redact_url(str(response.request.url.join(response.headers["Location"])))
    except (KeyError, httpx.InvalidURL):
        return "an unreadable location"


def bound_outbound(ctx: Context) -> Outbound:
    """``ctx``'s shared clients, with ``ctx``'s run as :data:`current_run` of this thread until the run
    ends (``Context.close``): right even where the engine does not set it."""
    current_run.set(ctx.steps.key)
    return ctx.outbound


def unbind_run(key: RunKey) -> None:
    """The run ``key`` ended in this thread: it is no longer the one outbound calls are made for."""
    if current_run.get() == key:
        current_run.set(None)


class Slack:
    """``ctx.slack.send_message(text=..., channel=None)``: a memoized, retried step per call."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def send_message(self, *, text: str, channel: str | None = None, name: str | None = None,
                     retries: int = 3) -> Any:
        """Post to the webhook as its own durable step (named ``slack``, ``slack#2``… unless ``name``)."""
        runtime = self._ctx.steps
        step_name = name or runtime.auto_name("slack")
        return runtime.step(step_name, lambda: self.post(text=text, channel=channel), retries=retries)

    def post(self, *, text: str, channel: str | None = None) -> dict[str, Any]:
        """The bare call, for use inside a step of your own (e.g. one branch of ``ctx.parallel``)."""
        webhook = self._ctx.integrations.slack_webhook_url
        if not webhook:
            raise ConfigError("SYNCD_SLACK_WEBHOOK_URL", "is not set (a Slack incoming-webhook URL)")
        payload: dict[str, Any] = {"text": text}
        if channel:
            payload["channel"] = channel
        response = bound_outbound(self._ctx).slack().post(webhook.reveal(), json=payload)
        return {"status": response.status_code}


def send_email_step(ctx: Context, *, to: str, subject: str, body: str, name: str | None = None,
                    retries: int = 3) -> Any:
    smtp = ctx.integrations.smtp_url
    if not smtp:
        raise ConfigError("SYNCD_SMTP_URL", "is not set (e.g. smtp://user:pass@smtp.example.com:587)")
    runtime = ctx.steps
    step_name = name or runtime.auto_name("email")
    sender = ctx.integrations.smtp_from
    message_id = f"<{runtime.key.idempotency_key(step_name)}@syncd>"

    def send() -> dict[str, Any]:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, to, subject
        message["Message-ID"] = message_id
        message.set_content(body)
        send_smtp(smtp.reveal(), message)
        return {"message_id": message_id, "to": to}

    return runtime.step(step_name, send, retries=retries)


def send_smtp(url: str, message: EmailMessage, timeout: float = 15.0) -> None:
    """Send over SMTP. ``smtp://`` upgrades with STARTTLS when offered (required if credentials are
    given, except on loopback); ``smtps://`` is TLS from the start."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError("SYNCD_SMTP_URL", f"expected smtp:// or smtps://, got {parts.scheme!r}://")
    host = parts.hostname or "localhost"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if parts.scheme == "smtps":
        client = smtplib.SMTP_SSL(host, parts.port or 465, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(host, parts.port or 587, timeout=timeout)
    with client:
        client.ehlo()
        if parts.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        elif parts.scheme == "smtp" and user and host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("SYNCD_SMTP_URL", f"{host} does not offer STARTTLS; refusing to send the password "
                              "in clear (use smtps://)")
        if user:
            client.login(user, password or "")
        client.send_message(message)
