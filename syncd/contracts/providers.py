"""What plugs into the engine from outside: provider records (``Event``, ``Page``, ``Window``), the
``Connector`` and ``Provider`` protocols (connectors/), listeners, and the clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:

    from syncd.workflows import Registry


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
class Quarantined:
    """An event that cannot be processed, held apart so it never blocks its stream.

    ``event_id`` is its id when it has a usable one (None otherwise: a missing or non-text id), ``reason``
    one line saying what is wrong, ``raw`` a safe text form of what the provider sent (printable ASCII,
    bounded in length and depth: see ``syncd.store.quarantine.safe_raw``), ``occurred_at`` its time when
    it could be read (what ``syncd cursor reset --to`` needs to fetch it again after a fix).
    """

    stream: str
    event_id: str | None
    reason: str
    raw: str
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page fetched from a provider.

    ``next_cursor`` is the opaque cursor to store once this page is committed (None: unchanged).
    ``has_more`` says another page is available right now. ``skipped`` counts malformed events that
    were dropped with an error logged; ``quarantined`` holds those of them the connector could describe
    (the engine records them, visible by id in ``syncd status``). ``meta`` carries provider state worth
    showing in ``syncd status`` (rate-limit remaining, reset time…); it is stored with the cursor.
    """

    events: tuple[Event, ...]
    next_cursor: str | None
    has_more: bool
    skipped: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)
    quarantined: tuple[Quarantined, ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    """A backfill window [start, end) over event time, both UTC-aware."""

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@runtime_checkable
class Connector(Protocol):
    """Fetches one page of events for one source. The engine owns the loop, the cursor and the store.

    Contract:
    - ``key`` is the source key and the ``stream`` of every event it returns (``workos``, ``github:o/r``).
    - ``fetch_page(cursor, window)`` returns the events strictly after ``cursor`` (None: from the start,
      or from ``window.start``), oldest first, at most one provider page. It never sleeps and never
      retries on its own beyond the HTTP retry policy; it raises ``RetryableError`` (with ``retry_after``
      when the provider said), ``AuthError`` or ``FatalError``. Malformed single events are dropped,
      counted in ``Page.skipped`` and described in ``Page.quarantined``, never raised: one bad event never
      fails its page. A page whose envelope is unusable (not the provider's list shape) is a
      ``RetryableError``: retried, then the tick fails with that one-line message.
    - With a ``window`` it returns only events whose time lies in [start, end), and ``has_more`` is False
      once the window is exhausted.
    - Replaying from an older cursor returns the same events again: dedupe is the engine's job.
    - ``Page.next_cursor`` must move whenever ``has_more`` is True (the engine stops with
      ``CursorStuckError`` otherwise).
    """

    key: str

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page: ...

    def close(self) -> None: ...


class Provider(Protocol):
    """A provider package (``connectors.workos``…) as the app sees it.

    ``sources`` builds one connector per configured source from the environment; it returns [] when the
    provider has no credentials/config, and raises ``ConfigError`` naming the variable when a value is bad.
    ``builtin_workflows`` registers the provider's built-in mirror workflows into ``registry``.
    A provider is found through the ``syncd.connectors`` entry-point group (``syncd.plugins``).

    Optional member, looked up with ``getattr``: ``listen(connectors, wake) -> list[Listener]``, for sources
    that can say when new data is there (PostgreSQL tables' NOTIFY): it starts listeners for those of
    ``connectors`` that are its own, each calling ``wake(source_key)`` to tick that source now. The daemon
    stops them on shutdown. Polling stays the guarantee; a listener only shortens the wait.
    """

    name: str

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]: ...

    def builtin_workflows(self, registry: Registry) -> None: ...


class Listener(Protocol):
    """A background listener started by a provider's ``listen``; ``stop`` ends it within ``timeout``."""

    def stop(self, timeout: float = ...) -> None: ...


class Clock(Protocol):
    """Where syncd reads the time; tests pass a fake one. Always UTC-aware."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A settable clock for tests and simulations of long waits (sleeps, lease expiry, backoff)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        self._now = moment


def storable_id(raw_id: Any, max_length: int) -> bool:
    """An id a connector may make its cursor of: non-empty text a database stores (no NUL, no lone
    surrogate) of at most ``max_length`` characters. An unfit id does not move the cursor (its event is
    quarantined; the next fit id moves it past)."""
    if not isinstance(raw_id, str) or not raw_id or len(raw_id) > max_length or "\x00" in raw_id:
        return False
    try:
        raw_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
