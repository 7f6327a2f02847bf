"""The ``Connector`` contract (``syncd.contracts.Connector``), one suite run on every connector.

As APScheduler runs one suite against every data store, each test here takes a ``Harness``: a connector
on a real provider together with that provider's ground truth. WorkOS and GitHub talk over loopback HTTP
to their simulators; the SQL table connector reads a real table, by insert and by update, on SQLite (and
on PostgreSQL).

What every connector must do:

- a walk from no cursor returns every event once, oldest first, and ends with ``has_more`` False;
  a poll from the final cursor is empty; asked again from a cursor, the same events come back;
- with a window, only events whose time lies in [start, end), and ``has_more`` False once the window is
  exhausted (not at the end of the provider's data);
- whenever ``has_more`` is True the cursor moves (the loop guard; ``walk`` asserts it on every page);
- malformed events are dropped and counted in ``Page.skipped``, never raised;
- errors say what to do: 401/403 ``AuthError``, 429/5xx and an unreachable provider ``RetryableError``
  (with ``retry_after`` when the provider said).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol

import pytest
import sqlalchemy as sa

from connectors.github.client import GitHubConnector
from connectors.sql.client import TableConnector, TableSpec
from connectors.sql.values import canonical
from connectors.stripe.client import StripeConnector
from connectors.workos.client import WorkOSConnector
from simulators.github import GitHubSimulator
from simulators.httpserver import LoopbackServer, Server
from simulators.stripe import StripeSimulator
from simulators.workos import Faults, WorkOSSimulator, parse_timestamp
from syncd.contracts import Connector, Page, Window
from syncd.errors import AuthError, RetryableError
from syncd.settings import Secret

WORKOS_KEY = "sk_test_contract_5e1d"
GITHUB_TOKEN = "ghp_contract_7b2c"
STRIPE_KEY = "sk_test_contract_93af"
REPO = "acme/web"

Truth = list[tuple[str, datetime]]  # (event id, event time) of every valid event, in listing order


class Harness(Protocol):
    """A connector kind on a real provider, with the provider's ground truth."""

    page_size: int

    def connector(self, *, good_credentials: bool = True) -> Connector: ...

    def truth(self) -> Truth: ...

    def add_malformed(self) -> int:
        """Put malformed events into the provider; returns how many."""
        ...

    def unreachable(self) -> Connector:
        """A connector whose provider cannot be reached."""
        ...

    def close(self) -> None: ...


# ---- harnesses ---------------------------------------------------------------------------------------


class _SimulatedHarness:
    """What the two HTTP connectors' harnesses share: a simulator, the connectors made, an unreachable one."""

    sim: WorkOSSimulator | GitHubSimulator | StripeSimulator
    _made: list[Connector]

    def connector(self, *, good_credentials: bool = True, base_url: str | None = None) -> Connector:
        raise NotImplementedError

    def unreachable(self) -> Connector:
        return self.connector(base_url=closed_port_url())

    def close(self) -> None:
        for made in self._made:
            made.close()
        self.sim.stop()


class WorkOSHarness(_SimulatedHarness):
    page_size = 100  # the connector's fixed page (the API's maximum)

    def __init__(self) -> None:
        self.sim = WorkOSSimulator(events=1000, seed=5, api_key=WORKOS_KEY)
        self.sim.start()
        self._bad: set[str] = set()
        self._made: list[Connector] = []

    def _types(self) -> list[str]:
        return sorted({e["event"] for e in self.sim.events()} | {"user.created", "user.updated"})

    def connector(self, *, good_credentials: bool = True, base_url: str | None = None) -> Connector:
        made = WorkOSConnector(api_key=Secret(WORKOS_KEY if good_credentials else "sk_test_wrong"),
                               base_url=base_url or self.sim.url, event_types=self._types(), timeout=5)
        self._made.append(made)
        return made

    def truth(self) -> Truth:
        return [(e["id"], parse_timestamp(e["created_at"])) for e in self.sim.events() if e["id"] not in self._bad]

    def add_malformed(self) -> int:
        before = {e["id"] for e in self.sim.events()}
        self.sim.append([{"event": "user.created", "data": "not an object"},
                         {"event": "user.updated", "data": {"id": "user_x"}, "created_at": "not a time"}])
        self._bad |= {e["id"] for e in self.sim.events()} - before
        return 2


