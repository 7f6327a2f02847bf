"""The database plumbing under the engine: multi-row writes, read-only connections, the JSON codec."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from syncd import jsoncodec
from syncd.contracts import RunRecord, RunStatus
from syncd.store import SqlTxn
from syncd.store.bulk import (
    MULTI_ROWS,
    _driver_form,
    _sqlite_max_parameters,
    _upsert_statement,
    execute_many,
    insert_ignore,
)
from syncd.store.connect import create_engine, reading
from syncd.store.sqlite import CACHE_KIB, SMALL_WAL_SECONDS, WAL_CHECKPOINT_PAGES, wal_checkpointer
from syncd.store.types import _DATETIME_TEXTS, UTCDateTime, json_type
from tests.test_cli import sim_env, syncd

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _table(metadata: sa.MetaData, columns: int = 0) -> sa.Table:
    return sa.Table(
        "t", metadata,
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column("n", sa.Integer, nullable=True),
        sa.Column("doc", json_type(), nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=True),
        *[sa.Column(f"c{i}", sa.Integer, nullable=True) for i in range(columns)],
    )


def _rows(count: int, seed: int, keys: int) -> list[dict[str, Any]]:
    """Rows with repeated keys (so later rows of a statement conflict with earlier ones), NULLs and ties."""
    rnd = random.Random(seed)
    return [{"id": f"k{rnd.randrange(keys)}", "n": rnd.choice([None, i]),
             "doc": rnd.choice([None, {"i": i, "name": "Zoë ✓", "tags": [i, None]}]),
             "updated_at": rnd.choice([None, T0 + timedelta(seconds=rnd.randrange(5))])} for i in range(count)]


def _contents(conn: sa.Connection, table: sa.Table) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]


@pytest.mark.parametrize("count", [1, 2, 3, 127, 128, 129, 300, 777])
def test_execute_many_ends_where_one_row_at_a_time_ends(db_url: str, count: int) -> None:
    """Multi-row statements (SQLite) apply their rows in order like an executemany: DO NOTHING keeps the
    first of two rows with one key, a newer-wins upsert the last not-older one."""
    metadata = sa.MetaData()
    table = _table(metadata)
    db = create_engine(db_url)
    metadata.create_all(db)
    dialect = db.dialect.name
    upsert = _upsert_statement(dialect, table, ("doc", "id", "n", "updated_at"), "id", "updated_at",
                               returning=False)
    for seed in range(3):
        rows = _rows(count, seed, keys=max(1, count // 2))
        for batched in (True, False):
            with db.begin() as conn:
                conn.execute(table.delete())
                if batched:
                    insert_ignore(conn, table, rows[: count // 2], ["id"])
                    execute_many(conn, upsert, rows[count // 2:])
                else:
                    for row in rows[: count // 2]:
                        insert_ignore(conn, table, [row], ["id"])
                    for row in rows[count // 2:]:
                        conn.execute(upsert, row)
                result = _contents(conn, table)
            if batched:
                expected_from_batch = result
        assert result == expected_from_batch and result
    db.dispose()


def test_multi_row_statements_stay_within_sqlites_parameter_limit(tmp_path: Path) -> None:
    metadata = sa.MetaData()
    columns = 1990  # near SQLite's 2000-column limit: 1994 parameters a row, so few rows a statement
    table = _table(metadata, columns=columns)
    db = create_engine(f"sqlite:///{tmp_path / 'wide.db'}")
    metadata.create_all(db)
    stmt = sa.insert(table)
    form = _driver_form(db.dialect, stmt)
    assert form.multi is not None
    per_statement, per_row, limit = form.multi.rows, columns + 4, _sqlite_max_parameters()
    assert per_statement & (per_statement - 1) == 0  # a power of two
    assert per_statement < MULTI_ROWS and per_statement * per_row <= limit < 2 * per_statement * per_row
    rows = [{"id": f"w{i}", "n": i, "doc": None, "updated_at": T0, **{f"c{j}": i * j for j in range(columns)}}
            for i in range(per_statement * 2 + 3)]
    with db.begin() as conn:
        execute_many(conn, stmt, rows)
        assert conn.execute(sa.select(sa.func.count(), sa.func.sum(table.c[f"c{columns - 1}"]))).one() == (
            len(rows), sum(i * (columns - 1) for i in range(len(rows))))
    db.dispose()


def test_only_inserts_with_all_their_parameters_in_values_go_multi_row(tmp_path: Path) -> None:
    metadata = sa.MetaData()
    table = _table(metadata)
    db = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert _driver_form(db.dialect, sa.insert(table)).multi is not None
    assert _driver_form(db.dialect, sa.delete(table).where(table.c.id == sa.bindparam("k"))).multi is None
    assert _driver_form(db.dialect, sa.update(table).where(table.c.id == sa.bindparam("k"))
                        .values(n=sa.bindparam("v"))).multi is None
    db.dispose()


# ---- read-only connections ---------------------------------------------------------------------------------

def _hold_write_lock(path: Path) -> sqlite3.Connection:
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE syncd_sources SET updated_at = updated_at")
    return writer


def test_every_sqlite_connection_gets_syncds_settings(tmp_path: Path) -> None:
    db = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with reading(db) as first, reading(db) as second:  # two pool connections, each configured
            for conn in (first, second):
                pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in (
                    "journal_mode", "synchronous", "cache_size", "wal_autocheckpoint", "foreign_keys", "temp_store")}
                assert pragma == {"journal_mode": "wal", "synchronous": 1, "cache_size": -CACHE_KIB,
                                  "wal_autocheckpoint": WAL_CHECKPOINT_PAGES, "foreign_keys": 1,
                                  "temp_store": 2}  # MEMORY: savepoints' statement journals stay off the disk
    finally:
        db.dispose()


def test_reading_does_not_wait_for_sqlites_write_lock(tmp_path: Path) -> None:
    from syncd.store.schema import migrate

    path = tmp_path / "r.db"
    db = create_engine(f"sqlite:///{path}")
    migrate(db)
    writer = _hold_write_lock(path)
    try:
        started = time.monotonic()
        with reading(db) as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM syncd_events")).scalar() == 0
        assert time.monotonic() - started < 5  # the write lock is held throughout; busy_timeout is 30 s

        blocked = threading.Event()

        def write() -> None:  # a writer still queues for the lock, as it must
            with db.begin() as conn:
                blocked.set()
                conn.execute(sa.text("SELECT 1"))

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and not blocked.is_set()
    finally:
        writer.rollback()
        writer.close()
    thread.join(10)
    assert blocked.is_set()
    db.dispose()


def test_status_answers_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    with WorkOSSimulator(events=150, seed=4, api_key="sk_test_plumbing_77") as sim:
        env = sim_env(tmp_path, sim, key="sk_test_plumbing_77")
        assert syncd(tmp_path, "once", env=env).returncode == 0
        writer = _hold_write_lock(tmp_path / "cli.db")
        try:  # busy_timeout is 30 s: a read queued behind the lock would time these out
            status = syncd(tmp_path, "status", "--json", env=env, timeout=20)
            check = syncd(tmp_path, "check", env=env, timeout=20)  # the container's health check
        finally:
            writer.rollback()
            writer.close()
    assert status.returncode == 0, status.stderr
    [source] = json.loads(status.stdout)["sources"]
    assert source["key"] == "workos" and source["runs"]["succeeded"] > 0
    assert check.returncode == 0, check.stdout + check.stderr
    assert "workos" in check.stdout and "unavailable" not in check.stdout


# ---- JSON ----------------------------------------------------------------------------------------------------

@dataclass
class _Point:
    x: int


class _Pair(NamedTuple):
    a: int
    b: int


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1.5, None, True], "c": {"d": "Zoë ✓ \u2028"}},
    {"big": 2**70, "neg": -(2**64)},  # beyond 64 bits: the standard library writes them
    {1: "int key", "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "p": _Point(3)},
    ["tuple", (1, 2), {3}, _Pair(4, 5)],  # a named tuple is an array, as the standard library has it
])
def test_dumps_gives_the_values_the_standard_library_gives(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), default=str)
    assert json.loads(jsoncodec.dumps(value)) == json.loads(expected)
    assert jsoncodec.loads(jsoncodec.dumps(value)) == json.loads(expected)


def test_loads_reads_what_orjson_refuses() -> None:
    assert jsoncodec.loads(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
    assert jsoncodec.loads(b"[-9223372036854775809]") == [-9223372036854775809]  # 19 digits, below -2**63
    assert jsoncodec.loads('{"x": NaN}')["x"] != jsoncodec.loads('{"x": NaN}')["x"]  # NaN, as json reads it
    with pytest.raises(ValueError):
        jsoncodec.loads(b'{"truncated": ')


def test_batch_run_rows_are_the_rows_insert_runs_writes(db_url: str) -> None:
    from syncd.store.schema import migrate
    from syncd.store.tables import runs

    db = create_engine(db_url)
    migrate(db)
    common = RunRecord(workflow="batched", stream="workos", event_id="", workflow_version="1.0.0",
                       status=RunStatus.SUCCEEDED, attempts=1, next_attempt_at=None, last_error=None,
                       trace_id="ab" * 16, duration_ms=0.25, started_at=T0,
                       finished_at=T0 + timedelta(microseconds=1500))
    ids = [f"event_{i:04d}" for i in range(1500)] + ["événement ✓"]
    with db.connect() as conn, conn.begin():
        txn = SqlTxn(conn, "workos", None)
        txn.write_batch_runs(common, ids)
        txn.write_batch_runs(common._replace(status=RunStatus.FAILED), ids[:10])  # kept
        txn.write_runs([common._replace(workflow="one_by_one", event_id=i) for i in ids])
    with reading(db) as conn:
        rows = {wf: sorted(tuple(v for k, v in r._mapping.items() if k != "workflow") for r in conn.execute(
            sa.select(runs).where(runs.c.workflow == wf))) for wf in ("batched", "one_by_one")}
        raw = conn.execute(sa.text("SELECT DISTINCT CAST(started_at AS TEXT), CAST(finished_at AS TEXT) "
                                   "FROM syncd_runs")).all()
    assert len(rows["batched"]) == len(ids) and rows["batched"] == rows["one_by_one"]
    assert len(set(raw)) == 1  # the same stored text, not only the same values read back
    db.dispose()


# ---- background WAL checkpoints ---------------------------------------------------------------------------

def _rows_in_database_file(path: Path) -> int:
    """Rows of ``points`` in the database file alone: ``immutable`` reads no write-ahead log."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])
    except sqlite3.DatabaseError:  # the table is still only in the log, or a checkpoint is writing the file
        return 0


