"""Fetching a tick's pages: in groups committed together (``Pager``), and ahead of the commits (``Prefetcher``).

Both take narrow callables, never the engine: ``fetch(cursor) -> Page`` and ``new_span() -> Span`` (a
``page.fetch`` span, left open: the page's events are processed under it, and it ends when they commit).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from syncd.contracts import Page
from syncd.engine.decisions import check_progress, error_text
from syncd.errors import CursorCycleError
from syncd.settings import GROUP_EVENTS, GROUP_SECONDS

#: Prefetch the next page while one commits once a page takes this long to arrive (see SyncEngine._page_loop).
PREFETCH_AFTER_SECONDS = 0.01
#: The loop guard remembers this many cursors of a tick (16-byte digests): pages that cycle within that many
#: pages fail the tick at the first repeat; a longer cycle is still bounded by ticks ending at this memory.
CYCLE_MEMORY = 100_000

Fetch = Callable[[str | None], Page]
SpanFactory = Callable[[], trace.Span]
Group = list[tuple[trace.Span, Page]]


@dataclass
class Pager:
    """The pages of one tick of one cursor (``key``), fetched directly or taken from ``prefetch``."""

    key: str
    fetch: Fetch
    new_span: SpanFactory
    prefetch: Prefetcher | None
    stop: threading.Event
    group_events: int = GROUP_EVENTS
    group_seconds: float = GROUP_SECONDS
    #: Digests of the cursors fetched in this tick (the loop guard's memory; see ``check_cycle``).
    fetched: OrderedDict[bytes, None] = field(default_factory=OrderedDict)

    def group(self, cursor: str | None, room: int | None) -> tuple[Group, Exception | None]:
        """The pages committed together: while catching up, as many as arrive within ``group_seconds``, up
        to ``group_events`` events (and ``room`` pages, if given); one page otherwise. A page's cost is mostly
        per transaction and per statement, not per event, so a backlog goes several times faster in bigger
        transactions; each still moves the cursor with all its events' effects. If a fetch fails after the
        first page, the pages already in hand are returned with the error, to be committed before it is
        raised."""
        group: Group = []
        started = time.monotonic()
        while True:
            try:
                span, page = self.next_page(cursor)
            except Exception as exc:
                if not group:
                    raise
                return group, exc
            group.append((span, page))
            cursor = page.next_cursor if page.next_cursor is not None else cursor
            if (not page.has_more or self.stop.is_set()
                    or (room is not None and len(group) >= room)
                    or sum(len(p.events) for _, p in group) >= self.group_events
                    or time.monotonic() - started >= self.group_seconds):
                return group, None

    def next_page(self, cursor: str | None) -> tuple[trace.Span, Page]:
        """Fetch the page at ``cursor`` (or take it from the prefetcher) under its own ``page.fetch`` span,
        left open: the events of the page are processed under it, and it ends when the page commits."""
        prefetch = self.prefetch
        span, page = prefetch.take(cursor) if prefetch is not None else (None, None)
        if span is None:
            span = self.new_span()
        try:
            with trace.use_span(span, end_on_exit=False):
                if page is None:
                    fetch_started = time.monotonic()
                    page = self.fetch(cursor)
                    if prefetch is not None:
                        prefetch.fetch_seconds = time.monotonic() - fetch_started
                span.set_attribute("messaging.batch.message_count", len(page.events))
                span.set_attribute("syncd.has_more", page.has_more)
                check_progress(self.key, cursor, page)
                self.check_cycle(cursor, page)
        except BaseException:
            span.end()  # use_span recorded the exception and the ERROR status
            raise
        return span, page


    def check_cycle(self, cursor: str | None, page: Page) -> None:
        """The loop guard across pages: a page that promises more must not lead back to a cursor fetched
        earlier in this tick (each cursor differs from the last, but the sequence repeats). Raises
        ``CursorCycleError``; the pages before are committed and the tick fails there, visibly."""
        self.fetched[_digest(cursor)] = None
        if len(self.fetched) > CYCLE_MEMORY:
            self.fetched.popitem(last=False)
        if page.has_more and page.next_cursor is not None and _digest(page.next_cursor) in self.fetched:
            raise CursorCycleError(self.key, page.next_cursor, len(self.fetched))


def _digest(cursor: str | None) -> bytes:
    return b"" if cursor is None else hashlib.blake2b(cursor.encode(), digest_size=16).digest()


@dataclass
class _Ahead:
    """One page a Prefetcher fetches (or will): its cursor, its span and the page to come."""

    cursor: str | None
    span: trace.Span
    future: Future[Page] = field(default_factory=Future)


class Prefetcher:
    """Fetches pages ahead of the ones being committed, in a background (daemon) thread.

    ``start(cursor)`` starts a chain at ``cursor``: the thread fetches that page, then the next one from its
    cursor, and so on while the provider has more, keeping at most ``ahead`` pages not yet taken (it waits
    for room). Each page has its own ``page.fetch`` span, a sibling of the other pages'. ``take(cursor)``
    returns the next page of the chain if it is the one at ``cursor`` (raising what its fetch raised, as a
    direct fetch would have), else drops the chain and returns ``(None, None)``. Pages never taken (the
    stop signal, a failed commit) are dropped without waiting for their requests: their spans end when the
    requests do, their results are ignored, and the interpreter does not wait for the thread at exit.
    """

    def __init__(self, key: str, fetch: Fetch, new_span: SpanFactory, parent: otel_context.Context, *,
                 ahead: int, stop: threading.Event) -> None:
        self.key, self.fetch, self.new_span, self.parent, self.ahead, self.stop = (
            key, fetch, new_span, parent, ahead, stop)
        self.fetch_seconds = 0.0  # how long the last page took to arrive
        self._lock = threading.Condition()
        self._queue: deque[_Ahead] = deque()  # pages of the running chain not taken yet, in order
        self._cancel: threading.Event | None = None  # the running chain's

    def pays(self) -> bool:
        return self.fetch_seconds >= PREFETCH_AFTER_SECONDS and not self.stop.is_set()

    def start(self, cursor: str | None) -> None:
        with self._lock:
            if self._queue and self._queue[0].cursor == cursor:
                return  # the running chain is already there
        self._drop()
        cancel = threading.Event()
        first = self._entry(cursor)
        with self._lock:
            self._cancel = cancel
            self._queue.append(first)
        threading.Thread(target=self._chain, args=(first, cancel), name=f"prefetch:{self.key}",
                         daemon=True).start()

    def take(self, cursor: str | None) -> tuple[trace.Span | None, Page | None]:
        with self._lock:
            entry = self._queue.popleft() if self._queue and self._queue[0].cursor == cursor else None
            self._lock.notify_all()
        if entry is None:
            self._drop()
            return None, None
        try:
            return entry.span, entry.future.result()
        except BaseException as exc:
            entry.span.record_exception(exc)
            entry.span.set_status(Status(StatusCode.ERROR, error_text(exc)))
            entry.span.end()
            raise

    def close(self) -> None:
        """Drop the pages in flight and let the thread go; never waits for a request nobody will use."""
        self._drop()

    def _entry(self, cursor: str | None) -> _Ahead:
        span = self.new_span()
        span.set_attribute("syncd.prefetched", True)
        return _Ahead(cursor, span)

    def _chain(self, entry: _Ahead, cancel: threading.Event) -> None:
        while entry.future.set_running_or_notify_cancel():
            token = otel_context.attach(trace.set_span_in_context(entry.span, self.parent))
            started = time.monotonic()
            try:
                page = self.fetch(entry.cursor)
            except BaseException as exc:
                entry.future.set_exception(exc)
                return
            finally:
                self.fetch_seconds = time.monotonic() - started
                otel_context.detach(token)
            following = None
            if page.has_more and page.next_cursor is not None:
                with self._lock:  # the next page's entry exists before this page is handed over
                    while len(self._queue) >= self.ahead and not cancel.is_set():
                        self._lock.wait(0.5)
                    if not cancel.is_set():
                        following = self._entry(page.next_cursor)
                        self._queue.append(following)
            entry.future.set_result(page)
            if following is None:
                return
            entry = following

    def _drop(self) -> None:
        with self._lock:
            dropped, self._queue = list(self._queue), deque()
            if self._cancel is not None:
                self._cancel.set()
            self._lock.notify_all()
        for entry in dropped:
            entry.future.cancel()
            entry.span.set_attribute("syncd.prefetch.dropped", True)
            entry.future.add_done_callback(_ender(entry.span))  # now, or when its request ends


def _ender(span: trace.Span) -> Callable[[Future[Page]], None]:
    return lambda _: span.end()
