"""``WorkOSSimulator``: the stream, the live traffic and the faults behind one loopback HTTP server."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hmac
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from simulators.httpserver import LoopbackServer
from simulators.workos.data import Lifecycle
from simulators.workos.dsync import DirectoryLifecycle
from simulators.workos.faults import Faults, broken, fault_response
from simulators.workos.ids import DEFAULT_NOW, EVENT_ID, format_timestamp, micros, parse_timestamp, ulid, ulid_ms
from simulators.workos.oracle import directory_mirror_state, mirror_state
from simulators.workos.stream import Stream, encode, organization_of, parse_query
from simulators.workos.wire import Handler, Response

__all__ = ["HISTORY", "WorkOSSimulator"]

HISTORY = timedelta(days=20)
_MAX_LOG = 200_000  # requests kept in WorkOSSimulator.requests
_LIVE_BURST = 10_000  # most live events created by one request; the rest follow on later requests


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC during bulk generation: it makes no cycles, and the collector's passes over
    a growing heap of snapshots cost about a sixth of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class WorkOSSimulator:
    """A WorkOS Events API on loopback, generated deterministically from ``seed``.

    The initial ``events`` are spread over the 20 days before ``now`` (default ``DEFAULT_NOW``, fixed so
    the bytes depend only on the arguments). Later events (``generate``, ``append``, live traffic at
    ``live_rate`` per second, created lazily when requests arrive) get ids after every existing one,
    at ``now`` plus the time elapsed since construction. Thread-safe; ``faults`` may be replaced at any time.
    """

    def __init__(self, *, events: int = 1000, seed: int = 0, api_key: str = "sk_test_simulator",
                 live_rate: float = 0.0, faults: Faults | None = None, host: str = "127.0.0.1",
                 port: int = 0, timestamp_style: str = "iso", now: datetime | None = None, dsync: float = 0.0) -> None:
        if events < 0 or live_rate < 0:
            raise ValueError("events and live_rate must not be negative")
        if not 0.0 <= dsync <= 1.0:
            raise ValueError("dsync is a share of the generated events, within [0, 1]")
        if timestamp_style not in ("iso", "mixed"):
            raise ValueError("timestamp_style must be 'iso' or 'mixed'")
        moment = DEFAULT_NOW if now is None else now
        self._now_ms = micros(moment if moment.tzinfo else moment.replace(tzinfo=UTC)) // 1000
        self._api_key = api_key
        self._style = timestamp_style
        self.live_rate = live_rate
        self.faults = faults or Faults()
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._fault_rng = random.Random(seed ^ 0x5EED)
        self._append_rng = random.Random(seed ^ 0xA99E)  # ids of appended events; apart so faults stay put
        self._turns: defaultdict[str, int] = defaultdict(int)
        self._stuck: tuple[str, bytes] | None = None
        self._stream = Stream()
        self._lifecycle = Lifecycle(seed)
        self._directory = DirectoryLifecycle(seed)
        self._dsync = dsync
        self._born = time.monotonic()
        self._live_started = self._born
        self._live_emitted = 0
        self._http = LoopbackServer(Handler, context=self, host=host, port=port, name="workos-simulator")
        self._seed_history(events)

    def __repr__(self) -> str:  # never shows the api key
        return f"WorkOSSimulator(events={len(self._stream)}, url={self._http.url_or_none!r})"

    # ---- lifecycle
    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started."""
        url = self._http.url_or_none
        if url is None:
            raise RuntimeError("simulator not started")
        return url

    def start(self) -> str:
        """Bind and serve in a background thread; returns the base URL. Live traffic starts now."""
        if not self._http.running:
            self._stopping.clear()
            self._http.start()
            with self._lock:
                self._live_started, self._live_emitted = time.monotonic(), 0
        return self.url

    def stop(self) -> None:
        """Stop serving, end slow requests early and close open connections. Idempotent."""
        if self._http.url_or_none is None:
            return
        self._stopping.set()
        self._http.stop()

    def __enter__(self) -> WorkOSSimulator:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # ---- data
    def _seed_history(self, count: int) -> None:
        span = HISTORY // timedelta(milliseconds=1)
        start, gap, previous = self._now_ms - span, span / max(count, 1), -1
        rng = self._lifecycle.rng
        with _gc_paused():
            for i in range(count):
                ms = max(previous + 1, start + int((i + rng.random()) * gap))
                self._add_generated(ms)
                previous = ms

    def _add_generated(self, ms: int) -> None:
        stamp = format_timestamp(ms, 0 if self._style == "iso" else ms % 3)
        if self._dsync and self._directory.rng.random() < self._dsync:
            etype, data = self._directory.next(ms, stamp)
        else:
            etype, data = self._lifecycle.next(ms, stamp)
        event_id = "event_" + ulid(ms, self._lifecycle.rng.getrandbits(80))
        # The envelope's strings are plain ASCII, so only ``data`` needs the JSON encoder.
        body = (f'{{"object":"event","id":"{event_id}","event":"{etype}","data":{encode(data)},'
                f'"created_at":"{stamp}","context":{{}}}}')
        self._stream.push(event_id, etype, ms, body.encode(), organization_of(etype, data))

    def _next_ms(self, wanted: int | None = None) -> int:
        clock = self._now_ms + int((time.monotonic() - self._born) * 1000)
        last = self._stream.times[-1] + 1 if len(self._stream) else 0
        return max(last, clock if wanted is None else wanted)

    def generate(self, n: int) -> None:
        """Append ``n`` more lifecycle events (continuing the same deterministic lifecycle)."""
        with self._lock:
            ms = self._next_ms()
            for _ in range(n):
                self._add_generated(ms)
                ms += 1

    def append(self, raw_event: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Inject custom events as given (stale updates, poison, unknown types).

        ``event`` (the type) is required. A missing ``id`` is assigned after every existing id (at the
        event's ``created_at`` if that is later); a given ``id`` must be ``event_<ULID>`` and sort after
        every existing one (ValueError otherwise). Missing ``created_at``, ``context`` and ``object`` are
        filled in.
        """
        with self._lock:
            for raw in [raw_event] if isinstance(raw_event, dict) else raw_event:
                self._stream.add(self._complete(raw))

    def _complete(self, raw: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(raw.get("event"), str):
            raise ValueError("an appended event needs an 'event' type")
        event_id = raw.get("id")
        if event_id is None:
            wanted = None
            if isinstance(raw.get("created_at"), str):
                with contextlib.suppress(ValueError):
                    wanted = micros(parse_timestamp(raw["created_at"])) // 1000
            event_id = "event_" + ulid(self._next_ms(wanted), self._append_rng.getrandbits(80))
        elif not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id)) or (
                len(self._stream) and event_id <= self._stream.ids[-1]):
            raise ValueError("an appended event id must be event_<ULID> and sort after every existing id")
        ms = ulid_ms(event_id)
        event = {"object": "event", "id": event_id, "event": raw["event"], "data": raw.get("data", {}),
                 "created_at": raw.get("created_at", format_timestamp(ms)), "context": raw.get("context", {})}
        return {**event, **{k: v for k, v in raw.items() if k not in event}}

    def events(self) -> list[dict[str, Any]]:
        """Every event currently in the stream, decoded, oldest first."""
        with self._lock:
            bodies = list(self._stream.bodies)
        return [json.loads(body) for body in bodies]

    def final_state(self, types: set[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """What a newer-wins mirror holds after replaying the stream; see ``mirror_state``."""
        return mirror_state(self.events(), types)

    def directory_state(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The truth of Directory Sync: the directories, users, groups and memberships WorkOS holds now,
        whatever the stream says (``simulators.workos.dsync``). Appended events do not change it."""
        with self._lock:
            return self._directory.state()

    def directory_final_state(self) -> dict[str, dict[str, dict[str, Any]]]:
        """What a newer-wins Directory Sync mirror holds after replaying the stream (appended events
        included); see ``directory_mirror_state``."""
        return directory_mirror_state(self.events())

    def dsync_events(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` Directory Sync events (``event``, ``data``, ``created_at``), one millisecond apart
        from now on, *not* added to the stream: ``append`` them in any order (out of order, repeated) to
        serve them. ``directory_state`` already counts them."""
        with self._lock:
            ms, made = self._next_ms(), []
            for _ in range(n):
                stamp = format_timestamp(ms)
                etype, data = self._directory.next(ms, stamp)
                made.append({"event": etype, "data": data, "created_at": stamp})
                ms += 1
            return made

    def record(self, path: str, status: int) -> None:
        """Log one request in ``requests`` (status 0: reset); the oldest half goes past _MAX_LOG entries."""
        with self._lock:
            self.requests.append((path, status))
            if len(self.requests) > _MAX_LOG:  # a long-running demo must not grow without bound
                del self.requests[:_MAX_LOG // 2]

    # ---- serving
    def respond(self, target: str, authorization: str) -> Response:
        """The response to ``GET target`` (``RESET`` to drop the connection)."""
        path, _, query = target.partition("?")
        if path == "/health":
            return Response(200, b'{"status":"ok","events":%d}' % len(self._stream))
        if path != "/events":
            return Response(404, b'{"message":"Not Found"}')
        self._advance_live()
        faults = self.faults
        with self._lock:
            fault = faults.draw(self._fault_rng.random())
        if faults.latency:
            self._stopping.wait(faults.latency)
        if fault == "timeout":
            self._stopping.wait(faults.slow_seconds)
        elif fault is not None and fault != "broken":
            return fault_response(fault, faults, self._turn("error"))
        response = self._serve_events(query, authorization, faults)
        if fault == "broken" and response.status == 200:
            return broken(response, self._turn("broken"))
        return response

    def _serve_events(self, query: str, authorization: str, faults: Faults) -> Response:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {self._api_key}".encode()):
            return Response(401, b'{"message":"Unauthorized"}')
        parsed = parse_query(query)
        if isinstance(parsed, bytes):
            return Response(422, parsed)
        if faults.expired_before is not None and parsed.after is not None and parsed.after <= faults.expired_before:
            return Response(faults.expired_status, b'{"errors":[{"code":"invalid","field":"after"}],'
                                                   b'"message":"Invalid pagination cursor."}')
        with self._lock:
            stuck = self._stuck
            if faults.stuck_after is not None and stuck is not None and stuck[0] == faults.stuck_after:
                return Response(200, stuck[1])
            if faults.cycle_after is not None and parsed.after == faults.cycle_after:
                parsed = dataclasses.replace(parsed, after=None)
            if faults.newest_first:
                parsed = dataclasses.replace(parsed, descending=True)
            indices, more = self._stream.page(parsed, faults.repeat_boundary)
            if faults.stale_events and parsed.after is not None and not parsed.descending:
                indices = indices + self._stream.before(parsed, faults.stale_events)
            body = self._stream.body(indices, more, faults.poison_every)
            if faults.stuck_after is not None and parsed.after == faults.stuck_after:
                self._stuck = (faults.stuck_after, body)
        return Response(200, body)

    def _advance_live(self) -> None:
        if self.live_rate <= 0 or not self._http.running:
            return
        with self._lock:
            due = int((time.monotonic() - self._live_started) * self.live_rate) - self._live_emitted
            due = min(due, _LIVE_BURST)
            if due > 0:
                self.generate(due)
                self._live_emitted += due

    def _turn(self, name: str) -> int:
        with self._lock:
            self._turns[name] += 1
            return self._turns[name] - 1
