"""PostgreSQL's COPY path (``bulk.copy_insert``): the ledger and large groups of run rows (and the ledger's
payload round trip on both databases).

It must store exactly what one ``INSERT … ON CONFLICT`` per row stores, in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from syncd import jsoncodec
from syncd.contracts import Event, RunRecord
from syncd.store import ledger
from syncd.store.bulk import _driver_form, _upsert_statement, copy_insert, execute_many, insert_ignore
from syncd.store.connect import create_engine, reading
from syncd.store.pgcopy import _binary_types, copy_new
from syncd.store.schema import migrate
from syncd.store.tables import events
from syncd.store.types import UTCDateTime
from tests.pgserver import PostgresServer

T0 = datetime(2026, 1, 1, tzinfo=UTC)

#: Text that COPY's text format must escape: tabs, newlines, backslashes, its NULL marker, quotes, non-ASCII.
AWKWARD = ["tab\there", "line\nbreak\r\n", "back\\slash \\N", "\\N", "quote ' \" ,", "Zoë ✓ 𝄞", "", " "]


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database()


def _event(i: int, stream: str = "workos") -> Event:
    text = AWKWARD[i % len(AWKWARD)]
    return Event(stream=stream, id=f"event_{i:05d}{text if i % 3 == 0 else ''}", type=f"user.{text}",
                 occurred_at=T0 + timedelta(microseconds=i, hours=i % 3), action=None if i % 2 or not text else text,
                 data={"i": i, "text": text, "nested": {"list": [text, None, 1.5, True]}, "\\key\t": text})


def test_a_run_record_is_the_run_columns_in_order() -> None:
    assert RunRecord._fields == ledger.RUN_COLUMNS  # insert_runs copies records as they are


@pytest.mark.postgres
def test_the_ledger_by_copy_stores_what_an_insert_per_row_stores(pg_url: str) -> None:
    db = create_engine(pg_url)
    migrate(db)
    batch = [_event(i) for i in range(300)]
    batch += [_event(5), replace(_event(7), type="changed")]  # already recorded: the first version stays
    with db.begin() as conn:
        first = ledger.record_events(conn, batch[:100], T0)
    with db.begin() as conn:
        again = ledger.record_events(conn, batch, T0 + timedelta(seconds=1))
    assert first.new == {e.id for e in batch[:100]}
    assert again.new == {e.id for e in batch[100:300]}  # the repeats and the first hundred were there
    with reading(db) as conn:
        stored = {r.event_id: r for r in conn.execute(sa.select(events))}
    assert len(stored) == 300
    for event in batch[:300]:
        row = stored[event.id]
        assert (row.stream, row.type, row.action, row.occurred_at, row.payload) == (
            event.stream, event.type, event.action, event.occurred_at, event.data)
        assert row.recorded_at == (T0 if event.id in first.new else T0 + timedelta(seconds=1))
    db.dispose()


#: Payloads a ledger must give back equal, keys in the order written (PostgreSQL's ``json`` keeps the text:
#: migration 0017; jsonb sorted keys): nesting, non-ASCII and escapes in keys and values, integers beyond 64
#: bits, floats at the edges of their range, empty containers.
HOSTILE: list[dict[str, Any]] = [
    {"z": 1, "a": {"y": [1, {"b": None, "a": [[], {}]}], "x": True}, "m": [{"k": "v"}] * 3},
    {"Zoë ✓ 𝄞": "ünï\u2028cödé \u2028 ☃ \U0001F600", "tab\tkey": "line\nbreak \\N \" ' ,", "": ""},
    {"big": 2**64, "neg": -(2**63) - 1, "huge": 10**40, "max": 2**63 - 1, "min": -(2**63)},
    {"f": 0.1, "tiny": 5e-324, "large": 1.7976931348623157e308, "neg0": -0.0, "exp": 1e-7, "int_float": 2.0},
    {"deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": ["h", 1, 2.5, False, None]}}}}}}}},
    {"list": [3, 2, 1], "dup_like": {"a": 1, "A": 2, "aa": 3, "b": 4}, "num_key": {"10": 1, "9": 2, "1": 3}},
]


def _hostile_events(count: int, prefix: str) -> list[Event]:
    return [Event(stream="workos", id=f"{prefix}_{i:04d}", type="user.updated", occurred_at=T0 + timedelta(seconds=i),
                  data=HOSTILE[i % len(HOSTILE)]) for i in range(count)]


def test_the_ledger_gives_back_hostile_payloads_as_written(db_url: str) -> None:
    """Both insert paths (PostgreSQL: COPY of a small group through the staging table, and straight COPY of a
    large one; SQLite: its INSERT): equal payloads, keys in the order written, the JSON text as written."""
    from syncd import jsoncodec

    db = create_engine(db_url)
    small, large = _hostile_events(len(HOSTILE), "small"), _hostile_events(ledger.COPY_NEW_FROM + 6, "large")
    with db.begin() as conn:
        assert ledger.record_events(conn, small, T0).new == {e.id for e in small}
    with db.begin() as conn:
        assert ledger.record_events(conn, large, T0).new == {e.id for e in large}
    text = sa.cast(events.c.payload, sa.Text)
    with reading(db) as conn:
        stored = {r.event_id: r for r in conn.execute(sa.select(events.c.event_id, events.c.payload,
                                                                text.label("text")))}
    assert len(stored) == len(small) + len(large)
    for event in small + large:
        row = stored[event.id]
        assert row.payload == event.data
        assert _key_orders(row.payload) == _key_orders(event.data)
        assert row.text == jsoncodec.dumps(event.data)
    db.dispose()


def _key_orders(value: Any) -> list[list[str]]:
    """The key order of every object in ``value``, depth first."""
    if isinstance(value, dict):
        return [list(value)] + [order for v in value.values() for order in _key_orders(v)]
    if isinstance(value, list):
        return [order for v in value for order in _key_orders(v)]
    return []


@pytest.mark.postgres
def test_copy_new_goes_binary_where_every_column_has_a_binary_form_and_text_otherwise(pg_url: str) -> None:
    """The ledger's COPY is binary (its JSON payload sent as text, which json takes); a serialized jsonb column
    or a naive timestamp sends the rows as text instead, and each way stores the same values."""
    db = create_engine(pg_url)
    migrate(db)
    assert _binary_types(db.dialect, events, ledger.LEDGER_COLUMNS, frozenset({"payload"})) == [
        "text", "text", "text", "text", "timestamptz", "timestamptz", "text"]
    meta = sa.MetaData()
    shapes = {
        "b": sa.Table("b", meta, sa.Column("id", sa.String(40), primary_key=True), sa.Column("n", sa.BigInteger),
                      sa.Column("ok", sa.Boolean), sa.Column("doc", sa.dialects.postgresql.JSON),
                      sa.Column("at", UTCDateTime)),
        "jsonb": sa.Table("j", meta, sa.Column("id", sa.String(40), primary_key=True), sa.Column("n", sa.BigInteger),
                          sa.Column("ok", sa.Boolean), sa.Column("doc", sa.dialects.postgresql.JSONB),
                          sa.Column("at", UTCDateTime)),
        "naive": sa.Table("n", meta, sa.Column("id", sa.String(40), primary_key=True), sa.Column("n", sa.BigInteger),
                          sa.Column("ok", sa.Boolean), sa.Column("doc", sa.dialects.postgresql.JSON),
                          sa.Column("at", sa.DateTime)),
    }
    meta.create_all(db)
    columns = ("id", "n", "ok", "doc", "at")
    expected = {"b": ["text", "int8", "bool", "text", "timestamptz"], "jsonb": None, "naive": None}
    for name, table in shapes.items():
        assert _binary_types(db.dialect, table, columns, frozenset({"doc"})) == expected[name]
        at = T0 if name != "naive" else T0.replace(tzinfo=None)
        rows = [(f"k{i}{AWKWARD[i % len(AWKWARD)]}", None if i % 3 == 0 else 2**40 + i, i % 2 == 0,
                 jsoncodec.dumps({"v": AWKWARD[i % len(AWKWARD)], "i": i, "more": HOSTILE[i % 3]}),
                 None if i % 4 == 0 else at + timedelta(minutes=i))
                for i in range(40)]
        with db.begin() as conn:
            assert copy_new(conn, table, columns, rows, serialized={"doc"})
        with reading(db) as conn:
            stored = sorted(tuple(r) for r in conn.execute(sa.select(table)))
        assert stored == sorted((i, n, ok, jsoncodec.loads(doc), t) for i, n, ok, doc, t in rows), name
    db.dispose()


@pytest.mark.postgres
def test_copy_insert_matches_row_by_row_inserts(pg_url: str) -> None:
    db = create_engine(pg_url)
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.String(40), primary_key=True),
                     sa.Column("n", sa.Integer), sa.Column("doc", sa.JSON().with_variant(
                         sa.dialects.postgresql.JSONB(), "postgresql")),
                     sa.Column("at", sa.DateTime(timezone=True)))
    twin = table.to_metadata(sa.MetaData(), name="t_rows")
    table.metadata.create_all(db)
    twin.metadata.create_all(db)
    east = timezone(timedelta(hours=5))
    rows: list[tuple[Any, ...]] = [
        (f"k{i % 50}{AWKWARD[i % len(AWKWARD)]}", None if i % 4 == 0 else i,
         None if i % 5 == 0 else {"v": AWKWARD[i % len(AWKWARD)], "i": i}, None if i % 6 == 0 else
         (T0 + timedelta(minutes=i)).astimezone(east)) for i in range(400)]  # repeated keys: the first stays
    with db.begin() as conn:
        inserted = copy_insert(conn, table, ("id", "n", "doc", "at"), rows, conflict="(id) DO NOTHING",
                               returning="id")
        insert_ignore(conn, twin, [dict(zip(("id", "n", "doc", "at"), r, strict=True)) for r in rows], ["id"])
    with reading(db) as conn:
        by_copy = sorted(tuple(r) for r in conn.execute(sa.select(table)))
        by_rows = sorted(tuple(r) for r in conn.execute(sa.select(twin)))
    assert by_copy == by_rows
    assert sorted(inserted) == sorted(r[0] for r in by_rows) and len(inserted) == 200
    db.dispose()


@pytest.mark.postgres
def test_copy_insert_after_a_rolled_back_first_use_and_in_a_rolled_back_transaction(pg_url: str) -> None:
    """The temporary table dies with the transaction that created it; rows of a rollback never land."""
    db = create_engine(pg_url)
    migrate(db)
    with db.connect() as conn:
        with pytest.raises(RuntimeError), conn.begin():
            ledger.record_events(conn, [_event(1)], T0)
            raise RuntimeError("rolled back")
        with conn.begin():  # same session: the table is gone and made again
            assert ledger.record_events(conn, [_event(2)], T0).new == {_event(2).id}
        with conn.begin():  # emptied at commit: nothing of the last transaction is copied again
            assert ledger.record_events(conn, [_event(3)], T0).new == {_event(3).id}
    with reading(db) as conn:
        assert {r[0] for r in conn.execute(sa.select(events.c.event_id))} == {_event(2).id, _event(3).id}
    db.dispose()


@pytest.mark.postgres
def test_a_naive_time_is_refused_not_stored_in_the_server_zone(pg_url: str) -> None:
    db = create_engine(pg_url)
    migrate(db)
    naive = replace(_event(1), occurred_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"), db.begin() as conn:
        ledger.record_events(conn, [naive], T0)
    db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("repeated", [False, True])
def test_a_large_upsert_by_copy_ends_where_one_row_at_a_time_ends(pg_url: str, repeated: bool) -> None:
    """``execute_many`` of a newer-wins upsert: by COPY when its keys are distinct (DO UPDATE may not meet a
    key twice in one statement), row by row when one repeats; both leave what single statements leave."""
    db = create_engine(pg_url)
    metadata = sa.MetaData()
    table = sa.Table("m", metadata, sa.Column("id", sa.String(40), primary_key=True), sa.Column("n", sa.Integer),
                     sa.Column("doc", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")),
                     sa.Column("flag", sa.Boolean), sa.Column("updated_at", sa.DateTime(timezone=True)))
    metadata.create_all(db)
    upsert = _upsert_statement("postgresql", table, ("id", "n", "doc", "flag", "updated_at"), "id", "updated_at",
                               returning=False)
    assert _driver_form(db.dialect, upsert).copy is not None
    stored = [{"id": f"k{i}", "n": -i, "doc": None, "flag": None, "updated_at": T0 + timedelta(seconds=i % 7)}
              for i in range(0, 300, 2)]
    rows = [{"id": f"k{i % 150 if repeated else i}", "n": i, "doc": {"t": AWKWARD[i % len(AWKWARD)]},
             "flag": i % 3 == 0, "updated_at": None if i % 11 == 0 else T0 + timedelta(seconds=i % 5)}
            for i in range(300)]
    results = []
    for batched in (True, False):
        with db.begin() as conn:
            conn.execute(table.delete())
            execute_many(conn, sa.insert(table), stored)
            if batched:
                execute_many(conn, upsert, rows)
            else:
                for row in rows:
                    conn.execute(upsert, row)
            results.append(sorted(tuple(r) for r in conn.execute(sa.select(table))))
    assert results[0] == results[1] and len(results[0]) == (150 + 75 if repeated else 300)
    db.dispose()


@pytest.mark.postgres
def test_sessions_use_custom_plans_and_keep_the_urls_own_options(pg_url: str) -> None:
    """Key look-ups over an array (``bulk.one_of``) are planned with their values (``connect.POSTGRES_OPTIONS``);
    ``?options=`` in DATABASE_URL still applies."""
    db = create_engine(pg_url + "?options=-c%20application_name%3Dsyncd_test")
    with db.connect() as conn:
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
        assert conn.exec_driver_sql("SHOW application_name").scalar() == "syncd_test"
    db.dispose()
