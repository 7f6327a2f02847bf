"""Outbound integrations for workflows: ``ctx.http(name)``, ``ctx.slack.send_message``, ``ctx.send_email``.

Configured by environment, read once into ``syncd.settings.Integrations`` (the only part of the
settings a workflow gets), secrets never logged: ``SYNCD_INTEGRATION_<NAME>_URL`` /
``SYNCD_INTEGRATION_<NAME>_TOKEN`` (Bearer), ``SYNCD_SLACK_WEBHOOK_URL``, ``SYNCD_SMTP_URL``
(``smtp://user:pass@host:587`` uses STARTTLS; ``smtps://`` implicit TLS) and ``SYNCD_SMTP_FROM``.

Every call carries a key derived from the run and the step (``Idempotency-Key`` header, or the email's
``Message-ID``), so a receiver can drop the repeat of a call whose result syncd could not record before
a crash.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx

from syncd.errors import ConfigError
from syncd.settings import Integrations
from syncd.workflows.steps import RunKey, current_step

if TYPE_CHECKING:
    from syncd.workflows import Context

TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def integration_client(name: str, integrations: Integrations, key: RunKey) -> httpx.Client:
    """An httpx client for one integration. Responses ≥ 400 raise, so the step's retries apply.
    ConfigError naming ``SYNCD_INTEGRATION_<NAME>_URL`` when it is not set."""
    integration = integrations.http_integration(name)
    headers = {"User-Agent": "syncd/0.1"}
    if integration.token:
        headers["Authorization"] = f"Bearer {integration.token.reveal()}"
    return httpx.Client(base_url=integration.url, headers=headers, timeout=TIMEOUT,
                        event_hooks={"request": [_idempotency(key)], "response": [_raise_for_status]})


def _idempotency(key: RunKey) -> Any:
    def hook(request: httpx.Request) -> None:
        request.headers.setdefault("Idempotency-Key", key.idempotency_key(current_step.get() or "http"))

    return hook


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        response.read()
        # The message names the URL's path only: query strings and headers may carry secrets.
        raise httpx.HTTPStatusError(f"{response.request.method} {response.request.url.path} answered "
                                    f"{response.status_code}", request=response.request, response=response)


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
        hooks = {"request": [_idempotency(self._ctx.steps.key)], "response": [_raise_for_status]}
        with httpx.Client(timeout=TIMEOUT, event_hooks=hooks) as client:
            response = client.post(webhook.reveal(), json=payload)
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