class GitHubHarness(_SimulatedHarness):
    page_size = 20

    def __init__(self) -> None:
        self.sim = GitHubSimulator(repos={REPO: 250}, seed=3, tokens=(GITHUB_TOKEN,))
        self.sim.start()
        self._made: list[Connector] = []

    def connector(self, *, good_credentials: bool = True, base_url: str | None = None) -> Connector:
        made = GitHubConnector(repo=REPO, base_url=base_url or self.sim.url, timeout=5, page_size=self.page_size,
                               token=Secret(GITHUB_TOKEN if good_credentials else "ghp_wrong"))
        self._made.append(made)
        return made

    def truth(self) -> Truth:
        listed = []
        for issue in self.sim.issues(REPO).values():
            if isinstance(issue["id"], int) and isinstance(issue["updated_at"], str):
                listed.append((parse_timestamp(issue["updated_at"]), issue["number"], issue["id"]))
        listed.sort()
        return [(f"{issue_id}@{canonical_second(moment)}", moment) for moment, _, issue_id in listed]

    def add_malformed(self) -> int:
        self.sim.corrupt(REPO, 7, id="not-a-number")
        self.sim.corrupt(REPO, 11, updated_at=None)
        return 2


class StripeHarness(_SimulatedHarness):
    page_size = 20
    sim: StripeSimulator

    def __init__(self) -> None:
        self.sim = StripeSimulator(events=1000, seed=9, api_key=STRIPE_KEY)
        self.sim.start()
        self._made: list[Connector] = []

    def connector(self, *, good_credentials: bool = True, base_url: str | None = None) -> Connector:
        made = StripeConnector(api_key=Secret(STRIPE_KEY if good_credentials else "sk_test_wrong_key_0000"),
                               base_url=base_url or self.sim.url, timeout=5, page_size=self.page_size)
        self._made.append(made)
        return made

    def truth(self) -> Truth:
        return [(e["id"], datetime.fromtimestamp(e["created"], UTC)) for e in self.sim.events()
                if isinstance(e.get("data"), dict) and isinstance(e.get("created"), int)]

    def add_malformed(self) -> int:
        self.sim.append_raw({"id": "evt_malformed_data", "object": "event", "type": "customer.created",
                             "created": self.sim.now, "data": "not an object"})
        self.sim.append_raw({"id": "evt_malformed_time", "object": "event", "type": "customer.updated",
                             "created": "not a time", "data": {"object": {"id": "cus_x"}}})
        return 2


def canonical_second(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TableHarness:
    """500 rows of a SQLite table; inserts by ``created_at``, updates by ``updated_at`` (text, two rows
    per instant, so that equal timestamps straddle pages)."""

    page_size = 20
    rows = 500
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __init__(self, tmp_path: Path, event: str, url: str | None = None) -> None:
        """SQLite by default, where ``updated_at`` is text (so it can be unreadable); ``url``: a PostgreSQL
        database, where it is a ``timestamp`` column."""
        self.url = url or f"sqlite:///{tmp_path / 'app.db'}"
        self.event = event
        self.engine = sa.create_engine(self.url)
        sqlite = self.engine.dialect.name == "sqlite"
        self.table = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                              sa.Column("name", sa.String(40)), sa.Column("created_at", sa.DateTime),
                              sa.Column("updated_at", sa.Text if sqlite else sa.DateTime))
        self.table.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), [
                {"id": i, "name": f"item {i}", "created_at": self._created(i).replace(tzinfo=None),
                 "updated_at": (self._updated(i).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite
                                else self._updated(i).replace(tzinfo=None))}
                for i in range(1, self.rows + 1)])
        self._made: list[Connector] = []
        self._tmp = tmp_path

    def _created(self, i: int) -> datetime:
        return self.base + timedelta(minutes=i)

    def _updated(self, i: int) -> datetime:
        return self.base + timedelta(hours=1, minutes=i // 2)

    def connector(self, *, good_credentials: bool = True, url: str | None = None) -> Connector:
        made = TableConnector(TableSpec(table="items", event=self.event), url=url or self.url,
                              page_size=self.page_size)
        self._made.append(made)
        return made

    def truth(self) -> Truth:
        if self.event == "insert":
            return [(str(i), self._created(i)) for i in range(1, self.rows + 1)]
        return [(f"{i}@{canonical(self._updated(i))}", self._updated(i)) for i in range(1, self.rows + 1)]

    def add_malformed(self) -> int:
        assert self.event == "update", "every row is a valid insert event"
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), [{"id": 9001, "name": "bad", "updated_at": "not a time"},
                                               {"id": 9002, "name": "bad", "updated_at": "2026-13-45"}])
        return 2

    def unreachable(self) -> Connector:
        return self.connector(url=f"sqlite:///{self._tmp / 'no such folder' / 'app.db'}")

    def close(self) -> None:
        for made in self._made:
            made.close()
        self.engine.dispose()


