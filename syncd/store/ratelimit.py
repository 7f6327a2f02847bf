"""Call slots of the outbound integrations, shared by every replica: ``syncd_integration_slots``.

One row per integration holds ``next_at``, the earliest moment (unix seconds) its next call may start —
the "theoretical arrival time" of GCRA's virtual scheduling. A call *takes* a slot: it starts at
``max(next_at, now)`` and pushes ``next_at`` one interval (``1 / rate``) further, in one atomic
statement, so calls from every replica, thread and process are spaced by the interval however they
interleave. A ``Retry-After`` from the integration *pauses* it: ``next_at`` moves to the end of the wait.

:func:`take` only takes a slot that starts within ``horizon`` seconds: a caller that would wait longer
is told when the next slot is (:attr:`Slot.at`) and reserves nothing, so it can come back then without
having used a slot it never called in.

Two implementations of one contract (:class:`Slots`): :class:`SqlSlots` on the table (PostgreSQL, the
distributed engine; it also runs on SQLite), and :class:`MemorySlots` for one process. ``now`` is always
given by the caller (wall-clock seconds), so replicas must keep their clocks in step (NTP), as leases do.
"""

from __future__ import annotations

import threading
from typing import NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from syncd.store.connect import reading
from syncd.store.types import metadata

__all__ = ["MemorySlots", "Slot", "Slots", "SqlSlots", "integration_slots"]

integration_slots = sa.Table(
    "syncd_integration_slots",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),  # http:<STEM> or slack
    sa.Column("next_at", sa.Float, nullable=False),  # unix seconds: when the next call may start
)


class Slot(NamedTuple):
    """What :meth:`Slots.take` decided: ``granted`` — the call starts at ``at`` (now or within the
    horizon; the slot is taken); else the next slot starts at ``at``, beyond the horizon (nothing taken)."""

    granted: bool
    at: float


class Slots(Protocol):
    """The shared state of the integrations' rate limits and pauses. Every method is atomic and
    thread-safe; names are at most 200 characters."""

    def take(self, name: str, *, now: float, interval: float, horizon: float) -> Slot:
        """Take ``name``'s next slot if it starts by ``now + horizon``: ``Slot(True, start)`` with start =
        ``max(next_at, now)``, and ``next_at`` becomes ``start + interval``. Otherwise ``Slot(False,
        next_at)`` and nothing changes. A name never seen has its first slot at ``now``."""
        ...

    def next_at(self, name: str) -> float | None:
        """When ``name``'s next call may start (None: never limited nor paused). Reads only."""
        ...

    def pause(self, name: str, until: float) -> None:
        """No call of ``name`` before ``until``: ``next_at`` becomes ``max(next_at, until)``."""
        ...


class MemorySlots:
    """:class:`Slots` for one process (a dict under a lock)."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, name: str, *, now: float, interval: float, horizon: float) -> Slot:
        with self._lock:
            start = max(self._next.get(name, now), now)
            if start > now + horizon:
                return Slot(False, start)
            self._next[name] = start + interval
            return Slot(True, start)

    def next_at(self, name: str) -> float | None:
        with self._lock:
            return self._next.get(name)

    def pause(self, name: str, until: float) -> None:
        with self._lock:
            self._next[name] = max(self._next.get(name, until), until)


_NOW = sa.bindparam("now", type_=sa.Float)
_INTERVAL = sa.bindparam("interval", type_=sa.Float)
_LATEST = sa.bindparam("latest", type_=sa.Float)  # now + horizon: the latest start a caller waits for
_UNTIL = sa.bindparam("until", type_=sa.Float)


class SqlSlots:
    """:class:`Slots` on ``syncd_integration_slots``: each method is one short transaction of one
    statement (``INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING``), atomic under concurrent
    replicas: PostgreSQL locks the row and re-checks the ``WHERE`` on its latest version."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        col = integration_slots.c.next_at
        take = insert(integration_slots).values(name=sa.bindparam("name"), next_at=_NOW + _INTERVAL)
        self._take = take.on_conflict_do_update(
            index_elements=[integration_slots.c.name],
            set_={"next_at": sa.case((col > _NOW, col), else_=_NOW) + _INTERVAL},
            where=col <= _LATEST,
        ).returning(integration_slots.c.next_at)
        pause = insert(integration_slots).values(name=sa.bindparam("name"), next_at=_UNTIL)
        self._pause = pause.on_conflict_do_update(
            index_elements=[integration_slots.c.name], set_={"next_at": _UNTIL}, where=col < _UNTIL)
        self._read = sa.select(col).where(integration_slots.c.name == sa.bindparam("name"))

    def take(self, name: str, *, now: float, interval: float, horizon: float) -> Slot:
        with self._engine.begin() as conn:
            taken = conn.execute(self._take, {"name": name, "now": now, "interval": interval,
                                              "latest": now + horizon}).scalar()
            if taken is not None:
                return Slot(True, taken - interval)
            # The slot was beyond the horizon; read it in the same transaction (it can only have moved on).
            later = conn.execute(self._read, {"name": name}).scalar_one()
        return Slot(False, later)

    def next_at(self, name: str) -> float | None:
        with reading(self._engine) as conn:
            value: float | None = conn.execute(self._read, {"name": name}).scalar()
        return value

    def pause(self, name: str, until: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(self._pause, {"name": name, "until": until})
