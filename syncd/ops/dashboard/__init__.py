"""The dashboard: sources, runs and the run queue, dead letters with Replay, quarantine, and everything
that happened to one object — server-rendered pages on the HTTP server of ``syncd run`` (``/``, beside
``/healthz`` and ``/metrics``) and of ``syncd ui``.

Stack: Starlette routes (sync handlers run in its thread pool, so database reads never block the event
loop), Jinja2 templates with autoescaping, and htmx (vendored: ``static/htmx.min.js``, htmx.org 2.0.11,
0BSD licence; no CDN, no build step) for the partial updates — the sources table refreshes itself, a
Replay button swaps its run's row for the outcome (a dead run: replayed at once; a failed run: its retry
brought forward, due now for the run queue's workers). Every page works without JavaScript for reading, and
every form posts without it.

Access (``access`` module docstring): with ``SYNCD_UI_TOKEN`` every page, fragment and action needs a
session; without it the dashboard is on only when the server is bound to loopback. Pages show no
secret: errors are one-line summaries with URLs and SQL values scrubbed (``syncd.redaction``); personal
data (payloads, step results) appears only on the search page's event view.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from syncd.contracts import Reads
from syncd.ops.dashboard.access import Gate, is_loopback
from syncd.ops.dashboard.render import SECURITY_HEADERS, page
from syncd.settings import Secret

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncd.engine import SyncEngine
    from syncd.ops.app import App
    from syncd.settings import Settings

log = logging.getLogger("syncd.dashboard")

STATIC = Path(__file__).parent / "static"
#: A form is a few short fields; anything bigger is not one of ours.
MAX_FORM_BYTES = 16_384

Handler = Callable[[Request], Response]
Form = dict[str, str]
Action = Callable[[Request, Form], Response]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Dashboard:
    """What the dashboard reads and acts on. ``host``: where the server is bound (the loopback rule);
    ``keys``: the configured live sources (their health verdicts); ``engine`` replays dead runs with the
    registered workflows; ``db`` takes pauses."""

    reads: Reads
    engine: SyncEngine
    db: Engine
    host: str
    keys: Sequence[str] = ()
    interval: float = 60.0
    token: Secret | None = None
    jaeger_url: str | None = None
    now: Callable[[], datetime] = field(default=_utcnow)

    @property
    def enabled(self) -> bool:
        return self.off_reason() is None

    def off_reason(self) -> str | None:
        """Why the dashboard is not served (bound beyond loopback without a token), or None."""
        if self.token is None and not is_loopback(self.host):
            return (f"dashboard off: SYNCD_HTTP_HOST is {self.host}, not a loopback address, and SYNCD_UI_TOKEN "
                    "is not set; set SYNCD_UI_TOKEN to serve it there, or bind to 127.0.0.1")
        return None

    @property
    def gate(self) -> Gate:
        return Gate(self.token)

    def routes(self) -> list[BaseRoute]:
        from syncd.ops.dashboard.actions import Actions
        from syncd.ops.dashboard.pages import Pages

        gate, pages, actions = self.gate, Pages(self), Actions(self)
        return [
            Route("/", guarded(gate, pages.sources)),
            Route("/fragments/sources", guarded(gate, pages.sources_fragment)),
            Route("/runs", guarded(gate, pages.runs)),
            Route("/runs/replay-all", guarded(gate, pages.confirm_replay_all)),
            Route("/events", guarded(gate, pages.events)),
            Route("/quarantine", guarded(gate, pages.quarantine)),
            Route("/signin", signin_page(gate), methods=["GET"]),
            Route("/signin", posted(gate, actions.sign_in, signed_in=False), methods=["POST"]),
            Route("/signout", posted(gate, actions.sign_out), methods=["POST"]),
            Route("/actions/replay", posted(gate, actions.replay), methods=["POST"]),
            Route("/actions/retry", posted(gate, actions.retry), methods=["POST"]),
            Route("/actions/replay-all", posted(gate, actions.replay_all), methods=["POST"]),
            Route("/actions/pause", posted(gate, actions.pause), methods=["POST"]),
            Route("/actions/resume", posted(gate, actions.resume), methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]


def refused(status: int, why: str) -> Response:
    return PlainTextResponse(f"{why}; nothing was changed\n" if status == 403 else f"{why}\n", status,
                             headers=SECURITY_HEADERS)


def sign_in_form(request: Request, *, status: int = 401, wrong: bool = False) -> Response:
    """The sign-in page: the only page shown without a session, with no data on it."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return page("signin.html", status, next=safe_next(target), wrong=wrong)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this dashboard only (never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return "/" if target.startswith("/signin") else target


def guarded(gate: Gate, handler: Handler) -> Handler:
    """A GET handler behind the gate: 401 (with the sign-in form, or bare for an htmx fragment) without a
    session; 403 for a non-loopback Host without a token."""

    def endpoint(request: Request) -> Response:
        problem = gate.host_problem(request)
        if problem:
            return refused(403, problem)
        if not gate.signed_in(request):
            if request.headers.get("hx-request"):
                return refused(401, "sign in first (reload the page)")
            return sign_in_form(request)
        return handler(request)

    return endpoint


def signin_page(gate: Gate) -> Handler:
    def endpoint(request: Request) -> Response:
        problem = gate.host_problem(request)
        if problem:
            return refused(403, problem)
        return sign_in_form(request, status=200)

    return endpoint


def posted(gate: Gate, action: Action, *, signed_in: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """A POST behind the gate: the host rule, then the session (401), then the origin rule (403); the
    action (in the thread pool) gets the form's fields, each its first value."""

    async def endpoint(request: Request) -> Response:
        problem = gate.host_problem(request)
        if problem:
            return refused(403, problem)
        if signed_in and not gate.signed_in(request):
            return refused(401, "sign in first")
        problem = gate.origin_problem(request)
        if problem:
            log.warning("dashboard refused a POST to %s: %s", request.url.path, problem)
            return refused(403, f"refused: {problem}")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return refused(413, "form too large")
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        return await run_in_threadpool(action, request, fields)

    return endpoint


def dashboard_for(settings: Settings, app: App, *, host: str | None = None) -> Dashboard:
    """The dashboard of ``app`` as ``settings`` configure it (``host``: where the server is bound)."""
    return Dashboard(reads=app.reads, engine=app.engine, db=app.db, host=host or settings.http_host,
                     keys=[c.key for c in app.connectors], interval=settings.interval_seconds,
                     token=settings.ui_token, jaeger_url=settings.jaeger_url, now=app.engine.clock.now)


__all__ = ["Dashboard", "dashboard_for"]