def closed_port_url() -> str:
    """A loopback URL where nothing listens any more."""
    server = LoopbackServer(BaseHTTPRequestHandler)
    url = server.bind()
    server.stop()
    return url


ALL = ["workos", "github", "stripe", "sql-insert", "sql-update",
       *(pytest.param(kind, marks=pytest.mark.postgres) for kind in ("sql-insert-pg", "sql-update-pg"))]
HTTP = ["workos", "github", "stripe"]
WITH_MALFORMED = ["workos", "github", "stripe", "sql-update"]  # a table row is always a valid insert event


def make_harness(kind: str, tmp_path: Path,
                 pg_url: str | None = None) -> WorkOSHarness | GitHubHarness | StripeHarness | TableHarness:
    if kind == "workos":
        return WorkOSHarness()
    if kind == "stripe":
        return StripeHarness()
    if kind == "github":
        return GitHubHarness()
    return TableHarness(tmp_path, kind.removeprefix("sql-").removesuffix("-pg"), url=pg_url)


@pytest.fixture
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind: str = request.param
    pg_url = request.getfixturevalue("pg_server").create_database() if kind.endswith("-pg") else None
    made = make_harness(kind, tmp_path, pg_url)
    try:
        yield made
    finally:
        made.close()


def walk(connector: Connector, window: Window | None = None, cursor: str | None = None,
         max_pages: int = 500) -> tuple[list[Page], str | None]:
    """Fetch pages until ``has_more`` is False, checking the loop guard on each; the pages and last cursor."""
    pages: list[Page] = []
    while True:
        page = connector.fetch_page(cursor, window)
        pages.append(page)
        if page.has_more:
            assert page.next_cursor is not None and page.next_cursor != cursor, \
                f"has_more but the cursor did not move from {cursor!r}"
        cursor = page.next_cursor if page.next_cursor is not None else cursor
        if not page.has_more:
            return pages, cursor
        assert len(pages) < max_pages, "the walk never ends"


def listed(pages: list[Page]) -> Truth:
    return [(event.id, event.occurred_at) for page in pages for event in page.events]


