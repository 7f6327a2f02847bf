"""The mirrors' bulk writes (``syncd.store.mirrors``) on page-sized batches end where one-by-one writes do.

``tests/test_batching.py`` holds the batch to the per-event path on thousands of small sequences; here the
batches are as large as a catch-up's (hundreds of items), so PostgreSQL takes its bulk forms: the upserts
by COPY, the deletes in one ``DELETE … USING unnest``, the tombstones in one ``INSERT … SELECT unnest … ON
CONFLICT``, the versions and tombstones in one look-up. Hostile on purpose: repeats, ties, deletes and
re-creations of one object within a batch, NULL stored versions, stored tombstones newer and older than
the items, and ids that share a long prefix (a length-limited cast would make them meet). Both databases.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.store.bulk import BinaryList
from syncd.store.db import UTCDateTime, create_engine
from syncd.store.schema import migrate
from syncd.store.tables import tombstones
from syncd.workflows.mirror import apply_snapshot, apply_snapshots

# Short ids in the table and long ones in the batch's deletes: a 24-character key column.
things = sa.Table(
    "test_bulk_things", sa.MetaData(),
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("name", sa.String(50), nullable=True),
    sa.Column("meta", sa.JSON, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=True),
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
PREFIX = "x" * 24  # stored ids are 24 characters; a delete of PREFIX + "…" must not touch them


def stamp(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def big_case(rng: random.Random) -> tuple[list[dict[str, Any]], list[tuple[str, datetime]],
                                          list[tuple[dict[str, Any], bool]]]:
    """Stored rows and tombstones over 150 ids, and a batch of 400 items over them (many repeats and ties)."""
    ids = [f"b{i:03d}" for i in range(149)] + [PREFIX]
    stored = [{"id": i, "name": f"old-{i}", "meta": {"v": 0},
               "updated_at": None if rng.random() < 0.1 else stamp(rng.randint(0, 20))}
              for i in ids if rng.random() < 0.5]
    dead = [(i, stamp(rng.randint(0, 20))) for i in ids if rng.random() < 0.2]
    items: list[tuple[dict[str, Any], bool]] = []
    for n in range(400):
        deleted = rng.random() < 0.3
        object_id = rng.choice(ids)
        if deleted and rng.random() < 0.1:  # an id too long for the column, sharing a stored one's prefix
            object_id = PREFIX + f"-{n}"
        items.append(({"id": object_id, "name": f"n{n}", "meta": {"n": n, "q": "it's \"quoted\"\t\\"},
                       "updated_at": stamp(rng.randint(0, 24))}, deleted))
    return stored, dead, items


def table_state(conn: sa.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rows = [tuple(r) for r in conn.execute(sa.select(things.c.id, things.c.name, things.c.updated_at)
                                           .order_by(things.c.id))]
    metas = [r[0] for r in conn.execute(sa.select(things.c.meta).order_by(things.c.id))]
    dead = [tuple(r) for r in conn.execute(sa.select(tombstones.c.object_id, tombstones.c.version)
                                           .where(tombstones.c.kind == things.name).order_by(tombstones.c.object_id))]
    return [(*row, meta) for row, meta in zip(rows, metas, strict=True)], dead


@pytest.fixture
def bulk_db(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    migrate(engine)
    things.create(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _apply(engine: Engine, case: tuple[Any, ...], batched: bool) -> tuple[Any, int]:
    stored, dead, items = case
    with engine.connect() as conn, conn.begin() as txn:
        if stored:
            conn.execute(sa.insert(things), stored)
        if dead:
            conn.execute(sa.insert(tombstones), [{"kind": things.name, "object_id": i, "version": v} for i, v in dead])
        if batched:
            applied = apply_snapshots(conn, things, [(dict(r), d) for r, d in items], kind=things.name)
        else:
            applied = 0
            for row, deleted in items:
                if not deleted and len(row["id"]) > 24:
                    continue  # never generated: only deletes carry over-long ids
                applied += apply_snapshot(conn, things, dict(row), kind=things.name, deleted=deleted)
        state = table_state(conn)
        txn.rollback()
    return state, applied


def test_page_sized_batches_end_exactly_where_one_by_one_writes_do(bulk_db: Engine) -> None:
    rng = random.Random(26)
    for case_number in range(4):
        case = big_case(rng)
        one_by_one, batched = _apply(bulk_db, case, False), _apply(bulk_db, case, True)
        assert batched == one_by_one, f"case {case_number}"
        rows, dead = batched[0]
        assert rows and dead  # the case wrote something of each kind


@pytest.mark.postgres
def test_only_the_store_arrays_go_binary(pg_server: Any) -> None:
    """``bulk.BinaryList`` goes as a typed binary array; a plain list (a workflow's own SQL) keeps psycopg's
    text form, whose element type the server infers: ``1 = ANY(['1'])`` still compares as integers."""
    engine = create_engine(pg_server.create_database())
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1 = ANY(%(x)s)", {"x": ["1"]}).scalar() is True
            with pytest.raises(sa.exc.ProgrammingError, match="operator does not exist"):
                conn.exec_driver_sql("SELECT 1 = ANY(%(x)s)", {"x": BinaryList(["1"])})
    finally:
        engine.dispose()
