"""syncd's state in the database: cursors and leases, the ledger, runs, steps and ticks.

``SqlStore`` implements the ``Store`` contract (``syncd.contracts``); it is the only code that writes
SQL on syncd's own tables. Table declarations are in ``tables``, the plumbing in ``connect``, ``sqlite``,
``types`` and ``bulk``; the mirrors' newer-wins writes in ``mirrors``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection

from syncd.contracts import SourceRow
from syncd.store import cursors
from syncd.store.sqlstore import SqlLease, SqlStore, SqlTxn
from syncd.store.tables import events, runs, sources, ticks

__all__ = ["SourceRow", "SqlLease", "SqlStore", "SqlTxn", "all_sources", "events", "get_source", "runs", "sources",
           "ticks"]


def get_source(conn: Connection, key: str) -> SourceRow | None:
    """The cursor's row read on ``conn`` (None: never synced)."""
    return cursors.get_source(conn, key)


def all_sources(conn: Connection) -> Sequence[SourceRow]:
    """Every cursor's row, live sources first, by key."""
    return cursors.all_sources(conn)
