"""Hostile provider data never blocks a stream (issue #17, item 1 and its property test).

Generated pages of WorkOS-shaped events — well-formed ones with random unicode and huge strings, and
malformed ones: NUL characters and unpaired surrogates in strings, ids longer than their column or not
text, nesting far deeper than the JSON decoders' recursion limits, wrong types, missing fields — are served
over real loopback HTTP (a ``LoopbackServer`` speaking the Events API's list shape) to the real WorkOS
connector, on SQLite and PostgreSQL. Whatever the mix: one tick walks the whole stream and succeeds, every
well-formed event lands exactly once (one ledger row, one run, one call of the workflow), and every
malformed one is quarantined, visible by id, while the cursor moves past it.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from connectors.workos import WorkOSConnector
from simulators.httpserver import LoopbackServer, Server
from syncd import cli
from syncd.contracts import Event
from syncd.engine import SyncEngine
from syncd.jsoncodec import safe_text
from syncd.ops.app import App
from syncd.ops.status import collect, render
from syncd.settings import Secret, Settings
from syncd.store import SqlStore
from syncd.store.connect import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.tables import events as ledger
from syncd.store.tables import runs
from syncd.workflows import Context, Registry, Trigger

PAGE = 4
T0 = datetime(2026, 3, 1, tzinfo=UTC)
KEY = "sk_test_property_key"

# ---- the provider: pages of raw JSON fragments over loopback HTTP ---------------------------------------


@dataclass
class Item:
    """One listed event as raw JSON text; ``cursor_id``: the id the client may continue ``after``."""

    text: str
    good: bool
    event_id: str | None  # the id as syncd should show it (None: none usable)
    cursor_id: str | None  # the id the client may ask ``after`` (None: not one a cursor can hold)
    server_id: str  # the provider's own id of the event, its ``list_metadata.after``


@dataclass
class Feed:
    items: list[Item] = field(default_factory=list)
    envelope: str | None = None  # a broken envelope served instead of the list (when set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self, after: str | None, range_start: str | None = None) -> bytes:
        if self.envelope is not None:
            return self.envelope.encode()
        start = 0
        if range_start is not None:  # the server's ids are event_<n>, listed at T0 + n seconds
            since = datetime.fromisoformat(range_start)
            start = next((i for i, item in enumerate(self.items)
                          if T0 + timedelta(seconds=int(item.server_id[6:])) >= since), len(self.items))
        elif after is not None:
            start = next(i for i, item in enumerate(self.items) if after in (item.cursor_id, item.server_id)) + 1
        chunk = self.items[start:start + PAGE]
        more = start + PAGE < len(self.items)
        meta = {"before": None, "after": chunk[-1].server_id if more else None}
        data = ",".join(item.text for item in chunk)
        return f'{{"object":"list","data":[{data}],"list_metadata":{json.dumps(meta)}}}'.encode()


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        feed: Feed = self.server.context
        query = parse_qs(urlsplit(self.path).query)
        with feed.lock:
            body = feed.page(query.get("after", [None])[0], query.get("range_start", [None])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# ---- generated events ------------------------------------------------------------------------------------

SAFE_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
HOSTILE_KINDS = ("nul_data", "surrogate_data", "nul_type", "long_id", "deep_cut", "deep_store", "no_id",
                 "int_id", "not_object", "no_data", "bad_time", "nul_id")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)  # lone surrogates and NUL as \\uXXXX escapes, as JSON allows


def nested(levels: int) -> str:
    return "[" * levels + '"bottom"' + "]" * levels


def event_text(event_id: Any, *, kind: str = "user.created", created: Any, data: str, drop: str = "") -> str:
    fields = {"object": "event", "id": event_id, "event": kind, "created_at": created}
    parts = [f"{dumps(k)}:{dumps(v)}" for k, v in fields.items() if k != drop]
    if drop != "data":
        parts.append(f'"data":{data}')
    return "{" + ",".join(parts) + "}"


def build(n: int, kind: str, name: str, huge: bool) -> Item:
    """The ``n``-th listed event: well-formed when ``kind`` is ``good``, else broken as ``kind`` says."""
    base = f"event_{n:05d}"
    created = (T0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")
    blob = "é" * 300_000 if huge else ""
    data = dumps({"id": f"user_{n}", "object": "user", "name": name, "blob": blob, "tags": [name, {"x": [1]}]})
    if kind == "good":
        return Item(event_text(base, created=created, data=data), True, base, base, base)
    bad: dict[str, tuple[str, str | None, str | None]] = {
        "nul_data": (event_text(base, created=created, data=dumps({"name": name + "\x00"})), base, base),
        "surrogate_data": (event_text(base, created=created, data=dumps({"name": "\ud83d" + name})), base, base),
        "nul_type": (event_text(base, kind="user\x00created", created=created, data=data), base, base),
        "long_id": (event_text(base + "x" * 250, created=created, data=data), base + "x" * 250, base + "x" * 250),
        "deep_cut": (event_text(base, created=created, data='{"deep":' + nested(3000) + "}"), base, base),
        "deep_store": (event_text(base, created=created, data='{"deep":' + nested(400) + "}"), base, base),
        "no_id": (event_text(None, created=created, data=data, drop="id"), None, None),
        "int_id": (event_text(n, created=created, data=data), None, None),
        "not_object": (dumps([n, name]), None, None),
        "no_data": (event_text(base, created=created, data="[]"), base, base),
        "bad_time": (event_text(base, created="the day after " + name, data=data), base, base),
        "nul_id": (event_text(base + "\x00", created=created, data=data), base + "\x00", None),
    }
    text, shown, cursor_id = bad[kind]
    return Item(text, False, shown, cursor_id, base)


ITEM = st.tuples(st.sampled_from(("good", "good", *HOSTILE_KINDS)), SAFE_TEXT)
FEEDS = st.lists(ITEM, min_size=1, max_size=14).map(
    lambda specs: [build(n + 1, kind, name, huge=(n == 2 and kind == "good")) for n, (kind, name) in
                   enumerate(specs)])


# ---- the property ----------------------------------------------------------------------------------------


@pytest.fixture
def database(db_url: str) -> Iterator[Engine]:
    db = create_engine(db_url)
    migrate(db)
    yield db
    db.dispose()


def ledger_and_runs(db: Engine, stream: str) -> tuple[list[str], Counter[str]]:
    with db.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(ledger.c.event_id).where(ledger.c.stream == stream))]
        done = Counter(r[0] for r in conn.execute(sa.select(runs.c.event_id).where(
            runs.c.stream == stream, runs.c.status == "succeeded")))
    return ids, done


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(items=FEEDS)
def test_hostile_pages_never_block_the_stream(database: Engine, items: list[Item]) -> None:
    stream = f"workos:p{next(EXAMPLES)}"  # one stream per example, in one database
    processed: list[str] = []
    registry = Registry()

    @registry.workflow("record", on=Trigger(provider="workos", streams=frozenset([stream])))
    def record(event: Event, ctx: Context) -> None:
        processed.append(event.id)

    feed = Feed(items)
    with LoopbackServer(Handler, context=feed) as server:
        connector = WorkOSConnector(api_key=Secret(KEY), base_url=server.url, event_types=["user.created"],
                                    key=stream)
        try:
            result = SyncEngine(SqlStore(database), registry).sync(connector)
            again = SyncEngine(SqlStore(database), registry).sync(connector)  # nothing new, nothing repeated
        finally:
            connector.close()
    assert result.ok and result.caught_up, result.error
    assert again.ok and again.caught_up, again.error
    good = [item.event_id for item in items if item.good]
    bad = [item for item in items if not item.good]
    ids, done = ledger_and_runs(database, stream)
    assert sorted(ids) == sorted(good)  # every well-formed event once, no malformed one
    assert done == Counter(good) and Counter(processed) == Counter(good)  # one run, one call each
    total, held = SqlReads(database).quarantined(limit=100, streams=[stream])
    assert total == len(bad)
    shown = Counter(row.event_id for row in held)
    assert shown == Counter(None if item.event_id is None else safe_text(item.event_id, 1000) for item in bad)
    for row in held:
        assert row.raw.isascii() and row.raw.isprintable() and len(row.raw) <= 5000
    report = collect(SqlReads(database), run_limit=100)
    assert {q["event_id"] for q in report["quarantined"]["events"] if q["stream"] == stream} == set(shown)
    text = render(report, limit=100)
    for item in bad:
        if item.event_id is not None:
            assert safe_text(item.event_id, 1000)[:60] in text


EXAMPLES = itertools.count()


# ---- an unusable envelope --------------------------------------------------------------------------------


@pytest.mark.parametrize("envelope", [
    '{"object":"list","data":[],"list_metadata":["after"]}',
    '{"object":"list","data":{"0":{}},"list_metadata":{}}',
    '["not","an","envelope"]',
    nested(5000),  # deeper than any decoder's recursion: cut, and then not an event list
])
def test_an_unusable_envelope_is_retried_then_fails_the_tick_in_one_line(sqlite_url: str, envelope: str) -> None:
    db = create_engine(sqlite_url)
    migrate(db)
    processed: list[str] = []
    registry = Registry()

    @registry.workflow("record", on=Trigger(provider="workos"))
    def record(event: Event, ctx: Context) -> None:
        processed.append(event.id)

    feed = Feed([build(1, "good", "Ada", huge=False)], envelope=envelope)
    with LoopbackServer(Handler, context=feed) as server:
        connector = WorkOSConnector(api_key=Secret(KEY), base_url=server.url, event_types=["user.created"])
        engine = SyncEngine(SqlStore(db), registry)
        failed = engine.sync(connector)
        feed.envelope = None  # the provider is fixed: the next tick goes on
        fixed = engine.sync(connector)
        connector.close()
    assert not failed.ok and failed.error is not None and "\n" not in failed.error
    assert failed.error.startswith("workos: response")
    assert fixed.ok and processed == ["event_00001"]
    db.dispose()


# ---- fetched again after a fix ---------------------------------------------------------------------------


def test_a_quarantined_event_is_fetched_again_after_a_fix_with_cursor_reset(
        db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An event quarantined for a NUL in its data shows in ``syncd status`` by id; once the provider serves
    it fixed, ``syncd cursor reset workos --to TIME`` makes the next tick fetch it: it lands, runs once, and
    leaves the quarantine, while the events around it are not applied again."""
    processed: list[str] = []
    registry = Registry()

    @registry.workflow("record", on=Trigger(provider="workos"))
    def record(event: Event, ctx: Context) -> None:
        processed.append(event.id)

    items = [build(n, "nul_data" if n == 3 else "good", "Ada", huge=False) for n in range(1, 7)]
    feed = Feed(items)
    with LoopbackServer(Handler, context=feed) as server:
        env = {"DATABASE_URL": db_url, "WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": server.url,
               "WORKOS_EVENTS": "user.created", "SYNCD_BUILTINS": "none"}
        app = App.build(Settings.from_env({**env, "SYNCD_HTTP_PORT": "0"}), registry=registry)
        try:
            assert all(tick.ok for tick in app.tick_all())
            assert sorted(processed) == [f"event_{n:05d}" for n in (1, 2, 4, 5, 6)]
            assert cli.main(["status"], environ=env) == 0
            shown = capsys.readouterr().out
            assert "Quarantined events (1;" in shown and "event_00003" in shown
            assert "payload holds a NUL character" in shown

            feed.items[2] = build(3, "good", "Ada", huge=False)  # the provider fixed it
            assert cli.main(["cursor", "reset", "workos", "--to", "2026-03-01T00:00:02Z"], environ=env) == 0
            assert all(tick.ok for tick in app.tick_all())
        finally:
            app.close()
    assert sorted(processed) == [f"event_{n:05d}" for n in range(1, 7)]  # event 3 once, the others not again
    db = create_engine(db_url)
    total, _ = SqlReads(db).quarantined()
    db.dispose()
    assert total == 0
