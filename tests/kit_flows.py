"""A user's workflow module, as their own test suite would test it with ``syncd.testing`` (test_testing_kit).

It registers into a registry of its own, not ``syncd.workflow``'s default one: the suite's other tests
build apps from the default registry in the same process. (``test_readme_examples`` runs modules using
``@syncd.workflow`` itself, in a process of their own.)"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from connectors import github, workos
from syncd.workflows import Registry

registry = Registry()
workflow = registry.workflow

SCHEMA = """
CREATE TABLE welcome_queue (user_id TEXT PRIMARY KEY, email TEXT NOT NULL);
CREATE TABLE triaged (issue_id INTEGER PRIMARY KEY, title TEXT);
"""


@workflow(name="kit-welcome", on=workos.events("user.created"))
def welcome(event, ctx):  # untyped, as a user may write it
    ctx.db.execute(sa.text("INSERT INTO welcome_queue (user_id, email) VALUES (:id, :email) ON CONFLICT DO NOTHING"),
                   {"id": event.data["id"], "email": event.data["email"]})


@workflow(name="kit-fan-out", on=workos.events("organization.created"))
def fan_out(event, ctx):
    org = event.data
    ctx.parallel([
        (name, lambda name=name: ctx.http(name).post("/orgs", json={"id": org["id"], "to": name}).json())
        for name in ("crm", "billing", "analytics")
    ])


@workflow(name="kit-fails", on=workos.events("user.deleted"), retries=2)
def fails(event, ctx):
    raise RuntimeError(f"cannot handle {event.type}")


@workflow(name="kit-nudge", on=workos.events("organization_membership.created"))
def nudge(event, ctx):
    ctx.sleep("wait", timedelta(minutes=30))
    ctx.step("ping", lambda: ctx.http("crm").post("/nudge", json={"id": event.data["id"]}).json())
    ctx.slack.send_message(text=f"nudged {event.data['id']}")


@workflow(name="kit-triage", on=github.issues(repo="acme/web", pull_requests=False))
def triage(event, ctx):
    ctx.db.execute(sa.text("INSERT INTO triaged (issue_id, title) VALUES (:id, :title) "
                           "ON CONFLICT (issue_id) DO UPDATE SET title = excluded.title"),
                   {"id": event.data["id"], "title": event.data["title"]})
