"""Alembic migrations for syncd's tables and the bundled mirrors (shipped inside the package)."""
