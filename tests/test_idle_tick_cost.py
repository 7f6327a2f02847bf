"""What makes an idle tick cheap (issue 28) must not change what it sends or writes.

- ``syncd.http.send`` builds a path with params into one URL (parsed once): the same URL httpx builds
  → ``test_send_builds_the_url_httpx_would``
- the statements of a tick are built once per shape: a claim, a cursor move, a release with its tick record
  write what they wrote before, fenced as before, on both databases → ``test_a_tick_*``
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from syncd.contracts import CursorSpec, FakeClock, Skip, SkipReason, TickRecord
from syncd.errors import LeaseLostError
from syncd.http import make_client, send
from syncd.store import SqlStore
from syncd.store.db import create_engine
from syncd.store.schema import migrate
from syncd.store.sqlstore import SqlLease
from syncd.store.tables import ticks

PARAMS: list[tuple[str, str | int | float | bool | None]] = [
    ("state", "all"), ("since", "2026-01-02T03:04:05Z"), ("types[]", "customer.created"),
    ("q", "a b+c/d?é&x=1"), ("per_page", "100")]


@pytest.mark.parametrize("base", ["http://127.0.0.1:8123", "https://api.example.com/api/v3/",
                                  "https://api.example.com/v1?key=k"])
def test_send_builds_the_url_httpx_would(base: str) -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(304)

    client = make_client(base, headers={"Accept": "application/json"}, timeout=5,
                         transport=httpx.MockTransport(handler))
    with client:
        expected = client.build_request("GET", "/repos/o/r/issues", params=PARAMS).url
        response = send(client, "s", "GET", "/repos/o/r/issues", params=PARAMS, headers={"If-None-Match": "x"})
    assert response.status_code == 304 and response.request.headers["If-None-Match"] == "x"
    assert seen == [expected] and str(seen[0]) == str(expected)


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_tick_claims_moves_releases_and_records_in_fenced_statements(db_url: str) -> None:
    db = create_engine(db_url)
    store = SqlStore(db)
    try:
        migrate(db)
        clock = FakeClock(T0)
        spec = CursorSpec("src", "src", None, None)
        lease = store.claim(spec, owner="a", lease_seconds=60, clock=clock)
        assert isinstance(lease, SqlLease) and lease.cursor is None and lease.token == 1
        refused = store.claim(spec, owner="b", lease_seconds=60, clock=clock)
        assert isinstance(refused, Skip) and refused.reason is SkipReason.LEASE_HELD
        with lease.page("src") as txn:
            txn.advance("c1", meta={"remaining": 5}, new_events=2)
        tick = TickRecord("src", "a", T0, T0 + timedelta(seconds=1), True, 1, 2, 2, 0, 0, 0, 0.5, None)
        lease.release(tick, succeeded=True)
        row = store.source("src")
        assert row is not None and row.cursor == "c1" and row.meta == {"remaining": 5} and row.events_seen == 2
        assert row.lease_owner is None and row.last_success_at == T0 + timedelta(seconds=1)
        with db.connect() as conn:
            assert conn.execute(ticks.select()).mappings().one()["events"] == 2
        # a stale holder can never move the cursor: the next claim's token fences the old lease out
        clock.advance(120)
        again = store.claim(spec, owner="b", lease_seconds=60, clock=clock)
        assert isinstance(again, SqlLease) and again.token == 2 and again.cursor == "c1"
        with pytest.raises(LeaseLostError), lease.page("src") as txn:
            txn.advance("stale", meta=None, new_events=0)
        lease.release()  # fenced: the old token frees nothing
        row = store.source("src")
        assert row is not None and row.cursor == "c1" and row.lease_owner == "b"
        again.release()
    finally:
        store.close()
        db.dispose()
