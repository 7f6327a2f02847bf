"""The whole schema (syncd's tables and every bundled mirror) and how to bring a database up to it."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.db import metadata, reading

log = logging.getLogger("syncd.schema")

#: Modules declaring tables on ``syncd.db.metadata``; Alembic compares against all of them.
TABLE_MODULES = ("syncd.store.tables", "connectors.workos.tables", "connectors.github.tables")

#: Any constant: the key of the PostgreSQL advisory lock that serialises concurrent migrations.
MIGRATION_LOCK_KEY = 7_411_123_001


def load_metadata() -> sa.MetaData:
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return metadata


def alembic_config(url: str | None = None) -> object:
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision``. Replicas starting together on PostgreSQL take turns
    (advisory lock), so exactly one applies each revision."""
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()  # type: ignore[arg-type]
    if revision == "head" and current_revision(engine) == head:
        return  # up to date: no write transaction (on SQLite `syncd status` would wait for the write lock)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn  # type: ignore[attr-defined]
        command.upgrade(cfg, revision)  # type: ignore[arg-type]


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with reading(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()
