"""Optional wake-up of table sources on PostgreSQL: ``LISTEN/NOTIFY`` instead of waiting for the next poll.

``syncd sql-notify install users`` (opt-in; it changes your schema) creates one trigger function and a
statement-level trigger per table::

    CREATE OR REPLACE FUNCTION syncd_notify() … PERFORM pg_notify('syncd_sql', TG_TABLE_NAME) …
    CREATE TRIGGER syncd_notify AFTER INSERT OR UPDATE ON users
        FOR EACH STATEMENT EXECUTE FUNCTION syncd_notify()

PostgreSQL delivers a notification when the inserting transaction commits (one per transaction and table),
so the row is visible by the time ``syncd run`` hears of it. A listener thread per database runs the table's
jobs at once (APScheduler ``modify_job(next_run_time=now)``). Polling goes on regardless: a notification
lost while the listener reconnects only delays a row until the next tick. The payload is only a table name;
the cursor, not the notification, decides what is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from connectors.sql.client import TableConnector
from syncd.errors import ConfigError
from syncd.settings import safe_url
from syncd.store.notify import PgListener

log = logging.getLogger("connectors.sql.notify")

CHANNEL = "syncd_sql"
TRIGGER = "syncd_notify"
FUNCTION_SQL = f"""CREATE OR REPLACE FUNCTION syncd_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
    RETURN NULL;
END
$$"""


def _quoted(engine: sa.Engine, table: str) -> str:
    preparer = engine.dialect.identifier_preparer
    return ".".join(preparer.quote(part) for part in table.split("."))


def _postgres(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        raise ConfigError("DATABASE_URL", f"LISTEN/NOTIFY needs PostgreSQL; {safe_url(url)} is "
                          f"{engine.dialect.name} (table sources there are polled, which needs nothing)")
    return engine


def install(url: str, tables: Sequence[str]) -> None:
    """Create (or replace) ``syncd_notify()`` and its trigger on each table, in one transaction."""
    engine = _postgres(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(FUNCTION_SQL)
            for name in tables:
                target = _quoted(engine, name)
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {target}")
                conn.exec_driver_sql(f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE ON {target} "
                                     f"FOR EACH STATEMENT EXECUTE FUNCTION syncd_notify()")
    finally:
        engine.dispose()


def remove(url: str, tables: Sequence[str]) -> None:
    """Drop the trigger from each table (the function stays: other tables may use it)."""
    engine = _postgres(url)
    try:
        with engine.begin() as conn:
            for name in tables:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {_quoted(engine, name)}")
    finally:
        engine.dispose()


def start_listeners(connectors: Iterable[Any], wake: Callable[[str], None]) -> list[PgListener]:
    """One listener per PostgreSQL database holding table sources; a NOTIFY calls ``wake(source_key)``."""
    by_url: dict[str, dict[str, list[str]]] = {}
    for connector in connectors:
        if isinstance(connector, TableConnector) and connector.dialect == "postgresql":
            by_url.setdefault(connector.url, {}).setdefault(connector.spec.name, []).append(connector.key)
    listeners = []
    for url, tables in by_url.items():
        def on_table(name: str, tables: dict[str, list[str]] = tables) -> None:
            for key in tables.get(name, []):
                wake(key)

        listeners.append(PgListener(url, CHANNEL, on_table, name="sql-notify", logger=log).start())
    return listeners


def command(settings_environ: Mapping[str, str], action: str, tables: Sequence[str], url: str | None) -> str:
    """``syncd sql-notify install|remove TABLE…`` in ``url``, else ``SYNCD_SQL_URL`` or ``DATABASE_URL``."""
    from syncd.settings import get_str, normalize_database_url

    target = normalize_database_url(url or get_str(settings_environ, "SYNCD_SQL_URL")
                                    or get_str(settings_environ, "DATABASE_URL") or "sqlite:///syncd.db")
    if action == "install":
        install(target, tables)
        return f"installed NOTIFY trigger {TRIGGER} on {', '.join(tables)} in {safe_url(target)}"
    remove(target, tables)
    return f"removed NOTIFY trigger {TRIGGER} from {', '.join(tables)} in {safe_url(target)}"
