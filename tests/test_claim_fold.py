"""An idle tick's claim of a free live cursor is one UPDATE, with no SELECT of its row first (issue 28,
session 11; the first step of bench/README.md G's batching design):

- a free or expired live lease is taken by one ``UPDATE … RETURNING`` (token + 1, the cursor as of the
  take) → ``test_a_free_live_cursor_is_claimed_in_one_statement``
- anything else goes the read path and gets the same answer as before: a new key is created and claimed,
  a paused row gets its PAUSED detail, a live holder's lease LEASE_HELD, a done live row DONE, a window
  and a failed row are claimed, a dead holder's unexpired lease is taken over
  → ``test_what_the_fold_leaves_out_gets_the_read_paths_answer``
- the owner lock of the new token is taken before COMMIT; if a concurrent claimer holds it, the UPDATE
  is rolled back and the claim answers LEASE_HELD, leaving the row as it was
  → ``test_a_fold_whose_new_tokens_lock_is_taken_rolls_back``
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.contracts import CursorSpec, FakeClock, Skip, SkipReason, Window
from syncd.store import SqlStore, cursors
from syncd.store.sqlstore import SqlLease

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIVE = CursorSpec("github:acme/a", "github:acme/a")


def _statements(store: SqlStore) -> list[str]:
    """Statements on ``syncd_sources`` from now on (the owner-lock session's are on a connection of its own)."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "syncd_sources" in statement.lower():
            seen.append(statement.lstrip().split()[0].upper())

    sa.event.listen(store.db, "before_cursor_execute", note)
    return seen


def _lease(claimed: SqlLease | Skip) -> SqlLease:
    assert isinstance(claimed, SqlLease), claimed
    return claimed


@pytest.fixture
def other(store: SqlStore) -> Iterator[SqlStore]:
    """Another replica on the same database (its own owner locks)."""
    made = SqlStore(store.db)
    yield made
    made.close()


def test_a_free_live_cursor_is_claimed_in_one_statement(store: SqlStore, other: SqlStore) -> None:
    clock = FakeClock(T0)
    first = _lease(store.claim(LIVE, owner="a", lease_seconds=60, clock=clock))  # a new row: the read path
    first.advance_on_release("c1", None)
    first.release()
    seen = _statements(store)
    again = _lease(store.claim(LIVE, owner="a", lease_seconds=60, clock=clock))
    assert seen == ["UPDATE"]
    assert again.token == first.token + 1 and again.cursor == "c1"
    row = store.source(LIVE.key)
    assert row is not None and row.lease_owner == "a" and row.lease_token == again.token
    assert row.lease_expires_at == T0 + timedelta(seconds=60)
    clock.advance(61)  # expired, its holder alive but silent: taken over by one UPDATE too
    seen_other = _statements(other)
    taker = _lease(other.claim(LIVE, owner="b", lease_seconds=60, clock=clock))
    assert seen_other == ["UPDATE"] and taker.token == again.token + 1 and taker.cursor == "c1"
    assert taker.owner_lock is None or taker.owner_lock.held()
    assert other.owners.holder_alive(LIVE.key, taker.token) == (taker.owner_lock is not None)
    assert again.owner_lock is not None
    again.owner_lock.release()
    taker.release()


def test_what_the_fold_leaves_out_gets_the_read_paths_answer(store: SqlStore, other: SqlStore) -> None:
    clock = FakeClock(T0)
    fresh = _lease(store.claim(LIVE, owner="a", lease_seconds=60, clock=clock))  # new: created, claimed
    assert fresh.token == 1
    held = other.claim(LIVE, owner="b", lease_seconds=60, clock=clock)  # a live holder's lease
    assert held == Skip(SkipReason.LEASE_HELD)
    fresh.release()
    store.record_failure(LIVE.key, clock.now(), "slow down", pause_until=T0 + timedelta(seconds=30))
    paused = store.claim(LIVE, owner="a", lease_seconds=60, clock=clock)
    assert isinstance(paused, Skip) and paused.reason is SkipReason.PAUSED
    assert paused.detail is not None and paused.detail.startswith("until 2026-03-01T12:00:30")
    clock.advance(30)  # the pause ends at T0 + 30 s: claimable again
    after = _lease(store.claim(LIVE, owner="a", lease_seconds=60, clock=clock))
    assert after.token == fresh.token + 1
    assert after.owner_lock is not None
    after.owner_lock.release()  # the holder dies: its unexpired lease stays in the row
    gone = _lease(other.claim(LIVE, owner="b", lease_seconds=60, clock=clock))  # taken over at once
    assert gone.token == after.token + 1
    gone.release()
    with store.db.begin() as conn:
        cursors.set_source_fields(conn, LIVE.key, now=clock.now(), state="failed")
    failed = _lease(store.claim(LIVE, owner="a", lease_seconds=60, clock=clock))  # failed: not skipped, read path
    assert failed.token == gone.token + 1
    failed.release()
    with store.db.begin() as conn:
        cursors.set_source_fields(conn, LIVE.key, now=clock.now(), state="done")
    assert store.claim(LIVE, owner="a", lease_seconds=60, clock=clock) == Skip(SkipReason.DONE)
    window = CursorSpec("w1", "github:acme/a", Window(T0 - timedelta(days=2), T0 - timedelta(days=1)))
    seen = _statements(store)
    first = _lease(store.claim(window, owner="a", lease_seconds=60, clock=clock))
    assert seen[0] == "SELECT"  # a window is never folded: the read path (done, re-opened) decides
    first.release()
    again = _lease(store.claim(window, owner="a", lease_seconds=60, clock=clock))
    assert again.token == first.token + 1
    again.release()


def test_a_fold_whose_new_tokens_lock_is_taken_rolls_back(store: SqlStore, other: SqlStore) -> None:
    clock = FakeClock(T0)
    first = _lease(store.claim(LIVE, owner="a", lease_seconds=60, clock=clock))
    first.release()
    before = store.source(LIVE.key)
    assert before is not None
    racing = other.owners.take(LIVE.key, first.token + 1)  # a claimer that read the old token got there first
    assert racing is not None  # db_url is a SQLite file (flock) or PostgreSQL (advisory locks)
    clock.advance(1)
    assert store.claim(LIVE, owner="a", lease_seconds=60, clock=clock) == Skip(SkipReason.LEASE_HELD)
    row = store.source(LIVE.key)
    assert row == before  # rolled back: token, owner, expiry and updated_at as they were
    racing.release()
    taken = _lease(store.claim(LIVE, owner="a", lease_seconds=60, clock=clock))
    assert taken.token == first.token + 1 and taken.owner_lock is not None and taken.owner_lock.held()
    taken.release()
    assert not store.owners.holder_alive(LIVE.key, taken.token)  # released: no lock left behind
