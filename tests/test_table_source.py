"""Table sources (issue 10): rows of the user's own tables trigger workflows once each, on SQLite and
PostgreSQL, across restarts, replays and downtime; bad tables, columns and keys; LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.sql import table
from connectors.sql.client import (
    InsertCursor,
    TableConnector,
    UpdateCursor,
    advance_insert,
    advance_update,
    json_safe,
)
from syncd.errors import ConfigError
from syncd.ops.app import App
from syncd.store.tables import runs
from syncd.workflows import Registry
from tests.conftest import settings_for

T0 = datetime(2026, 3, 1, 12, 0, 0)


def users_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table("users", metadata,
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("email", sa.String(200), nullable=False),
                    sa.Column("plan_price", sa.Numeric(10, 2)),
                    sa.Column("created_at", sa.DateTime))


def docs_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table("docs", metadata,
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("title", sa.String(200)),
                    sa.Column("updated_at", sa.DateTime))


class UserDb:
    """The user's own tables, written through a separate engine (as the user's application would)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        self.metadata = sa.MetaData()
        self.users = users_table(self.metadata)
        self.docs = docs_table(self.metadata)
        self.metadata.create_all(self.engine)
        self._n = 0

    def add_users(self, count: int) -> None:
        rows = []
        for _ in range(count):
            self._n += 1
            rows.append({"email": f"user{self._n}@example.com", "plan_price": Decimal("9.90"),
                         "created_at": T0 + timedelta(seconds=self._n)})
        with self.engine.begin() as conn:
            conn.execute(self.users.insert(), rows)

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def user_db(db_url: str) -> Any:
    db = UserDb(db_url)
    yield db
    db.close()


def recording_registry(trigger: Any, name: str = "on-user") -> tuple[Registry, Counter[str]]:
    """A workflow that counts deliveries in memory and writes one row per event through ctx.db."""
    registry, seen = Registry(), Counter[str]()
    lock = threading.Lock()

    @registry.workflow(name, on=trigger)
    def handler(event: Any, ctx: Any) -> None:
        with lock:
            seen[event.id] += 1
        ctx.db.execute(sa.text("INSERT INTO delivered (event_id, email) VALUES (:e, :m)"),
                       {"e": event.id, "m": event.data.get("email") or event.data.get("title")})

    return registry, seen


def build(db_url: str, registry: Registry, **env: str) -> App:
    app = App.build(settings_for(db_url, SYNCD_BUILTINS="none", **env), registry=registry)
    with app.db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS delivered (event_id VARCHAR(100) PRIMARY KEY, "
                             "email VARCHAR(200))"))
    return app


def delivered(app: App) -> set[str]:
    with app.db.connect() as conn:
        return set(conn.execute(sa.text("SELECT event_id FROM delivered")).scalars())


def reset_cursors(app: App) -> None:
    with app.db.begin() as conn:
        conn.execute(sa.text("UPDATE syncd_sources SET cursor = NULL"))


# ---- inserts ------------------------------------------------------------------------------------------


def test_inserted_rows_trigger_the_workflow_once_each_across_restarts_and_replays(db_url: str,
                                                                                 user_db: UserDb) -> None:
    registry, seen = recording_registry(table("users", event="insert", key="id"))
    user_db.add_users(250)
    app = build(db_url, registry)
    try:
        [result] = app.tick_all()
        assert result.ok and result.source == "sql:users" and result.pages == 3 and result.new_events == 250
        assert delivered(app) == {str(i) for i in range(1, 251)}
        user_db.add_users(5)
        [result] = app.tick_all()
        assert result.new_events == 5 and result.pages == 1
    finally:
        app.close()
    user_db.add_users(40)  # inserted while syncd is down
    restarted = build(db_url, registry)
    try:
        [result] = restarted.tick_all()
        assert result.ok and result.new_events == 40
        reset_cursors(restarted)  # a replay of the whole table: nothing runs twice
        [result] = restarted.tick_all()
        assert result.ok and result.events == 295 and result.new_events == 0 and result.runs_ok == 0
        assert delivered(restarted) == {str(i) for i in range(1, 296)}
        assert set(seen.values()) == {1} and len(seen) == 295
        with restarted.db.connect() as conn:
            query = sa.select(runs.c.status).where(runs.c.workflow == "on-user")
            statuses = Counter(conn.execute(query).scalars())
        assert statuses == {"succeeded": 295}
    finally:
        restarted.close()


