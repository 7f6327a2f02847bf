"""Who may see the dashboard and act on it (issue #22, item 2).

- With ``SYNCD_UI_TOKEN``: every page, fragment and action needs a session, got by signing in with the
  token (``POST /signin``), or the token itself as ``Authorization: Bearer …`` (scripts). A request
  without either gets 401: a page gets the sign-in form as its body, never data. The session cookie holds
  an HMAC of the token, never the token, so changing the token signs everybody out; it is ``HttpOnly``
  and ``SameSite=Strict``.
- Without a token the dashboard is served only on a loopback address (see ``Dashboard.off_reason``), and
  only to requests whose ``Host`` is a loopback name, so a web page cannot reach it by DNS rebinding.
- Every POST (actions, sign-in, sign-out) must come from the dashboard's own origin: a browser's
  ``Origin`` (or ``Referer``) must name the host the request was sent to, and ``Sec-Fetch-Site``, when
  sent, must be ``same-origin``. SameSite cookies alone are not enough (a sibling subdomain is
  "same-site"). A refused POST gets 403 and changes nothing; the session stays signed in.
  A POST with neither header is a script's, accepted only with the bearer token (or without a token).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.requests import Request

from syncd.settings import Secret

COOKIE = "syncd_ui_session"
LOOPBACK_NAMES = ("localhost", "localhost.")


def session_value(token: Secret) -> str:
    """What the session cookie holds: proof of the token, from which the token cannot be recovered."""
    return hmac.new(token.reveal().encode(), b"syncd dashboard session v1", hashlib.sha256).hexdigest()


def token_matches(token: Secret, given: str) -> bool:
    return hmac.compare_digest(token.reveal().encode(), given.encode())


def is_loopback(host: str) -> bool:
    """A host name or address that only this machine can reach."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(netloc: str) -> str:
    try:
        return urlsplit(f"//{netloc}").hostname or ""
    except ValueError:
        return ""


class Gate:
    """The access rules of one dashboard: ``token`` None means the loopback-only mode."""

    def __init__(self, token: Secret | None) -> None:
        self.token = token
        self._session = session_value(token) if token is not None else None

    def by_bearer(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return self.token is not None and scheme.lower() == "bearer" and token_matches(self.token, given.strip())

    def signed_in(self, request: Request) -> bool:
        if self.token is None:
            return True
        cookie = request.cookies.get(COOKIE, "")
        assert self._session is not None
        return hmac.compare_digest(cookie.encode(), self._session.encode()) or self.by_bearer(request)

    def host_problem(self, request: Request) -> str | None:
        """Without a token, a request must name a loopback host (no DNS rebinding)."""
        if self.token is None and not is_loopback(_host_name(request.headers.get("host", ""))):
            return "this dashboard answers only to a loopback host name (it has no SYNCD_UI_TOKEN)"
        return None

    def origin_problem(self, request: Request) -> str | None:
        """Why a POST is refused as cross-site, or None (module docstring: the rule)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"a {site} request"
        claimed = request.headers.get("origin") or request.headers.get("referer")
        if claimed is None or claimed == "null":
            scripted = self.token is None or self.by_bearer(request)
            return None if scripted and claimed is None else "no Origin header"
        try:
            parts = urlsplit(claimed)
            netloc = parts.netloc.lower()
        except ValueError:
            return "an unreadable Origin header"
        if parts.scheme not in ("http", "https") or netloc != request.headers.get("host", "").lower():
            return "another site's Origin"
        return None

