"""A daemon walk's idle ticks claim their leases in one statement and release them in one transaction
(issue 28, design idle_batch §3; ``SqlStore.claim_many`` / ``SqlStore.release_many``):

- free and expired live leases are taken (token + 1, the cursor as of the take) by one UPDATE; a new key,
  a paused row, a live holder's lease, a window, a done row are left out and still get their exact
  answer from ``claim`` → ``test_claim_many_takes_free_live_cursors``
- if a concurrent claimer holds a new token's owner lock, nothing is taken and no lock is left held
  → ``test_claim_many_rolls_back_when_an_owner_lock_is_taken``
- the releases (held meta, success, tick records) are written all or nothing: one lease taken over and
  none is written nor freed, the held moves kept for the per-lease releases
  → ``test_release_many_writes_all_or_nothing``
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.contracts import CursorSpec, FakeClock, Skip, SkipReason, TickRecord, Window
from syncd.errors import LeaseLostError
from syncd.store import SqlStore, cursors
from syncd.store.sqlstore import SqlLease
from syncd.store.tables import ticks

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _spec(name: str) -> CursorSpec:
    return CursorSpec(f"github:acme/{name}", f"github:acme/{name}")


def _lease(claimed: SqlLease | Skip) -> SqlLease:
    assert isinstance(claimed, SqlLease), claimed
    return claimed


def _statements(store: SqlStore) -> list[str]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "syncd_sources" in statement.lower() or "syncd_ticks" in statement.lower():
            seen.append(statement.lstrip().split()[0].upper())

    sa.event.listen(store.db, "before_cursor_execute", note)
    return seen


def _tick(key: str, clock: FakeClock) -> TickRecord:
    return TickRecord(key, "a", clock.now(), clock.now(), True, 1, 0, 0, 0, 0, 0, None, None)


def _tick_count(store: SqlStore) -> int:
    with store.db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(ticks)).scalar_one())


@pytest.fixture
def other(store: SqlStore) -> Iterator[SqlStore]:
    """Another replica on the same database (its own owner locks)."""
    made = SqlStore(store.db)
    yield made
    made.close()


def _made(store: SqlStore, clock: FakeClock, *names: str) -> dict[str, SqlLease]:
    """Rows for ``names``, claimed once (the read path) and released with a cursor ``c-<name>``."""
    made = {}
    for name in names:
        lease = _lease(store.claim(_spec(name), owner="a", lease_seconds=60, clock=clock))
        lease.advance_on_release(f"c-{name}", None)
        lease.release()
        made[name] = lease
    return made


def test_claim_many_takes_free_live_cursors(store: SqlStore, other: SqlStore) -> None:
    clock = FakeClock(T0)
    first = _made(store, clock, "free", "expired", "paused", "held", "done")
    expired = _lease(other.claim(_spec("expired"), owner="b", lease_seconds=10, clock=clock))
    held = _lease(other.claim(_spec("held"), owner="b", lease_seconds=600, clock=clock))
    store.record_failure(_spec("paused").key, clock.now(), "slow down", pause_until=T0 + timedelta(seconds=300))
    with store.db.begin() as conn:
        cursors.set_source_fields(conn, _spec("done").key, now=clock.now(), state="done")
    window = CursorSpec("w1", "github:acme/free", Window(T0 - timedelta(days=2), T0 - timedelta(days=1)))
    clock.advance(11)  # "expired"'s holder is alive but silent: its lease is past its expiry
    specs = [_spec(n) for n in ("free", "expired", "paused", "held", "done", "new")] + [window]
    seen = _statements(store)
    leases = store.claim_many(specs, owner="a", lease_seconds=60, clock=clock)
    assert seen == ["UPDATE"]  # one statement for all of them, no SELECT
    assert sorted(leases) == [_spec("expired").key, _spec("free").key]
    assert leases[_spec("free").key].token == first["free"].token + 1
    assert leases[_spec("expired").key].token == expired.token + 1
    assert {lease.cursor for lease in leases.values()} == {"c-free", "c-expired"}
    for lease in leases.values():
        row = store.source(lease.key)
        assert row is not None and row.lease_owner == "a" and row.lease_token == lease.token
        assert row.lease_expires_at == clock.now() + timedelta(seconds=60)
        assert store.owners.holder_alive(lease.key, lease.token)
    # what was left out gets claim's own answer
    paused = store.claim(_spec("paused"), owner="a", lease_seconds=60, clock=clock)
    assert isinstance(paused, Skip) and paused.reason is SkipReason.PAUSED
    assert store.claim(_spec("held"), owner="a", lease_seconds=60, clock=clock) == Skip(SkipReason.LEASE_HELD)
    assert store.claim(_spec("done"), owner="a", lease_seconds=60, clock=clock) == Skip(SkipReason.DONE)
    assert _lease(store.claim(_spec("new"), owner="a", lease_seconds=60, clock=clock)).token == 1
    assert _lease(store.claim(window, owner="a", lease_seconds=60, clock=clock)).token == 1
    assert store.claim(_spec("free"), owner="a", lease_seconds=60, clock=clock) == Skip(SkipReason.LEASE_HELD)
    assert store.claim_many([_spec("free")], owner="a", lease_seconds=60, clock=clock) == {}  # held by us
    for lease in leases.values():
        lease.release()
    held.release()


def test_claim_many_rolls_back_when_an_owner_lock_is_taken(store: SqlStore, other: SqlStore) -> None:
    clock = FakeClock(T0)
    first = _made(store, clock, "a", "b")
    before = {key: store.source(key) for key in (_spec("a").key, _spec("b").key)}
    racing = other.owners.take(_spec("b").key, first["b"].token + 1)  # a claimer that read the old token
    assert racing is not None
    clock.advance(1)
    assert store.claim_many([_spec("a"), _spec("b")], owner="a", lease_seconds=60, clock=clock) == {}
    assert {key: store.source(key) for key in before} == before  # rolled back: tokens, owners as they were
    assert not store.owners.holder_alive(_spec("a").key, first["a"].token + 1)  # "a"'s lock freed again
    racing.release()
    leases = store.claim_many([_spec("a"), _spec("b")], owner="a", lease_seconds=60, clock=clock)
    assert {lease.token for lease in leases.values()} == {first["a"].token + 1, first["b"].token + 1}
    for lease in leases.values():
        lease.release()


def test_release_many_writes_all_or_nothing(store: SqlStore, other: SqlStore) -> None:
    clock = FakeClock(T0)
    _made(store, clock, "x", "y", "z")
    specs = [_spec("x"), _spec("y"), _spec("z")]
    leases = store.claim_many(specs, owner="a", lease_seconds=60, clock=clock)
    items = []
    for spec in specs:
        leases[spec.key].advance_on_release(None, {"remaining": 7})
        items.append((leases[spec.key], _tick(spec.key, clock), True))
    clock.advance(61)
    taker = _lease(other.claim(_spec("z"), owner="b", lease_seconds=60, clock=clock))  # "z" taken over
    assert store.release_many(items) is False
    for spec in specs:  # nothing written, nothing freed, the held moves kept
        row = store.source(spec.key)
        assert row is not None and row.meta is None and row.last_success_at is None
        assert leases[spec.key]._advance == (None, {"remaining": 7})
    assert _tick_count(store) == 0
    assert store.owners.holder_alive(_spec("x").key, leases[_spec("x").key].token)
    for lease, tick, succeeded in items[:2]:  # the per-lease fallback writes the two still ours
        lease.release(tick, succeeded=succeeded)
    with pytest.raises(LeaseLostError):
        items[2][0].release(items[2][1], succeeded=True)
    assert _tick_count(store) == 2
    row = store.source(_spec("x").key)
    assert row is not None and row.meta == {"remaining": 7} and row.last_success_at == T0  # the tick's end
    taker.release()
    again = store.claim_many(specs, owner="a", lease_seconds=60, clock=clock)
    assert len(again) == 3
    for lease in again.values():
        lease.advance_on_release(None, {"remaining": 6})
    seen = _statements(store)
    assert store.release_many([(lease, _tick(lease.key, clock), True) for lease in again.values()]) is True
    assert seen == ["UPDATE", "INSERT"]  # one executemany each
    assert _tick_count(store) == 5
    for lease in again.values():
        row = store.source(lease.key)
        assert row is not None and row.meta == {"remaining": 6} and row.lease_owner is None
        assert row.last_success_at == clock.now() and lease._advance is None
        assert not store.owners.holder_alive(lease.key, lease.token)
        assert isinstance(other.claim(CursorSpec(lease.key, lease.key), owner="b", lease_seconds=60,
                                      clock=clock), SqlLease)  # free at once