def test_the_event_carries_the_row_as_json_and_its_timestamp(sqlite_url: str) -> None:
    user_db = UserDb(sqlite_url)
    registry, captured = Registry(), []

    @registry.workflow("capture", on=table("users"))
    def capture(event: Any, ctx: Any) -> None:
        captured.append(event)

    user_db.add_users(1)
    app = build(sqlite_url, registry)
    try:
        app.tick_all()
    finally:
        app.close()
        user_db.close()
    [event] = captured
    assert event.type == "table.users.insert" and event.stream == "sql:users" and event.id == "1"
    assert dict(event.data) == {"id": 1, "email": "user1@example.com", "plan_price": "9.90",
                                "created_at": "2026-03-01T12:00:01+00:00"}
    assert event.occurred_at == datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)


@pytest.mark.postgres
def test_a_row_committed_after_a_higher_key_is_still_delivered(pg_server: Any) -> None:
    """PostgreSQL hands out key 1 to a transaction that commits after key 2's: the gap below the cursor
    is looked into again, so the late row is delivered (once)."""
    url = pg_server.create_database()
    user_db = UserDb(url)
    registry, seen = recording_registry(table("users"))
    app = build(url, registry)
    try:
        with user_db.engine.connect() as slow:
            slow.begin()
            slow.execute(user_db.users.insert(), {"email": "slow@example.com"})  # takes id 1, not committed
            user_db.add_users(1)  # id 2, committed first
            app.tick_all()
            assert delivered(app) == {"2"}
            slow.commit()
        app.tick_all()
        assert delivered(app) == {"1", "2"}
        app.tick_all()
        assert seen == Counter({"1": 1, "2": 1})
    finally:
        app.close()
        user_db.close()


@pytest.mark.parametrize(("cursor", "keys", "now", "expected"), [
    (InsertCursor(), [1, 2, 3], 0.0, InsertCursor(3)),
    (InsertCursor(3), [4, 7, 8], 10.0, InsertCursor(8, ((5, 6, 10.0),))),
    (InsertCursor(8, ((5, 6, 10.0),)), [5], 20.0, InsertCursor(8, ((6, 6, 10.0),))),
    (InsertCursor(8, ((5, 6, 10.0),)), [], 10.0 + 300, InsertCursor(8)),  # expired: a rolled-back insert
    (InsertCursor(8, ((2, 9, 1.0),)), [4, 6], 2.0, InsertCursor(8, ((2, 3, 1.0), (5, 5, 1.0), (7, 9, 1.0)))),
])
def test_insert_cursor_tracks_gaps_below_it(cursor: InsertCursor, keys: list[int], now: float,
                                            expected: InsertCursor) -> None:
    moved = advance_insert(cursor, keys, now=now, gap_seconds=300)
    assert moved == expected
    assert InsertCursor.loads(moved.dumps()) == moved


def test_cursor_advance_rules_for_updates() -> None:
    a, b = "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z"
    start = advance_update(UpdateCursor(), [(1, a), (2, a)])
    assert start == UpdateCursor(a, frozenset({1, 2}))
    assert advance_update(start, [(3, a)]) == UpdateCursor(a, frozenset({1, 2, 3}))  # same time: seen grows
    assert advance_update(start, [(3, a), (1, b)]) == UpdateCursor(b, frozenset({1}))
    assert advance_update(start, []) == start
    assert UpdateCursor.loads(start.dumps()) == start


def test_json_safe_values() -> None:
    import uuid
    from datetime import date

    assert json_safe({"d": Decimal("1.50"), "t": datetime(2026, 1, 1), "day": date(2026, 1, 2),
                      "u": uuid.UUID(int=1), "b": b"\x00\x01", "l": (1, "x")}) == {
        "d": "1.50", "t": "2026-01-01T00:00:00+00:00", "day": "2026-01-02",
        "u": "00000000-0000-0000-0000-000000000001", "b": "AAE=", "l": [1, "x"]}


# ---- updates ------------------------------------------------------------------------------------------


def test_updates_by_updated_at_with_equal_timestamps(db_url: str, user_db: UserDb) -> None:
    registry, seen = recording_registry(table("docs", event="update", key="id"), name="on-doc")
    docs = user_db.docs
    with user_db.engine.begin() as conn:  # more rows at one instant than fit on a page
        conn.execute(docs.insert(), [{"id": i, "title": f"doc {i}", "updated_at": T0} for i in range(1, 151)])
    app = build(db_url, registry)
    try:
        [result] = app.tick_all()
        assert result.ok and result.source == "sql:docs:update" and result.new_events == 150
        stamp = "2026-03-01T12:00:00.000000Z"
        assert delivered(app) == {f"{i}@{stamp}" for i in range(1, 151)}
        with user_db.engine.begin() as conn:  # stamped with the very instant of the cursor: not lost
            conn.execute(docs.insert(), {"id": 151, "title": "late", "updated_at": T0})
        [result] = app.tick_all()
        assert result.new_events == 1 and f"151@{stamp}" in delivered(app)
        with user_db.engine.begin() as conn:  # a change of an existing row is a new event
            later = T0 + timedelta(microseconds=5)
            conn.execute(docs.update().where(docs.c.id == 3).values(title="edited", updated_at=later))
        [result] = app.tick_all()
        assert result.new_events == 1 and "3@2026-03-01T12:00:00.000005Z" in delivered(app)
        [result] = app.tick_all()
        assert result.events == 0
        reset_cursors(app)
        [result] = app.tick_all()
        assert result.ok and result.new_events == 0 and result.runs_ok == 0
        assert len(seen) == 152 and set(seen.values()) == {1}
    finally:
        app.close()


