"""Acme's workflows. ``SYNCD_WORKFLOWS=acme_workflows.workflows`` registers them.

``acme_signups`` is a table of Acme's own database (the one in ``DATABASE_URL``), created by Acme's
migrations, not by syncd::

    CREATE TABLE acme_signups (
        user_id       TEXT PRIMARY KEY,
        signed_up_at  TIMESTAMP NOT NULL
    );
"""

from __future__ import annotations

import sqlalchemy as sa

from connectors import workos
from syncd import workflow
from syncd.contracts import Event
from syncd.workflows import Context

#: ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL): a replayed event changes nothing.
RECORD = sa.text("INSERT INTO acme_signups (user_id, signed_up_at) VALUES (:user_id, :at) "
                 "ON CONFLICT (user_id) DO NOTHING")


@workflow(name="acme.record_signup", on=workos.events("user.created"), version="1.0.0")
def record_signup(event: Event, ctx: Context) -> None:
    """One row per WorkOS user created, committed with the event (no e-mail address is kept)."""
    ctx.db.execute(RECORD, {"user_id": event.data["id"], "at": event.occurred_at})
