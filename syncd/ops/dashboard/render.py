"""Templates and the filters they use. Autoescaping is on for every template; values that come from
providers (errors, cursors, meta) go through :mod:`syncd.redaction` before they are shown."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from syncd.ops.statusparts import cursor_text
from syncd.redaction import error_summary, printable

#: Every answer: never cached, never framed (a framed page could trick a click on Replay), scripts and
#: styles only from the dashboard itself.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "never"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _error(value: str | None) -> str:
    return error_summary(value) if value else ""


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("syncd.ops.dashboard", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(when=_when, seconds=_seconds, pretty=_pretty, error=_error, cursor=cursor_text,
                       printable=printable)
    return env


ENV = _environment()


def page(name: str, code: int = 200, /, **context: Any) -> HTMLResponse:
    """Render template ``name`` as an answer (HTTP status ``code``) with :data:`SECURITY_HEADERS`."""
    return HTMLResponse(ENV.get_template(name).render(**context), code, headers=SECURITY_HEADERS)