# ---- bad input ----------------------------------------------------------------------------------------


def test_missing_table_or_column_fails_only_that_source(sqlite_url: str) -> None:
    user_db = UserDb(sqlite_url)
    registry, seen = recording_registry(table("users"))

    @registry.workflow("on-ghost", on=table("ghosts"))
    def ghost(event: Any, ctx: Any) -> None:
        seen[event.id] += 1

    @registry.workflow("on-user-change", on=table("users", event="update", updated_at="modified_at"))
    def changed(event: Any, ctx: Any) -> None:
        seen[event.id] += 1

    user_db.add_users(3)
    app = build(sqlite_url, registry)
    try:
        results = {r.source: r for r in app.tick_all()}
        assert results["sql:users"].ok and results["sql:users"].new_events == 3
        assert not results["sql:ghosts"].ok
        assert "table 'ghosts' does not exist" in (results["sql:ghosts"].error or "")
        assert not results["sql:users:update"].ok
        assert "no column 'modified_at'" in (results["sql:users:update"].error or "")
        with user_db.engine.begin() as conn:  # creating the table heals its source on the next tick
            conn.execute(sa.text("CREATE TABLE ghosts (id INTEGER PRIMARY KEY, email TEXT)"))
            conn.execute(sa.text("INSERT INTO ghosts (id, email) VALUES (7, 'boo@example.com')"))
        results = {r.source: r for r in app.tick_all()}
        assert results["sql:ghosts"].ok and results["sql:ghosts"].new_events == 1
        assert not results["sql:users:update"].ok
    finally:
        app.close()
        user_db.close()


