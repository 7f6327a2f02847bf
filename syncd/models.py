"""Frozen records passed between connectors, the engine and workflows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One provider event.

    ``stream`` is the source key it came from (``workos``, ``github:owner/repo``); ``(stream, id)`` is unique.
    ``data`` is the provider's object snapshot. ``action`` is an optional sub-type (GitHub: opened/edited/closed…).
    """

    stream: str
    id: str
    type: str
    occurred_at: datetime
    data: Mapping[str, Any]
    action: str | None = None

    @property
    def provider(self) -> str:
        return self.stream.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Page:
    """One page fetched from a provider.

    ``next_cursor`` is the opaque cursor to store once this page is committed (None: unchanged).
    ``has_more`` says another page is available right now. ``skipped`` counts malformed events that
    were dropped with an error logged. ``meta`` carries provider state worth showing in ``syncd status``
    (rate-limit remaining, reset time…); it is stored with the cursor.
    """

    events: tuple[Event, ...]
    next_cursor: str | None
    has_more: bool
    skipped: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    """A backfill window [start, end) over event time, both UTC-aware."""

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end