def _wait_for_rows(path: Path, rows: int) -> int:
    deadline = time.monotonic() + 30
    while (found := _rows_in_database_file(path)) < rows and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _settled_checkpoints(checkpointer: Any) -> int:
    """The checkpoint count once it has stayed the same for longer than the thread's longest wait."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        count = checkpointer.checkpoints
        time.sleep(checkpointer.small_wal_seconds + 0.5)
        if checkpointer.checkpoints == count:
            return count
    raise AssertionError("the checkpoint thread never went quiet")


def test_commits_reach_the_database_file_through_the_checkpoint_thread(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    db = create_engine(f"sqlite:///{path}")
    checkpointer = wal_checkpointer(db)
    assert checkpointer is not None and not checkpointer.running()  # started by the first commit only
    assert checkpointer.small_wal_seconds == SMALL_WAL_SECONDS
    checkpointer.small_wal_seconds = 1.0  # the daemon's 5 s would make this test wait that long, twice
    metadata = sa.MetaData()
    points = sa.Table("points", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Text))
    metadata.create_all(db)
    with db.begin() as conn:
        execute_many(conn, sa.insert(points), [{"id": i, "v": "x" * 200} for i in range(2000)])
    # Far below the writers' own autocheckpoint (WAL_CHECKPOINT_PAGES) and no connection closed: only the
    # thread copies the log into the file.
    assert _wait_for_rows(path, 2000) == 2000
    assert checkpointer.running() and checkpointer.checkpoints >= 1
    # A wake that came during a checkpoint runs one more, up to SMALL_WAL_SECONDS later: wait it out, so
    # what is counted next is what the read causes (it used to race that late checkpoint under load).
    done = _settled_checkpoints(checkpointer)
    with reading(db) as conn:  # reads wake nothing
        conn.execute(sa.select(points.c.id).limit(1)).all()
    time.sleep(checkpointer.small_wal_seconds + 0.5)
    assert checkpointer.checkpoints == done
    db.dispose()
    assert not checkpointer.running()
    with db.begin() as conn:  # a disposed engine still works, and checkpoints again
        conn.execute(sa.insert(points), {"id": 5000, "v": "y"})
    assert _wait_for_rows(path, 2001) == 2001
    # the thread counts a checkpoint once it returns, a moment after its rows are in the file: wait for the count
    deadline = time.monotonic() + 30
    while checkpointer.checkpoints <= done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.checkpoints > done
    db.dispose()
    assert not checkpointer.running()


def test_a_checkpoint_thread_ends_with_its_engine_even_undisposed(tmp_path: Path) -> None:
    import gc

    db = create_engine(f"sqlite:///{tmp_path / 'gone.db'}")
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    checkpointer = wal_checkpointer(db)
    assert checkpointer is not None
    deadline = time.monotonic() + 30
    while not checkpointer.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.running()
    del db, conn
    gc.collect()
    deadline = time.monotonic() + 30
    while checkpointer.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not checkpointer.running()


def test_no_checkpoint_thread_without_an_sqlite_file() -> None:
    db = create_engine("sqlite:///:memory:")
    assert wal_checkpointer(db) is None
    db.dispose()


# ---- datetimes and the schema's revision ----------------------------------------------------------------------

def test_sqlite_datetime_text_is_sqlalchemys_and_equal_instants_share_it(tmp_path: Path) -> None:
    """syncd formats SQLite datetimes itself (and remembers them by instant): the text must be the one
    SQLAlchemy's own DATETIME type stores, whatever the zone, and a naive datetime is still refused."""
    from datetime import timezone
    from zoneinfo import ZoneInfo

    from sqlalchemy.dialects.sqlite import DATETIME

    sqlalchemys = DATETIME().bind_processor(sa.dialects.sqlite.dialect())
    assert sqlalchemys is not None
    plus2, new_york = timezone(timedelta(hours=2)), ZoneInfo("America/New_York")
    _DATETIME_TEXTS.clear()
    moments = [datetime(2026, 3, 4, 7, 6, 7, 890123, tzinfo=plus2),  # the next one's instant, in +02:00, first
               datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC), T0, datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
               datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
               # 01:30 twice on 2026-11-01 in New York (DST ends): equal as datetimes, an hour apart
               datetime(2026, 11, 1, 1, 30, tzinfo=new_york), datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=new_york)]
    metadata = sa.MetaData()
    table = sa.Table("moments", metadata, sa.Column("n", sa.Integer, primary_key=True),
                     sa.Column("at", UTCDateTime, nullable=False))
    db = create_engine(f"sqlite:///{tmp_path / 'dt.db'}")
    metadata.create_all(db)
    with db.begin() as conn:
        execute_many(conn, sa.insert(table), [{"n": n, "at": at} for n, at in enumerate(moments * 2)])
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            conn.execute(sa.insert(table), {"n": 99, "at": moments[1].replace(tzinfo=None)})
    with reading(db) as conn:
        stored = [r[0] for r in conn.execute(sa.text("SELECT at FROM moments ORDER BY n"))]
        read_back = [r[0] for r in conn.execute(sa.select(table.c.at).order_by(table.c.n))]
    assert stored == [sqlalchemys(at.astimezone(UTC).replace(tzinfo=None)) for at in moments * 2]
    assert stored[0] == stored[1] == "2026-03-04 05:06:07.890123" and stored[3] == "0999-01-02 03:04:05.000000"
    assert stored[5:7] == ["2026-11-01 05:30:00.000000", "2026-11-01 06:30:00.000000"]
    assert read_back == [at.astimezone(UTC) for at in moments * 2]
    db.dispose()


def test_head_revision_is_alembics_and_current_revision_reads_it(empty_db_url: str) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from syncd.store.schema import HEAD_REVISION, alembic_config, current_revision, migrate

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION  # type: ignore[arg-type]
    db = create_engine(empty_db_url)
    assert current_revision(db) is None  # a new database
    migrate(db)
    with reading(db) as conn:
        assert current_revision(db) == MigrationContext.configure(conn).get_current_revision() == HEAD_REVISION
    migrate(db)  # at head already: nothing to do, and no error
    assert current_revision(db) == HEAD_REVISION
    db.dispose()
