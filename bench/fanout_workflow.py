"""The run-queue scenario's workflow (``SYNCD_WORKFLOWS=bench.fanout_workflow``): every new WorkOS user is
announced to three integrations at once, as the issue's "add a new user to Intercom, Slack and a CRM".

The three calls go to one integration, ``sink`` (``SYNCD_INTEGRATION_SINK_URL``), on three paths; the
benchmark's sink answers each after 250 ms. Each call is its own step, so its result is stored once and
its ``Idempotency-Key`` names the run and the step. The ``X-Bench-Replica`` header
(``SYNCD_REPLICA_ID``) lets the sink count which process made each call: whether runs spread over
replicas or stay on the one that ingested them.
"""

from __future__ import annotations

import os
from typing import Any

from bench.fanout_names import NAME, TARGETS
from connectors import workos
from syncd.workflows import Context, workflow

REPLICA = {"X-Bench-Replica": os.environ.get("SYNCD_REPLICA_ID", "")}


@workflow(name=NAME, on=workos.events("user.created"))
def fanout(event: Any, ctx: Context) -> None:
    user = {"id": event.data["id"], "email": event.data["email"]}
    sink = ctx.http("sink")  # taken here, once: the parallel steps share the run's client

    def call(target: str) -> Any:
        return lambda: sink.post(f"/{target}", json=user, headers=REPLICA).status_code

    ctx.parallel([(target, call(target)) for target in TARGETS])