def middle_window(truth: Truth) -> Window:
    """A window over the middle third of the events, with many events on either side."""
    times = [moment for _, moment in truth]
    return Window(start=times[len(times) // 3], end=times[2 * len(times) // 3])


# ---- the contract --------------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", ALL, indirect=True)
def test_a_walk_returns_every_event_once_oldest_first_then_nothing(harness: Harness) -> None:
    connector = harness.connector()
    pages, cursor = walk(connector)
    got = listed(pages)
    assert got == harness.truth()
    assert len(got) > 3 * harness.page_size  # several pages were walked
    assert all(event.stream == connector.key for page in pages for event in page.events)
    assert sum(page.skipped for page in pages) == 0
    again = connector.fetch_page(cursor)
    assert again.events == () and not again.has_more


@pytest.mark.parametrize("harness", ALL, indirect=True)
def test_asking_again_from_a_cursor_returns_the_same_events(harness: Harness) -> None:
    connector = harness.connector()
    first = connector.fetch_page(None)
    assert first.has_more and first.next_cursor is not None
    second = connector.fetch_page(first.next_cursor)
    assert listed([connector.fetch_page(None)]) == listed([first])  # dedupe is the engine's job
    assert listed([connector.fetch_page(first.next_cursor)]) == listed([second])
    assert listed([first, second]) == harness.truth()[:len(first.events) + len(second.events)]


@pytest.mark.parametrize("harness", ALL, indirect=True)
def test_a_window_returns_exactly_its_events_and_ends_with_it(harness: Harness) -> None:
    truth = harness.truth()
    window = middle_window(truth)
    inside = [(event_id, moment) for event_id, moment in truth if window.contains(moment)]
    after = [event_id for event_id, moment in truth if moment >= window.end]
    assert len(inside) > 2 * harness.page_size and len(after) > 3 * harness.page_size  # the test can tell
    connector = harness.connector()
    pages, cursor = walk(connector, window)
    assert listed(pages) == inside
    # has_more turned False when the window was exhausted, not at the end of the provider's data.
    assert len(pages) <= math.ceil(len(inside) / harness.page_size) + 2
    again = connector.fetch_page(cursor, window)
    assert again.events == () and not again.has_more


@pytest.mark.parametrize("harness", ALL, indirect=True)
def test_a_window_after_every_event_is_empty_at_once(harness: Harness) -> None:
    last = harness.truth()[-1][1]
    window = Window(start=last + timedelta(days=1), end=last + timedelta(days=2))
    page = harness.connector().fetch_page(None, window)
    assert page.events == () and not page.has_more


@pytest.mark.parametrize("harness", ALL, indirect=True)
def test_a_window_resumes_from_its_cursor(harness: Harness) -> None:
    truth = harness.truth()
    window = middle_window(truth)
    connector = harness.connector()
    first = connector.fetch_page(None, window)
    assert first.has_more and first.next_cursor is not None
    rest, _ = walk(harness.connector(), window, cursor=first.next_cursor)
    assert listed([first, *rest]) == [(i, m) for i, m in truth if window.contains(m)]


@pytest.mark.parametrize("harness", WITH_MALFORMED, indirect=True)
def test_malformed_events_are_skipped_and_counted_never_raised(harness: Harness) -> None:
    bad = harness.add_malformed()
    pages, _ = walk(harness.connector())
    assert sum(page.skipped for page in pages) == bad
    assert listed(pages) == harness.truth()


@pytest.mark.parametrize("harness", ALL, indirect=True)
def test_an_unreachable_provider_is_retryable(harness: Harness) -> None:
    with pytest.raises(RetryableError) as caught:
        harness.unreachable().fetch_page(None)
    assert caught.value.retry_after is None


# ---- status-code policy, with the simulators' own knobs ------------------------------------------------


@pytest.mark.parametrize("harness", HTTP, indirect=True)
def test_rejected_credentials_are_an_auth_error(harness: Harness) -> None:
    with pytest.raises(AuthError) as caught:
        harness.connector(good_credentials=False).fetch_page(None)
    assert "401" in str(caught.value)
    assert "wrong" not in str(caught.value)  # the credential itself never appears


@pytest.mark.parametrize("harness", HTTP, indirect=True)
def test_a_rate_limit_is_retryable_after_what_the_provider_said(harness: Harness) -> None:
    if isinstance(harness, WorkOSHarness):
        harness.sim.faults = Faults(rate_limit_rate=1.0, retry_after=7)
    elif isinstance(harness, StripeHarness):
        harness.sim.faults.rate_limit_rate, harness.sim.faults.retry_after = 1.0, 7
    else:
        assert isinstance(harness, GitHubHarness)
        harness.sim.rate_limit_next(10, status=429, retry_after=7)
    with pytest.raises(RetryableError) as caught:
        harness.connector().fetch_page(None)
    assert caught.value.retry_after == 7


def test_workos_server_errors_are_retryable(tmp_path: Path) -> None:
    harness = WorkOSHarness()
    try:
        harness.sim.faults = Faults(error_rate=1.0)
        with pytest.raises(RetryableError) as caught:
            harness.connector().fetch_page(None)
        assert caught.value.retry_after is None
        statuses = [status for _, status in harness.sim.requests[-4:]]
        assert sorted(set(statuses)) == [500, 502, 503]  # every attempt failed, in the three shapes
    finally:
        harness.close()


# ---- status-code policy, every status on every HTTP connector (a canned provider) ----------------------


@dataclass(frozen=True)
class Canned:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class _CannedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        canned: Canned = self.server.context
        self.send_response(canned.status)
        for name, value in (("Content-Type", "application/json"), *canned.headers):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(canned.body)))
        self.end_headers()
        self.wfile.write(canned.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


POLICY = [
    pytest.param(Canned(401, b'{"message":"Bad credentials"}'), AuthError, None, id="401"),
    pytest.param(Canned(403, b'{"message":"Forbidden"}'), AuthError, None, id="403"),
    pytest.param(Canned(429, b'{"message":"Too many requests"}', (("Retry-After", "7"),)), RetryableError, 7.0,
                 id="429-retry-after"),
    pytest.param(Canned(500, b'{"message":"Internal Server Error"}'), RetryableError, None, id="500"),
    pytest.param(Canned(502, b"<html>Bad Gateway</html>", (("Content-Type", "text/html"),)), RetryableError,
                 None, id="502-html"),
    pytest.param(Canned(503, b'{"message":"Service Unavailable"}'), RetryableError, None, id="503"),
]


@pytest.mark.parametrize("kind", HTTP)
@pytest.mark.parametrize(("canned", "error", "retry_after"), POLICY)
def test_status_codes_map_to_what_the_caller_should_do(kind: str, tmp_path: Path, canned: Canned,
                                                       error: type[Exception], retry_after: float | None) -> None:
    harness = make_harness(kind, tmp_path)
    assert isinstance(harness, WorkOSHarness | GitHubHarness | StripeHarness)
    try:
        with LoopbackServer(_CannedHandler, context=canned) as provider, pytest.raises(error) as caught:
            harness.connector(base_url=provider.url).fetch_page(None)
        assert type(caught.value) is error
        if isinstance(caught.value, RetryableError):
            assert caught.value.retry_after == retry_after
    finally:
        harness.close()
