"""The whole schema (syncd's tables and every bundled mirror) and how to bring a database up to it."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncd.errors import SyncdError
from syncd.store.connect import reading
from syncd.store.types import metadata

log = logging.getLogger("syncd.schema")

#: Modules declaring tables on ``syncd.store.db.metadata``; Alembic compares against all of them.
TABLE_MODULES = ("syncd.store.tables", "syncd.store.ratelimit", "syncd.store.budget", "syncd.store.spanloss",
                 "connectors.workos.tables", "connectors.github.tables", "connectors.stripe.tables")

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


#: The newest revision in ``migrations/versions`` (a test holds it to Alembic's own answer). A database
#: already there is not handed to Alembic: importing it and reading the scripts was a fifth of a start-up.
HEAD_REVISION = "0017"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision``. Replicas starting together on PostgreSQL take turns
    (advisory lock), so exactly one applies each revision. A database at a revision these migrations do not
    know (a newer syncd migrated it) is a ``SyncdError`` saying so in one line, nothing changed."""
    current = current_revision(engine)
    if revision == "head" and current == HEAD_REVISION:
        return  # up to date: no write transaction (on SQLite `syncd status` would wait for the write lock)
    from alembic import command
    from alembic.util import CommandError

    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn  # type: ignore[attr-defined]
            command.upgrade(cfg, revision)  # type: ignore[arg-type]
    except CommandError as exc:  # Alembic's own words, e.g. "Can't locate revision identified by '0099'"
        raise SyncdError(f"cannot migrate the database from schema revision {current} (this syncd's newest is "
                         f"{HEAD_REVISION}; a newer syncd migrated it?): {exc}") from None


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision (None: a new database). Read directly, as Alembic reads it."""
    with reading(engine) as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = [row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    if len(versions) > 1:  # Alembic's own error for a branched history; syncd's is linear
        raise RuntimeError(f"the database has several Alembic heads: {', '.join(sorted(versions))}")
    return versions[0] if versions else None


#: Alembic's table of applied revisions (its default name; migrations/env.py does not change it).
VERSION_TABLE = "alembic_version"
