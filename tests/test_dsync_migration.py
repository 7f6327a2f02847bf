"""Revision 0013 creates the Directory Sync mirror tables exactly as ``connectors.workos.tables`` declares
them (Alembic finds no difference), and its downgrade removes them, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connectors.workos.tables import directories, directory_group_members, directory_groups, directory_users
from syncd.store.db import create_engine
from syncd.store.schema import alembic_config, load_metadata, migrate

NAMES = {t.name for t in (directories, directory_users, directory_groups, directory_group_members)}


def mine(diff: Any) -> bool:
    """Whether one of Alembic's differences concerns a Directory Sync table."""
    return any(name in repr(diff) for name in NAMES)


def test_0013_matches_the_declared_tables_and_downgrades(db_url: str) -> None:
    db = create_engine(db_url)
    try:
        migrate(db)
        with db.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) >= NAMES
            diffs = compare_metadata(MigrationContext.configure(conn), load_metadata())
        assert [d for d in diffs if mine(d)] == []
        cfg = alembic_config()
        with db.begin() as conn:
            cfg.attributes["connection"] = conn  # type: ignore[attr-defined]
            command.downgrade(cfg, "0010")  # type: ignore[arg-type]
        with db.connect() as conn:
            assert not NAMES & set(sa.inspect(conn).get_table_names())
        migrate(db)
        with db.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) >= NAMES
    finally:
        db.dispose()
