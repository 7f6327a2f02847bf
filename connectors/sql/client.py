"""A table of the user's own database as a source: new rows (``insert``) or changed rows (``update``).

One connector per (database, table, event) polls with SQLAlchemy Core, 100 rows a page, oldest first:

- **insert** — ``WHERE key > :after ORDER BY key``. The cursor is the last key delivered. On PostgreSQL a
  sequence hands out keys at INSERT time but rows become visible at COMMIT, so key 101 may appear after 102
  has been delivered. For integer keys the cursor therefore also keeps the *gaps* below it (ranges of keys
  not seen yet) for ``gap_seconds``, and every poll looks into them again: a row committed late is still
  delivered, once. Gaps left by rolled-back inserts or deleted rows simply expire. Non-integer keys
  (``monotonic=True``: ULIDs, UUIDv7, timestamps…) have no gaps to track; they must grow in commit order.
- **update** — ``WHERE updated_at >= :since ORDER BY updated_at, key``, with the care GitHub's ``since``
  needs (see ``connectors/github/client.py``): ``since`` is inclusive and the cursor keeps the keys already
  delivered *at* ``since``, so a row stamped with the same timestamp as the last one delivered is not lost,
  and one already delivered is not delivered again. Each change is an event ``{key}@{updated_at}``. A row
  whose ``updated_at`` is older than ``since`` when it becomes visible (a transaction stamped with
  ``now()`` that commits late) is not seen: stamp with ``clock_timestamp()`` or a trigger at commit.

Rows become ``Event(type="table.<table>.<event>", data=<the row, JSON-safe>)``. The table is reflected on the
first poll; a missing table or column fails this source only (``FatalError`` naming it) and is looked up
again on the next tick, so creating it later heals the source.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError

from connectors.sql.cursors import (
    GAP_SECONDS,
    InsertCursor,
    UpdateCursor,
    advance_insert,
    advance_update,
)
from connectors.sql.values import canonical, decode_key, json_safe, key_kind, to_datetime
from syncd.contracts import Event, Page, Quarantined, Window
from syncd.errors import FatalError, RetryableError
from syncd.jsoncodec import safe_raw
from syncd.settings import safe_url

log = logging.getLogger("connectors.sql")

PAGE_SIZE = 100
EVENTS = ("insert", "update")


@dataclass(frozen=True)
class TableSpec:
    """What one table trigger polls. ``url`` None: the app's ``DATABASE_URL`` (or ``SYNCD_SQL_URL``).

    ``timestamp``: the column giving ``occurred_at`` of insert events (None: ``created_at`` when the table
    has a date-time column of that name, else the time of polling). ``monotonic``: the key is not an
    integer but grows in commit order (ULID, UUIDv7, a timestamp); required for non-integer keys.
    """

    table: str
    event: str = "insert"
    key: str = "id"
    url: str | None = None
    updated_at: str = "updated_at"
    timestamp: str | None = None
    monotonic: bool = False

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"table event must be one of {', '.join(EVENTS)}, got {self.event!r}")
        for label, value in (("table", self.table), ("key", self.key), ("updated_at", self.updated_at)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"table trigger: {label} must be a non-empty name")

    @property
    def name(self) -> str:
        """The table's name without a schema: what event types and NOTIFY payloads use."""
        return self.table.rsplit(".", 1)[-1]

    @property
    def schema(self) -> str | None:
        return self.table.rsplit(".", 1)[0] if "." in self.table else None

    @property
    def event_type(self) -> str:
        return f"table.{self.name}.{self.event}"


def source_key(spec: TableSpec, label: str | None = None) -> str:
    """``sql:users``, ``sql:users:update``; ``label`` names another database: ``sql:crm.users``."""
    base = f"sql:{label + '.' if label else ''}{spec.table}"
    return base if spec.event == "insert" else f"{base}:{spec.event}"


# ---- the connector -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reflected:
    table: sa.Table
    key: sa.Column[Any]
    kind: str
    updated_at: sa.Column[Any] | None
    timestamp: sa.Column[Any] | None


