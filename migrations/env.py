"""Alembic environment. No ``fileConfig``: it would disable the application's loggers when run in-process."""

from __future__ import annotations

import os

from alembic import context

from syncd.settings import normalize_database_url
from syncd.store.db import create_engine
from syncd.store.schema import load_metadata

target_metadata = load_metadata()
config = context.config


def run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
elif context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = config.get_main_option("sqlalchemy.url") or normalize_database_url(
        os.environ.get("DATABASE_URL", "sqlite:///syncd.db"))
    engine = create_engine(url)
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
