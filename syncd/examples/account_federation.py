"""Account federation: when WorkOS creates a user, add them to Intercom, tell Slack, and add them to Close.

The three calls run in parallel, each as a durable step with its own retries: if Close is down, Intercom
and Slack are not called again when the run is retried — their results are stored. Each call carries an
``Idempotency-Key`` derived from the run and the step, so Intercom and Close can drop a repeat.

Configure (``syncd demo --examples`` points all three at the local sink simulator)::

    SYNCD_WORKFLOWS=syncd.examples.account_federation
    SYNCD_INTEGRATION_INTERCOM_URL=https://api.intercom.io      SYNCD_INTEGRATION_INTERCOM_TOKEN=…
    SYNCD_INTEGRATION_CLOSE_URL=https://api.close.com/api/v1    SYNCD_INTEGRATION_CLOSE_TOKEN=…
    SYNCD_SLACK_WEBHOOK_URL=https://hooks.slack.com/services/…
"""

from __future__ import annotations

from typing import Any

from connectors import workos
from syncd import workflow
from syncd.contracts import Event
from syncd.workflows import Context


@workflow(name="account-federation", on=workos.events("user.created"), version="1.0.0", retries=5)
def federate(event: Event, ctx: Context) -> None:
    user = event.data
    name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p) or user.get("email", "")

    def intercom() -> Any:
        response = ctx.http("intercom").post("/contacts", json={
            "role": "user", "external_id": user["id"], "email": user.get("email"), "name": name})
        return {"status": response.status_code}

    def close() -> Any:
        response = ctx.http("close").post("/lead/", json={
            "name": name, "contacts": [{"name": name, "emails": [{"email": user.get("email")}]}],
            "custom": {"workos_user_id": user["id"]}})
        return {"status": response.status_code}

    def slack() -> Any:
        return ctx.slack.post(text=f"New user {name} <{user.get('email')}> signed up")

    results = ctx.parallel([("intercom", intercom), ("slack", slack), ("close", close)], retries=3)
    ctx.logger.info("federated %s: %s", user["id"], results)