class TableConnector:
    """Connector for one (database, table, event). ``key`` is e.g. ``sql:users`` or ``sql:users:update``."""

    def __init__(self, spec: TableSpec, *, url: str, key: str | None = None, page_size: int = PAGE_SIZE,
                 gap_seconds: float = GAP_SECONDS, clock: Callable[[], float] = time.time,
                 engine: Engine | None = None) -> None:
        if not 1 <= page_size <= 10_000:
            raise ValueError("page_size must be 1..10000")
        self.spec = spec
        self.url = url
        self.key = key or source_key(spec)
        self.page_size = page_size
        self.gap_seconds = gap_seconds
        self._clock = clock
        self._engine = engine or read_engine(url)
        self._reflected: Reflected | None = None

    def __repr__(self) -> str:
        return f"TableConnector(key={self.key!r}, url={safe_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    # ---- reflection ----

    def reflect(self) -> Reflected:
        """Look the table up (cached once found). ``FatalError`` names a missing table or column;
        ``ConfigError`` rejects a key that is not known to be monotonic."""
        if self._reflected is not None:
            return self._reflected
        spec = self.spec
        try:
            table = sa.Table(spec.name, sa.MetaData(), schema=spec.schema, autoload_with=self._engine)
        except NoSuchTableError:
            raise FatalError(self.key, f"table {spec.table!r} does not exist in {safe_url(self.url)}"
                                       f"{self._near(spec)}; create it or fix the trigger") from None
        except DBAPIError as exc:
            raise RetryableError(self.key, f"cannot read the table {spec.table!r}: {_db_error(exc)}"
                                 ) from None
        key = self._column(table, spec.key, "key")
        updated = self._column(table, spec.updated_at, "updated_at") if spec.event == "update" else None
        if spec.timestamp is not None:
            stamp: sa.Column[Any] | None = self._column(table, spec.timestamp, "timestamp")
        else:
            found = table.columns.get("created_at")
            stamp = found if found is not None and isinstance(found.type, sa.DateTime) else None
        self._reflected = Reflected(table, key, key_kind(key, spec.monotonic), updated, stamp)
        return self._reflected

    def _near(self, spec: TableSpec) -> str:
        """`` (did you mean 'users'?)`` when a table of that schema has a close name, else nothing."""
        try:
            names = sa.inspect(self._engine).get_table_names(schema=spec.schema)
        except DBAPIError:
            return ""
        close = difflib.get_close_matches(spec.name, names, n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def _column(self, table: sa.Table, name: str, role: str) -> sa.Column[Any]:
        column = table.columns.get(name)
        if column is None:
            raise FatalError(self.key, f"table {self.spec.table!r} has no column {name!r} (the trigger's "
                                       f"{role} column); columns are: {', '.join(table.columns.keys())}")
        return column

    # ---- one page ----

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        """One page after ``cursor``. With a ``window``, the query itself keeps to [start, end) (inserts by
        their timestamp column, updates by ``updated_at``), so ``has_more`` turns False once the window's
        rows are exhausted, whatever follows it in the table."""
        found = self.reflect()
        try:
            if self.spec.event == "insert":
                page = self._insert_page(found, self._cursor(InsertCursor, cursor), window)
            else:
                page = self._update_page(found, self._cursor(UpdateCursor, cursor), window)
        except DBAPIError as exc:
            if exc.connection_invalidated or _is_connection_error(exc):
                raise RetryableError(self.key, f"database unavailable: {_db_error(exc)}") from None
            self._reflected = None  # a column may have been dropped: look the table up again next time
            raise FatalError(self.key, f"query on table {self.spec.table!r} failed: {_db_error(exc)}"
                             ) from None
        except SQLAlchemyError as exc:
            raise RetryableError(self.key, f"database error: {type(exc).__name__}") from None
        return page

    def _cursor(self, kind: Any, cursor: str | None) -> Any:
        if cursor is None:
            return kind()
        try:
            return kind.loads(cursor)
        except (ValueError, TypeError, KeyError) as exc:
            raise FatalError(self.key, f"{exc}; reset this source's cursor") from None

    def _insert_page(self, found: Reflected, state: InsertCursor, window: Window | None) -> Page:
        key = found.key
        now = datetime.now(UTC)
        condition: Any = sa.true() if state.after is None else key > decode_key(key, state.after)
        for lo, hi, _ in state.gaps:
            condition = sa.or_(condition, key.between(lo, hi))
        if window is not None:
            if found.timestamp is None:  # every row's time is the time of polling
                if not window.contains(now):
                    return Page(events=(), next_cursor=None, has_more=False)
            else:
                condition = sa.and_(condition, self._within(found.timestamp, window))
        query = sa.select(found.table).where(condition).order_by(key).limit(self.page_size + 1)
        rows = self._read(query)
        has_more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        stamped = [(row, self._stamp(found, row, now)) for row in rows]
        events = tuple(self._event(found, row, str(row[key.name]), moment) for row, moment in stamped
                       if window is None or window.contains(moment))
        # Under a window, keys skipped over are rows outside it, not rows still in flight: no gaps.
        next_state = advance_insert(state, [row[key.name] for row in rows], now=self._clock(),
                                    gap_seconds=self.gap_seconds,
                                    track_gaps=found.kind == "int" and window is None)
        return Page(events=events, next_cursor=next_state.dumps(), has_more=has_more)

    def _within(self, column: sa.Column[Any], window: Window) -> Any:
        """``start <= column < end`` in SQL, comparing instants as ``_update_page`` does."""
        ordered = _comparable(column, self.dialect)
        return sa.and_(ordered >= _bind_since(column, canonical(window.start), self.dialect),
                       ordered < _bind_since(column, canonical(window.end), self.dialect))

    def _update_page(self, found: Reflected, state: UpdateCursor, window: Window | None) -> Page:
        assert found.updated_at is not None
        column, key = found.updated_at, found.key
        ordered = _comparable(column, self.dialect)
        # Rows whose time cannot be read (SQLite text) stay out of the query, so that they never take a
        # page's places; the first page of a walk counts them as skipped.
        condition: Any = ordered.is_not(None)
        skipped = self._unreadable(found) if state.since is None and window is None else 0
        if state.since is not None:
            condition = sa.and_(condition, ordered >= _bind_since(column, state.since, self.dialect))
        if window is not None:
            condition = sa.and_(condition, self._within(column, window))
        limit = self.page_size + len(state.seen) + 1
        query = sa.select(found.table).where(condition).order_by(ordered, key).limit(limit)
        rows = []
        held: list[Quarantined] = []
        for row in self._read(query):
            moment = to_datetime(row[column.name])
            if moment is None:  # unreadable timestamp text (SQLite): cannot be ordered, never delivered
                skipped += 1
                held.append(Quarantined(self.key, str(row[key.name]), f"{column.name} is not a date-time",
                                        safe_raw(dict(row))))
                log.error("skipping row %s of %s: %s is not a date-time", row[key.name], self.spec.table,
                          column.name, extra={"source": self.key})
                continue
            text = canonical(moment)
            if window is not None and not window.contains(moment):
                continue  # the database rounded at the window's edge; the window is [start, end) exactly
            if state.since is not None and (text < state.since or
                                            (text == state.since and json_safe(row[key.name]) in state.seen)):
                continue
            rows.append((row, moment, text))
        has_more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        events = tuple(self._event(found, row, f"{row[key.name]}@{text}", moment)
                       for row, moment, text in rows)
        next_state = advance_update(state, [(row[key.name], text) for row, _, text in rows])
        return Page(events=events, next_cursor=next_state.dumps(), has_more=has_more, skipped=skipped,
                    quarantined=tuple(held))

    def _unreadable(self, found: Reflected) -> int:
        """Rows of an update source whose ``updated_at`` is set but not a time (only SQLite stores those)."""
        column = found.updated_at
        if column is None or self.dialect != "sqlite":
            return 0
        query = sa.select(sa.func.count()).select_from(found.table).where(
            column.is_not(None), _comparable(column, self.dialect).is_(None))
        with self._engine.connect() as conn:
            count = int(conn.execute(query).scalar_one())
        if count:
            log.error("skipping %d rows of %s: %s is not a date-time", count, self.spec.table, column.name,
                      extra={"source": self.key})
        return count

    def _read(self, query: sa.Select[Any]) -> list[Mapping[str, Any]]:
        with self._engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def _stamp(self, found: Reflected, row: Mapping[str, Any], now: datetime) -> datetime:
        if found.timestamp is not None:
            moment = to_datetime(row.get(found.timestamp.name))
            if moment is not None:
                return moment
        return now

    def _event(self, found: Reflected, row: Mapping[str, Any], event_id: str, occurred_at: datetime) -> Event:
        return Event(stream=self.key, id=event_id, type=self.spec.event_type, occurred_at=occurred_at,
                     data={name: json_safe(value) for name, value in row.items()})


def read_engine(url: str) -> Engine:
    """A small engine for reading the user's table. On SQLite, plain deferred transactions: a read never
    takes the write lock (syncd's own engine begins IMMEDIATE)."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2,
                            connect_args={"connect_timeout": 10})


def _comparable(column: sa.Column[Any], dialect: str) -> Any:
    # SQLite keeps date-times as text in whatever format the app wrote ("…12:00:00" vs "…12:00:00.000000"),
    # which compares wrongly as text at equal instants; julianday() compares the instants.
    return sa.func.julianday(column) if dialect == "sqlite" else column


def _bind_since(column: sa.Column[Any], since: str, dialect: str) -> Any:
    moment = datetime.fromisoformat(since)
    if dialect == "sqlite":
        return sa.func.julianday(moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
    timezone = bool(getattr(column.type, "timezone", False))
    return sa.literal(moment if timezone else moment.astimezone(UTC).replace(tzinfo=None), column.type)


def _db_error(exc: DBAPIError) -> str:
    lines = str(exc.orig).strip().splitlines() if exc.orig is not None else []
    return lines[0] if lines else type(exc).__name__


def _is_connection_error(exc: DBAPIError) -> bool:
    kind = type(exc.orig).__name__
    return kind in ("OperationalError", "InterfaceError") and "no such" not in str(exc.orig)


# The cursors and values are re-exported: they were defined here before cursors.py and values.py.
__all__ = ["EVENTS", "GAP_SECONDS", "PAGE_SIZE", "InsertCursor", "TableConnector", "TableSpec", "UpdateCursor",
           "advance_insert", "advance_update", "json_safe", "key_kind", "read_engine", "source_key"]
