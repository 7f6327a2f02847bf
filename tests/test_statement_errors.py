"""Database errors name the statement's purpose and the event id, never parameter values (issue #17, item 3).

The ledger is made to refuse any payload holding an e-mail (a CHECK constraint on PostgreSQL, whose error
DETAIL quotes the whole failing row; a trigger on SQLite), so a real driver error carries a user's e-mail.
The tick fails with "ledger insert failed for event X: <driver message>", and the address appears nowhere:
not in the tick's result, the cursor's stored error, the tick history, ``syncd status`` or the logs.
"""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa

from connectors.workos import WorkOSConnector
from simulators.httpserver import LoopbackServer
from syncd.contracts import Event
from syncd.engine import SyncEngine
from syncd.ops.status import collect, render
from syncd.settings import Secret
from syncd.store import SqlStore
from syncd.store.connect import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.tables import sources, ticks
from syncd.workflows import Context, Registry, Trigger
from tests.test_quarantine_property import KEY, Feed, Handler, Item, build, dumps, event_text

EMAIL = "ada.lovelace.private@example.org"


def refuse_emails(db: sa.engine.Engine) -> None:
    with db.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE syncd_events ADD CONSTRAINT no_emails "
                                 "CHECK (payload::text NOT LIKE '%@%')"))
        else:
            conn.execute(sa.text("CREATE TRIGGER no_emails BEFORE INSERT ON syncd_events "
                                 "WHEN NEW.payload LIKE '%@%' BEGIN SELECT RAISE(ABORT, 'no e-mails here'); END"))


def test_a_failing_ledger_insert_names_its_purpose_and_event_never_values(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    db = create_engine(db_url)
    migrate(db)
    refuse_emails(db)
    registry = Registry()

    @registry.workflow("record", on=Trigger(provider="workos"))
    def record(event: Event, ctx: Context) -> None:
        pass

    data = dumps({"id": "user_1", "object": "user", "email": EMAIL})
    item = Item(event_text("event_00001", created="2026-03-01T00:00:00Z", data=data), True, "event_00001",
                "event_00001", "event_00001")
    feed = Feed([item])
    caplog.set_level(logging.INFO)
    with LoopbackServer(Handler, context=feed) as server:
        connector = WorkOSConnector(api_key=Secret(KEY), base_url=server.url, event_types=["user.created"])
        store = SqlStore(db)
        result = SyncEngine(store, registry).sync(connector)
        connector.close()
        store.close()  # its owner-lock session: the failed tick's exception cycle would keep it until a gc
    assert not result.ok and result.error is not None
    assert result.error.startswith("StatementError: ledger insert failed for event event_00001: ")
    assert "CheckViolation" in result.error or "IntegrityError" in result.error, result.error
    with db.connect() as conn:
        stored = conn.execute(sa.select(sources.c.last_error)).scalar_one()
        tick_error = conn.execute(sa.select(ticks.c.error)).scalar_one()
    report = collect(SqlReads(db))
    shown = render(report) + json.dumps(report)
    assert stored == result.error and tick_error == result.error
    assert "ledger insert failed for event event_00001" in shown
    for text in (result.error, stored, tick_error, shown, caplog.text):
        assert EMAIL not in text and "example.org" not in text
    db.dispose()


def test_the_purpose_names_several_events_by_their_first_and_last_ids(sqlite_url: str) -> None:
    db = create_engine(sqlite_url)
    migrate(db)
    refuse_emails(db)
    items = [build(n, "good", f"user{n}@example.org", huge=False) for n in (1, 2, 3)]
    with LoopbackServer(Handler, context=Feed(items)) as server:
        connector = WorkOSConnector(api_key=Secret(KEY), base_url=server.url, event_types=["user.created"])
        result = SyncEngine(SqlStore(db), Registry()).sync(connector)
        connector.close()
    assert result.error is not None
    expected = "ledger insert failed for 3 events event_00001 … event_00003: IntegrityError: no e-mails here"
    assert expected in result.error
    assert "@" not in result.error
    db.dispose()
