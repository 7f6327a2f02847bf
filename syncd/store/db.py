"""Database plumbing's public names, where migrations, connectors' tables and ``ops/`` import them from.

The code lives by responsibility: ``types`` (metadata, ``UTCDateTime``, ``json_type``), ``connect``
(``create_engine``, ``reading``), ``sqlite`` (pragmas, the WAL checkpointer).
"""

from __future__ import annotations

from syncd.store.connect import create_engine, reading
from syncd.store.sqlite import WalCheckpointer, wal_checkpointer
from syncd.store.types import NAMING, UTCDateTime, json_type, metadata

__all__ = ["NAMING", "UTCDateTime", "WalCheckpointer", "create_engine", "json_type", "metadata", "reading",
           "wal_checkpointer"]
