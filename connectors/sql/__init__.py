"""Your own database's tables as sources: run a workflow when a row is inserted (or updated).

::

    from connectors.sql import table

    @workflow(name="welcome-email", on=table("users", event="insert", key="id"))
    def welcome(event, ctx):
        event.data["email"]   # the row, JSON-safe (date-times ISO-8601, decimals as text)

Each distinct (database, table, event) among the registered workflows' triggers becomes one source:
``sql:users`` (inserts), ``sql:users:update`` (changes, by an ``updated_at`` column), ``sql:crm.users`` for
a table in another database (``url=``). Event types are ``table.<table>.<event>``; event ids are the key
(``42``) or the key and the change's time (``42@2026-01-01T12:00:00.000000Z``). See ``client.py`` for how
the cursor makes every row arrive once, and ``notify.py`` for the optional PostgreSQL wake-up.

Settings: ``SYNCD_SQL_URL`` (the database of tables given without ``url=``; default ``DATABASE_URL``),
``SYNCD_SQL_TABLES`` (extra sources by environment, comma list of ``table[:event[:key]]``, for workflows
using ``rows()``), ``SYNCD_SQL_GAP_SECONDS`` (how long a skipped integer key is waited for; default 300).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from connectors.sql.client import (
    GAP_SECONDS,
    TableConnector,
    TableSpec,
    json_safe,
    read_engine,
    source_key,
)
from syncd.contracts import Connector, Event, Listener
from syncd.errors import ConfigError, ConnectorError
from syncd.settings import MAX_INTERVAL_SECONDS, get_float, get_list, get_str, normalize_database_url, safe_url
from syncd.workflows import Registry, Trigger

NAME = "sql"
log = logging.getLogger("syncd.sql")


@dataclass(frozen=True)
class TableTrigger(Trigger):
    """A ``Trigger`` that also says which table to poll (the provider builds sources from these)."""

    spec: TableSpec | None = None
    label: str | None = None  # names a database other than the default in the source key


def table(name: str, *, event: str = "insert", key: str = "id", url: str | None = None,
          updated_at: str = "updated_at", timestamp: str | None = None, monotonic: bool = False,
          where: Callable[[Event], bool] | None = None) -> TableTrigger:
    """Trigger on rows of table ``name`` (``schema.table`` accepted).

    ``event``: ``insert`` (rows whose ``key`` is beyond the cursor) or ``update`` (rows whose ``updated_at``
    moved). ``key``: an integer column, or any ordered column with ``monotonic=True``. ``url``: another
    database (SQLAlchemy URL; default the app's). ``timestamp``: column for ``occurred_at`` of inserts.
    ``where``: a predicate on the event, evaluated before the workflow runs.
    """
    spec = TableSpec(table=name, event=event, key=key, url=normalize_database_url(url) if url else None,
                     updated_at=updated_at, timestamp=timestamp, monotonic=monotonic)
    label = database_label(spec.url) if spec.url else None
    return TableTrigger(provider=NAME, types=frozenset({spec.event_type}),
                        streams=frozenset({source_key(spec, label)}), where=where, spec=spec, label=label)


def rows(name: str, event: str = "insert", where: Callable[[Event], bool] | None = None) -> Trigger:
    """Trigger on a table source configured by environment (``SYNCD_SQL_TABLES``), in the default database."""
    spec = TableSpec(table=name, event=event)
    return Trigger(provider=NAME, types=frozenset({spec.event_type}), streams=frozenset({source_key(spec)}),
                   where=where)


def database_label(url: str) -> str:
    """A short name for another database in source keys: its database name (a SQLite file's stem)."""
    try:
        database = make_url(url).database or ""
    except (ArgumentError, ValueError):
        raise ValueError(f"table(url=...): not a database URL: {safe_url(url)}") from None
    return PurePath(database).stem or "db"


def env_specs(environ: Mapping[str, str]) -> list[TableSpec]:
    """``SYNCD_SQL_TABLES``: ``users,orders:update,events:insert:seq`` → specs in the default database."""
    specs = []
    for item in get_list(environ, "SYNCD_SQL_TABLES"):
        parts = [p.strip() for p in item.split(":")]
        if len(parts) > 3 or not parts[0]:
            raise ConfigError("SYNCD_SQL_TABLES", f"expected table[:event[:key]], got {item!r}")
        try:
            specs.append(TableSpec(table=parts[0], event=parts[1] if len(parts) > 1 else "insert",
                                   key=parts[2] if len(parts) > 2 else "id"))
        except ValueError as exc:
            raise ConfigError("SYNCD_SQL_TABLES", str(exc)) from None
    return specs


def configured(environ: Mapping[str, str], registry: Registry) -> list[tuple[str, TableSpec]]:
    """Every (source key, spec) the triggers and the environment ask for, one per key; conflicting
    declarations of one source (two different key columns) are a ``ConfigError``."""
    found: dict[str, TableSpec] = {}
    declared: list[tuple[str, TableSpec]] = []
    for wf in registry.all():
        trigger = wf.trigger
        if isinstance(trigger, TableTrigger) and trigger.spec is not None:
            declared.append((source_key(trigger.spec, trigger.label), trigger.spec))
    declared += [(source_key(spec), spec) for spec in env_specs(environ)]
    for key, spec in declared:
        known = found.get(key)
        if known is None:
            found[key] = spec
        elif (known.key, known.updated_at, known.url) != (spec.key, spec.updated_at, spec.url):
            raise ConfigError("SYNCD_WORKFLOWS", f"source {key} is declared twice with different settings "
                              f"(key {known.key!r}/{spec.key!r}, updated_at {known.updated_at!r}/"
                              f"{spec.updated_at!r}); use one table(...) trigger for both workflows")
    return list(found.items())


class _Provider:
    name = NAME

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]:
        """One connector per table source. Each table is looked up now: a key that is not known to be
        monotonic is a ``ConfigError``; a missing table or column is left for the source's ticks to report
        (so the other sources run)."""
        wanted = configured(environ, registry)
        if not wanted:
            return []
        default_url = normalize_database_url(get_str(environ, "SYNCD_SQL_URL")
                                             or get_str(environ, "DATABASE_URL") or "sqlite:///syncd.db")
        gap_seconds = get_float(environ, "SYNCD_SQL_GAP_SECONDS", GAP_SECONDS, minimum=0.0,
                                maximum=MAX_INTERVAL_SECONDS)
        built: list[Connector] = []
        engines: dict[str, Engine] = {}  # one pool per database, not per table (many tables, few connections)
        try:
            for key, spec in wanted:
                url = spec.url or default_url
                engine = engines[url] if url in engines else engines.setdefault(url, read_engine(url))
                connector = TableConnector(spec, url=url, key=key, gap_seconds=gap_seconds, engine=engine)
                built.append(connector)
                # A missing table/column or a database that is down: this source's ticks fail and say why;
                # said at start-up too, as a warning (the other sources run).
                try:
                    connector.reflect()
                except ConnectorError as exc:
                    log.warning("%s", exc)
        except Exception:
            for made in built:
                made.close()
            raise
        return built

    def builtin_workflows(self, registry: Registry) -> None:
        """No built-in mirror: the tables are already yours."""

    def listen(self, connectors: Sequence[Connector], wake: Callable[[str], None]) -> list[Listener]:
        """NOTIFY listeners for the PostgreSQL tables among ``connectors`` (see ``connectors.sql.notify``)."""
        from connectors.sql.notify import start_listeners

        return list(start_listeners(connectors, wake))


provider = _Provider()

__all__ = ["NAME", "TableConnector", "TableSpec", "TableTrigger", "json_safe", "provider", "rows", "table"]
