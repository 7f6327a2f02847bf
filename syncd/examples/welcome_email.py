"""Welcome email: when a row is inserted into your ``users`` table, wait 30 minutes, send a welcome email
unless it was already sent, mark the row, then tell Slack and register the user with Intercom.

The table lives in your own database (the one in ``DATABASE_URL``); nothing is opened to the internet::

    CREATE TABLE users (
        id          INTEGER PRIMARY KEY,            -- BIGSERIAL / IDENTITY on PostgreSQL
        email       TEXT NOT NULL,
        name        TEXT,
        is_bot      BOOLEAN NOT NULL DEFAULT FALSE,
        email_sent  BOOLEAN NOT NULL DEFAULT FALSE,
        created_at  TIMESTAMP                       -- optional: becomes the event's time
    );

Durability, step by step (see ``syncd.workflows.steps``): the 30-minute wait is a durable sleep (the run is stored
``sleeping`` and resumed by a later tick, across restarts); the email is one memoized step, so it is sent
once even if Slack or Intercom fail afterwards; Slack and Intercom run in parallel, each retried on its own,
each call carrying an ``Idempotency-Key``. ``email_sent`` is written through ``ctx.db`` after the last
step, so it commits with the run — and a user marked by your application in the meantime (or deleted)
gets nothing.

Configure::

    SYNCD_WORKFLOWS=syncd.examples.welcome_email
    SYNCD_SMTP_URL=smtp://user:pass@smtp.example.com:587     SYNCD_SMTP_FROM=hello@example.com
    SYNCD_SLACK_WEBHOOK_URL=https://hooks.slack.com/services/…
    SYNCD_INTEGRATION_INTERCOM_URL=https://api.intercom.io   SYNCD_INTEGRATION_INTERCOM_TOKEN=…
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from connectors.sql import table
from syncd import workflow
from syncd.contracts import Event
from syncd.workflows import Context

DELAY = timedelta(minutes=30)
#: Addresses of automated accounts: bot@…, ci-bot@…, deploy+bot@…, noreply@…, mailer-daemon@…
BOT_EMAIL = re.compile(r"(?:^|[+._-])(?:ro)?bots?@|^(?:no-?reply|mailer-daemon)@", re.IGNORECASE)


def is_bot(user: Mapping[str, Any]) -> bool:
    """A bot by the row's ``is_bot`` flag, or by its address."""
    return bool(user.get("is_bot")) or bool(BOT_EMAIL.search(str(user.get("email") or "")))


def already_emailed(ctx: Context, user_id: Any) -> bool:
    """Read at every execution of the run, so a mark made while the run slept is seen. A deleted user
    counts as done. (Our own mark is written after the last step, so it never hides a half-done run.)"""
    row = ctx.db.execute(sa.text("SELECT email_sent FROM users WHERE id = :id"), {"id": user_id}).first()
    return row is None or bool(row[0])


def display_name(user: Mapping[str, Any]) -> str:
    return str(user.get("name") or user.get("email") or f"user {user.get('id')}")


@workflow(name="welcome-email", on=table("users", event="insert", key="id"), version="1.0.0", retries=5)
def welcome(event: Event, ctx: Context) -> None:
    user = event.data
    if is_bot(user):
        ctx.logger.info("user %s is a bot: no welcome email", user.get("id"))
        return
    if already_emailed(ctx, user["id"]):
        return
    ctx.sleep("wait", DELAY)
    name = display_name(user)
    ctx.send_email(to=str(user["email"]), subject="Welcome aboard!",
                   body=f"Hi {name},\n\nthanks for signing up. Reply to this email if you need anything.\n")
    ctx.db.execute(sa.text("UPDATE users SET email_sent = :sent WHERE id = :id"),
                   {"sent": True, "id": user["id"]})

    def slack() -> Any:
        return ctx.slack.post(text=f"New user {name} <{user['email']}> signed up; welcome email sent")

    def intercom() -> Any:
        response = ctx.http("intercom").post("/contacts", json={
            "role": "user", "external_id": str(user["id"]), "email": user["email"], "name": name})
        return {"status": response.status_code}

    ctx.parallel([("slack", slack), ("intercom", intercom)], retries=3)
