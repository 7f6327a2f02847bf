"""What the mirror holds of a repository, as reconciliation reads it: the numbers of ``github_issues``
in batches, and one row shaped as the issue GitHub listed (the last mirrored version).

Reads only, on an engine of its own (the provider's sources are built before the app's engine): on
SQLite plain deferred transactions, so a read never takes the write lock. The numbers come in batches
by keyset (``number > last ORDER BY number LIMIT n``), so a repository of 50,000 issues is never
loaded at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connectors.github.tables import issues

BATCH = 1000


class MirrorIndex(Protocol):
    """The mirrored issues of a repository (``owner/name`` in lower case)."""

    def numbers(self, repo: str, batch: int = BATCH) -> Iterator[list[int]]:
        """Every mirrored issue number of ``repo``, ascending, ``batch`` at a time."""
        ...

    def snapshot(self, repo: str, number: int) -> dict[str, Any] | None:
        """The mirrored issue ``number`` as GitHub lists an issue (the mirror's fields only); None if absent."""
        ...

    def close(self) -> None: ...


class SqlMirrorIndex:
    """``MirrorIndex`` over ``github_issues`` in the database at ``url`` (or on ``engine``)."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        if engine is None:
            if url is None:
                raise ValueError("give a database url or an engine")
            engine = _read_engine(url)
        self._engine = engine

    def numbers(self, repo: str, batch: int = BATCH) -> Iterator[list[int]]:
        last = -1
        while True:
            query = (sa.select(issues.c.number).where(issues.c.repo == repo, issues.c.number > last)
                     .order_by(issues.c.number).limit(batch))
            with self._engine.connect() as conn:
                found = [int(n) for n in conn.execute(query).scalars()]
            if not found:
                return
            yield found
            last = found[-1]

    def snapshot(self, repo: str, number: int) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(issues).where(issues.c.repo == repo, issues.c.number == number)
                               ).mappings().first()
        return as_issue(dict(row)) if row is not None else None

    def close(self) -> None:
        self._engine.dispose()


def as_issue(row: dict[str, Any]) -> dict[str, Any]:
    """A ``github_issues`` row in the shape GitHub lists an issue (``id``, ``number``, ``title``, ``state``,
    ``labels``, ``user``, times, and ``pull_request`` for a pull request)."""
    issue: dict[str, Any] = {
        "id": row["id"], "number": row["number"], "title": row["title"], "state": row["state"],
        "labels": [{"name": name} for name in row["labels"] or []],
        "user": {"login": row["author"]} if row["author"] is not None else None,
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
        "closed_at": _iso(row["closed_at"]),
    }
    if row["is_pull_request"]:
        issue["pull_request"] = {}
    return issue


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def _read_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    return sa.create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=2, connect_args={"connect_timeout": 10})


__all__ = ["BATCH", "MirrorIndex", "SqlMirrorIndex", "as_issue"]
