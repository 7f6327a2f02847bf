"""``App.close`` closes everything the App opened even when one connector's ``close`` raises (session 10's finding:
the first error used to skip the others, leaving the owner-lock session and the pool's connections open)."""
from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from connectors.workos.client import WorkOSConnector
from simulators.workos import WorkOSSimulator
from syncd.ops.app import App
from syncd.settings import Secret
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, settings_for


class CloseFails(WorkOSConnector):
    def close(self) -> None:
        super().close()
        raise OSError("the connector's close failed")


class Closes(WorkOSConnector):
    closed = False

    def close(self) -> None:
        super().close()
        self.closed = True


def other_backends(url: str) -> int:
    """Connections to the test's database other than this one's (PostgreSQL)."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_a_connector_whose_close_raises_does_not_keep_the_rest_open(db_url: str, workos_sim: WorkOSSimulator) -> None:
    failing = CloseFails(api_key=Secret(WORKOS_KEY), base_url=workos_sim.url, event_types=["user.created"])
    after = Closes(api_key=Secret(WORKOS_KEY), base_url=workos_sim.url, event_types=["user.deleted"])
    app = App.build(settings_for(db_url), registry=Registry(), connectors=[failing, after])
    assert app.tick(failing).ok and app.tick(after).ok  # the pool and (PostgreSQL) the owner-lock session are in use
    postgres = db_url.startswith("postgresql")
    if postgres:
        assert other_backends(db_url) > 0
    with pytest.raises(OSError, match="close failed"):
        app.close()
    assert after.closed  # the connector after the failing one was closed too
    if postgres:
        assert other_backends(db_url) == 0  # the store's session and the pool's connections are gone
