"""Engines and connections: ``create_engine`` for either dialect, ``reading`` for reads that never wait."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncd import jsoncodec
from syncd.store import sqlite
from syncd.store.bulk import BinaryList
from syncd.store.sqlite import READ_ONLY


def create_engine(url: str, *, echo: bool = False, workers: int = 0) -> Engine:
    """An engine configured for syncd's access pattern on either dialect; on PostgreSQL its pool has room for
    ``workers`` run transactions besides the ticks' (a worker holds a connection only while it writes)."""
    if url.startswith("sqlite"):
        file = sa.engine.make_url(url).database not in (None, "", ":memory:")
        engine = sa.create_engine(
            url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False},
            json_serializer=jsoncodec.dumps, json_deserializer=jsoncodec.loads,
            **({"pool_size": 5, "max_overflow": 10 + workers} if file else {}),
        )
        sqlite.configure(engine)
        return engine
    engine = sa.create_engine(
        url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=5 + workers, pool_recycle=1800,
        json_serializer=jsoncodec.dumps, json_deserializer=jsoncodec.loads,
        connect_args={"connect_timeout": 10, "options": _options(url)},
    )
    sa.event.listen(engine, "connect", _binary_arrays)
    return engine


def _binary_arrays(dbapi_connection: Any, _record: Any) -> None:
    """psycopg sends ``bulk.BinaryList`` parameters as binary arrays on this connection (see there why)."""
    from psycopg.types.array import ListBinaryDumper

    adapters = getattr(dbapi_connection, "adapters", None)  # psycopg's; another driver keeps its own ways
    if adapters is not None:
        adapters.register_dumper(BinaryList, ListBinaryDumper)


def _options(url: str) -> str:
    """``POSTGRES_OPTIONS`` after the URL's own ``options`` (``?options=-c search_path=…``), which it would replace."""
    given = sa.engine.make_url(url).query.get("options")
    own = " ".join(given) if isinstance(given, tuple) else given
    return f"{own} {POSTGRES_OPTIONS}" if own else POSTGRES_OPTIONS


#: Session settings of syncd's PostgreSQL connections. ``force_custom_plan``: psycopg prepares a statement
#: run five times on a connection, and PostgreSQL would then switch it to a generic plan, made without the
#: parameters' values: for the key look-ups over an array (``bulk.one_of``) on tables too young to have
#: statistics, that plan scanned the whole table every page. A custom plan costs a plan per execution, and
#: syncd's bulk writes are few statements (COPY) per transaction (bench/README.md, scenario D).
POSTGRES_OPTIONS = "-c plan_cache_mode=force_custom_plan"


def reading(engine: Engine) -> Connection:
    """A connection for reads only (``with reading(db) as conn:``): status, health, metrics, look-ups.

    On SQLite it never waits for the write lock, so ``syncd status`` and the health endpoint answer at
    once in the middle of a catch-up, whose transactions follow each other with almost no gap. Writing
    through it is an error on SQLite (the write lock is not taken up front). PostgreSQL: a plain connection.
    """
    return engine.connect().execution_options(**{READ_ONLY: True})
