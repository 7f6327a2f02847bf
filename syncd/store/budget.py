"""Provider request budgets, shared by every replica: ``syncd_budgets``, one row per provider credential.

A row holds what the provider last said about the credential's budget (``limit``, ``remaining``, the
window's ``reset_at``), how many requests syncd made in that window (all replicas), and the pacing state:
``next_at``, when the credential's next routine poll may start (a GCRA "theoretical arrival time", as in
``syncd.store.ratelimit``), and the effective poll interval and source count last planned (for status).

``credential`` is the provider's name of a credential *hash* (``github:3f2a…``), never a secret.

:meth:`SqlBudgets.update` runs a caller's pure planner on the row, locked, in one short transaction
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write lock is taken at ``BEGIN``), so replicas taking
polls from one credential never both see the same slots. The policy (what a header means, how far the
budget stretches) lives with the caller; only the SQL lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from syncd.store.connect import reading
from syncd.store.types import metadata

__all__ = ["Budget", "SqlBudgets", "budgets"]

T = TypeVar("T")

budgets = sa.Table(
    "syncd_budgets",
    metadata,
    sa.Column("credential", sa.String(100), primary_key=True),  # provider:hash, never the secret
    sa.Column("limit", sa.Integer, nullable=False),  # 0: not known yet
    sa.Column("remaining", sa.Integer, nullable=False),
    sa.Column("reset_at", sa.Float, nullable=False),  # unix seconds: when the provider's window resets
    sa.Column("requests", sa.BigInteger, nullable=False),  # syncd's requests in this window, all replicas
    sa.Column("opening", sa.Integer, nullable=False),  # remaining at syncd's first answer of this window
    sa.Column("window_start", sa.Float, nullable=False),  # unix seconds: first observation of this window
    sa.Column("next_at", sa.Float, nullable=False),  # unix seconds: the next routine poll's earliest start
    sa.Column("interval", sa.Float, nullable=False),  # seconds: effective poll interval of each source
    sa.Column("sources", sa.Integer, nullable=False),
    sa.Column("observed_at", sa.Float, nullable=False),  # unix seconds: last update
)


@dataclass(frozen=True)
class Budget:
    """One credential's row (see the module docstring). ``Budget.new(credential, now)``: nothing known."""

    credential: str
    limit: int
    remaining: int
    reset_at: float
    requests: int
    opening: int
    window_start: float
    next_at: float
    interval: float
    sources: int
    observed_at: float

    @classmethod
    def new(cls, credential: str, now: float) -> Budget:
        return cls(credential, 0, 0, 0.0, 0, 0, now, now, 0.0, 0, now)

    @property
    def spend_per_hour(self) -> float:
        """Requests the provider counted per hour since syncd's first answer of this window (all callers)."""
        elapsed = self.observed_at - self.window_start
        return (self.opening - self.remaining) * 3600 / elapsed if self.limit and elapsed >= 1 else 0.0


class SqlBudgets:
    """``syncd_budgets`` on either dialect. Thread-safe (each call is its own transaction)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        insert = postgresql.insert if self._postgres else sqlite.insert
        self._ensure = insert(budgets).on_conflict_do_nothing(index_elements=[budgets.c.credential])
        select = sa.select(budgets).where(budgets.c.credential == sa.bindparam("credential"))
        self._lock = select.with_for_update() if self._postgres else select
        self._read = select
        self._write = budgets.update().where(budgets.c.credential == sa.bindparam("key"))

    def update(self, credential: str, now: float, plan: Callable[[Budget], tuple[Budget, T]]) -> tuple[Budget, T]:
        """Lock ``credential``'s row (created as ``Budget.new`` if absent), store ``plan(row)[0]``, return
        what ``plan`` returned. ``plan`` must be quick and pure: it runs inside the transaction."""
        with self._engine.begin() as conn:
            # Read first: the row exists but for a credential's first update, and SQLAlchemy compiles an
            # INSERT … ON CONFLICT anew on every call (its statement cache cannot key it).
            row = conn.execute(self._lock, {"credential": credential}).first()
            if row is None:
                conn.execute(self._ensure, asdict(Budget.new(credential, now)))
                row = conn.execute(self._lock, {"credential": credential}).one()
            new, result = plan(Budget(**row._mapping))
            values = {k: v for k, v in asdict(new).items() if k != "credential"}
            conn.execute(self._write, {"key": credential, **values})
        return new, result

    def get(self, credential: str) -> Budget | None:
        """``credential``'s row, if any. Reads only."""
        with reading(self._engine) as conn:
            row = conn.execute(self._read, {"credential": credential}).first()
        return Budget(**row._mapping) if row is not None else None

    def all(self) -> list[Budget]:
        """Every credential's row, by credential. Reads only."""
        with reading(self._engine) as conn:
            rows = conn.execute(sa.select(budgets).order_by(budgets.c.credential)).all()
        return [Budget(**row._mapping) for row in rows]