def test_a_key_not_known_to_be_monotonic_is_rejected_at_start_up(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE codes (code VARCHAR(26) PRIMARY KEY, note TEXT)"))
        conn.execute(sa.text("CREATE TABLE blobs (k BLOB PRIMARY KEY)"))
    engine.dispose()
    registry, _ = recording_registry(table("codes", key="code"))
    with pytest.raises(ConfigError, match=r"key column 'code' is VARCHAR.*monotonic=True"):
        build(sqlite_url, registry)
    registry, _ = recording_registry(table("blobs", key="k", monotonic=True))
    with pytest.raises(ConfigError, match="key column 'k' is BLOB"):
        build(sqlite_url, registry)
    registry, _ = recording_registry(table("codes", key="code", monotonic=True))  # ULIDs: declared ordered
    app = build(sqlite_url, registry)
    try:
        with app.db.begin() as conn:
            conn.execute(sa.text("INSERT INTO codes VALUES ('01J0000000000000000000000B', 'b'), "
                                 "('01J0000000000000000000000A', 'a')"))
        [result] = app.tick_all()
        assert result.ok and delivered(app) == {"01J0000000000000000000000A", "01J0000000000000000000000B"}
    finally:
        app.close()


def test_bad_trigger_arguments_and_environment() -> None:
    with pytest.raises(ValueError, match="insert, update"):
        table("users", event="delete")
    from connectors.sql import env_specs

    specs = env_specs({"SYNCD_SQL_TABLES": "users, orders:update:oid"})
    assert [(s.table, s.event, s.key) for s in specs] == [("users", "insert", "id"),
                                                          ("orders", "update", "oid")]
    with pytest.raises(ConfigError, match="SYNCD_SQL_TABLES"):
        env_specs({"SYNCD_SQL_TABLES": "a:b:c:d"})
    with pytest.raises(ConfigError, match="SYNCD_SQL_TABLES"):
        env_specs({"SYNCD_SQL_TABLES": "users:upsert"})


def test_a_table_in_another_database_and_tables_by_environment(tmp_path: Any, sqlite_url: str) -> None:
    from connectors.sql import rows

    other = f"sqlite:///{tmp_path / 'crm.db'}"
    crm = UserDb(other)
    crm.add_users(2)
    registry, seen = recording_registry(table("users", url=other), name="crm-user")

    @registry.workflow("env-user", on=rows("users"))
    def env_user(event: Any, ctx: Any) -> None:
        seen[f"env:{event.id}"] += 1

    local = UserDb(sqlite_url)
    local.add_users(1)
    app = build(sqlite_url, registry, SYNCD_SQL_TABLES="users")
    try:
        results = {r.source: r for r in app.tick_all()}
        assert set(results) == {"sql:crm.users", "sql:users"} and all(r.ok for r in results.values())
        assert seen == Counter({"1": 1, "2": 1, "env:1": 1})
    finally:
        app.close()
        crm.close()
        local.close()


# ---- LISTEN/NOTIFY ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_notify_wakes_the_source_before_its_next_poll(pg_server: Any) -> None:
    from syncd.cli import main
    from syncd.ops.scheduler import Daemon

    url = pg_server.create_database()
    user_db = UserDb(url)
    assert main(["sql-notify", "install", "users"], environ={"DATABASE_URL": url}) == 0
    registry, seen = recording_registry(table("users"))
    app = build(url, registry)
    ticks = Counter[str]()

    def tick(connector: Any) -> None:
        app.tick(connector)
        ticks[connector.key] += 1

    daemon = Daemon([(c.key, functools.partial(tick, c)) for c in app.connectors], interval=3600,
                    stop=app.stop, jitter=0)
    daemon.start()
    [listener] = app.listeners(daemon.wake)  # the SQL provider's listen hook, as `syncd run` starts it
    try:
        assert listener.listening.wait(5)
        deadline = time.monotonic() + 5
        while ticks["sql:users"] < 1:  # the tick at start-up; the next poll is an hour away
            assert time.monotonic() < deadline
            time.sleep(0.02)
        user_db.add_users(1)
        deadline = time.monotonic() + 5
        while "1" not in seen or ticks["sql:users"] < 2:
            assert time.monotonic() < deadline, "NOTIFY did not wake the source (interval is an hour)"
            time.sleep(0.02)
        assert seen == Counter({"1": 1}) and ticks["sql:users"] == 2
    finally:
        listener.stop()
        app.stop.set()
        daemon.wait()
        app.close()
        assert main(["sql-notify", "remove", "users"], environ={"DATABASE_URL": url}) == 0
        user_db.close()


def test_sql_notify_needs_postgres(sqlite_url: str, capsys: Any) -> None:
    from syncd.cli import main

    assert main(["sql-notify", "install", "users"], environ={"DATABASE_URL": sqlite_url}) == 2
    assert "needs PostgreSQL" in capsys.readouterr().err


def test_connector_repr_hides_the_password() -> None:
    connector = TableConnector(table("users").spec or pytest.fail("no spec"),
                               url="postgresql+psycopg://syncd:s3cr3t-pw@127.0.0.1:1/app")
    try:
        assert "s3cr3t-pw" not in repr(connector)
    finally:
        connector.close()


@pytest.mark.parametrize(("gap_env", "late_row_delivered"), [({}, True), ({"SYNCD_SQL_GAP_SECONDS": "0"}, False)])
def test_sql_gap_seconds_sets_how_long_a_skipped_key_is_waited_for(sqlite_url: str, gap_env: dict[str, str],
                                                                    late_row_delivered: bool) -> None:
    """Keys 1 and 3 are committed, 2 not yet (a slow transaction): by default (300 s) row 2 is still
    delivered when it commits a poll later; with ``SYNCD_SQL_GAP_SECONDS=0`` the gap is given up at the
    first poll after it was seen."""
    user_db = UserDb(sqlite_url)
    registry, seen = recording_registry(table("users", event="insert", key="id"))
    app = build(sqlite_url, registry, **gap_env)
    try:
        [connector] = app.connectors
        assert connector.gap_seconds == float(gap_env.get("SYNCD_SQL_GAP_SECONDS", "300"))
        with user_db.engine.begin() as conn:
            for key in (1, 3):
                conn.execute(user_db.users.insert(), {"id": key, "email": f"u{key}@example.com"})
        [result] = app.tick_all()
        assert result.ok and delivered(app) == {"1", "3"}
        [result] = app.tick_all()  # a poll that finds nothing new: the gap is kept, or given up when expired
        assert result.ok
        with user_db.engine.begin() as conn:  # the late commit of key 2
            conn.execute(user_db.users.insert(), {"id": 2, "email": "u2@example.com"})
        [result] = app.tick_all()
        assert result.ok
        assert delivered(app) == ({"1", "2", "3"} if late_row_delivered else {"1", "3"})
        assert set(seen.values()) == {1}
    finally:
        app.close()
        user_db.close()
