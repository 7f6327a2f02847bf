"""The dashboard's actions (POST, behind the gate and the origin rule of ``access``): sign in and out,
replay one dead run or all those a filter picks (``syncd.ops.replay``, the path of ``syncd replay``), bring a
failed run's retry forward (``replay.retry_now``: the queue runs it next), pause and resume a cursor.
Without JavaScript each answers 303 to the page it came from; a Replay button sent by htmx gets its run's
new row instead."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from syncd.contracts import RunKey
from syncd.ops.dashboard.access import COOKIE, session_value, token_matches
from syncd.ops.dashboard.render import SECURITY_HEADERS, page
from syncd.ops.replay import Selection, replay_dead, retry_now
from syncd.store.pause import pause_source, resume_source

if TYPE_CHECKING:
    from syncd.ops.dashboard import Dashboard, Form

log = logging.getLogger("syncd.dashboard")

NOTICE_PARAMS = ("replayed", "succeeded", "retried")


def see_other(target: str, **notice: int) -> Response:
    """303 to ``target`` (a path of the dashboard), with ``notice`` replacing earlier notice parameters."""
    from syncd.ops.dashboard import safe_next

    parts = urlsplit(safe_next(target))
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in NOTICE_PARAMS]
    query += [(k, str(v)) for k, v in notice.items()]
    url = parts.path + (f"?{urlencode(query)}" if query else "")
    return RedirectResponse(url, 303, headers=SECURITY_HEADERS)


class Actions:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dash = dashboard

    def sign_in(self, request: Request, form: Form) -> Response:
        from syncd.ops.dashboard import safe_next, sign_in_form

        token = self.dash.token
        if token is None:
            return see_other("/")
        if not token_matches(token, form.get("token", "")):
            log.warning("dashboard sign-in with a wrong token")
            return sign_in_form(request, wrong=True)
        answer = see_other(safe_next(form.get("next")))
        answer.set_cookie(COOKIE, session_value(token), httponly=True, samesite="strict", path="/",
                          secure=request.url.scheme == "https")
        return answer

    def sign_out(self, request: Request, form: Form) -> Response:
        answer = see_other("/signin")
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    def replay(self, request: Request, form: Form) -> Response:
        """Replay one dead run at once, like ``syncd replay --event ID`` narrowed to its workflow and stream."""
        workflow, stream, event_id = form.get("workflow", ""), form.get("stream", ""), form.get("event_id", "")
        if not (workflow and stream and event_id):
            return Response("workflow, stream and event_id are required\n", 400, headers=SECURITY_HEADERS)
        report = replay_dead(self.dash.engine, Selection(workflow=workflow, source=stream, event_id=event_id))
        outcome = next((r for r in report.runs if (r.workflow, r.stream, r.event_id) == (workflow, stream,
                                                                                        event_id)), None)
        log.info("dashboard replayed %s on %s %s: %s", workflow, stream, event_id,
                 outcome.status if outcome else "not dead any more")
        if request.headers.get("hx-request"):
            return page("replayed_row.html", workflow=workflow, stream=stream, event_id=event_id, outcome=outcome)
        return see_other(form.get("back", "/runs"), replayed=len(report.runs), succeeded=report.succeeded)

    def retry(self, request: Request, form: Form) -> Response:
        """Replay a failed run now: its retry, which the queue holds, is brought forward (``replay.retry_now``);
        the page then shows it due now (or already run by a worker)."""
        workflow, stream, event_id = form.get("workflow", ""), form.get("stream", ""), form.get("event_id", "")
        if not (workflow and stream and event_id):
            return Response("workflow, stream and event_id are required\n", 400, headers=SECURITY_HEADERS)
        due = retry_now(self.dash.engine, RunKey(workflow, stream, event_id))
        if request.headers.get("hx-request"):
            return page("retried_row.html", workflow=workflow, stream=stream, event_id=event_id, due=due)
        return see_other(form.get("back", "/runs"), retried=int(due))

    def replay_all(self, request: Request, form: Form) -> Response:
        """Replay every dead run of the confirmed filter (workflow and source; none: every dead run)."""
        workflow, source = form.get("workflow") or None, form.get("source") or None
        report = replay_dead(self.dash.engine, Selection(workflow=workflow, source=source))
        log.info("dashboard replayed %d dead run(s): %d succeeded", len(report.runs), report.succeeded)
        back = "/runs?" + urlencode({k: v for k, v in (("status", "dead"), ("workflow", workflow),
                                                        ("source", source)) if v})
        return see_other(back, replayed=len(report.runs), succeeded=report.succeeded)

    def pause(self, request: Request, form: Form) -> Response:
        key = form.get("key", "")
        if pause_source(self.dash.db, key, self.dash.now()):
            log.info("dashboard paused %s", key)
        return see_other("/")

    def resume(self, request: Request, form: Form) -> Response:
        key = form.get("key", "")
        if resume_source(self.dash.db, key, self.dash.now()):
            log.info("dashboard resumed %s", key)
        return see_other("/")
