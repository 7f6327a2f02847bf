"""The Stripe connector on its own, against the Stripe simulator over loopback HTTP (the engine and its
databases: tests/test_stripe_sync.py).

- the cursor's state machine, by tables → ``test_request_*``, ``test_advance_*``
- every event once, oldest first, over random histories (same-second runs, big gaps) and random arrival
  schedules between and during pages, with pages lost before commit (a crash) → ``test_property_*``
- a window is exactly its events; the first sync's memory is one page; an expired cursor heals without
  skipping; statuses map to what to do (401 names STRIPE_API_KEY, never the key) → the rest
"""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.stripe import cursor as cursors
from connectors.stripe.client import StripeConnector, parse_event, status_policy
from connectors.stripe.cursor import Bounds, Forward, Listed, Search, Second, Step
from simulators.stripe import DEFAULT_NOW, RETENTION_SECONDS, StripeSimulator
from syncd.contracts import Page, Window
from syncd.errors import AuthError, FatalError, RetryableError
from syncd.settings import Secret

KEY = "sk_test_stripe_unit_41c7"
NO_BOUNDS = Bounds()


def L(event_id: str | None, created: int | None) -> Listed:
    return Listed(event_id, created)


# ---- the state machine, by tables -----------------------------------------------------------------

REQUESTS = [
    (None, NO_BOUNDS, []),
    (None, Bounds(100, 200), [("created[gte]", "100"), ("created[lt]", "200")]),
    (Search(hi=150), Bounds(100, 200), [("limit", "1"), ("created[lt]", "100")]),  # the anchor
    (Search(lo=0, hi=1000), NO_BOUNDS, [("created[lt]", "500")]),
    (Search(100, lo=100, hi=151), NO_BOUNDS, [("created[gte]", "100"), ("created[lt]", "125")]),
    (Second(None, 77), NO_BOUNDS, [("created[gte]", "77"), ("created[lt]", "78")]),
    (Second(None, 77, "evt_b"), NO_BOUNDS, [("starting_after", "evt_b"), ("created[gte]", "77"),
                                              ("created[lt]", "78")]),
    (Forward("evt_a", 5), NO_BOUNDS, [("ending_before", "evt_a")]),
    (Forward("evt_a", 5), Bounds(100, 200), [("ending_before", "evt_a"), ("created[lt]", "200")]),
]


@pytest.mark.parametrize(("state", "bounds", "params"), REQUESTS)
def test_request_for_each_state(state: cursors.State | None, bounds: Bounds, params: list[tuple[str, str]]) -> None:
    assert cursors.request(state, bounds) == params


PAGE = [L("evt_new", 30), L("evt_mid", 20), L("evt_old", 20)]  # newest first, as Stripe lists

ADVANCES = [
    # forward: the page is handed on, the cursor moves to its newest event
    (Forward("evt_x", 10), PAGE, True, NO_BOUNDS, Step(True, Forward("evt_new", 30), True)),
    (Forward("evt_x", 10), [], False, NO_BOUNDS, Step(False, Forward("evt_x", 10), False)),  # idle
    (Forward("evt_x", 10), [L(None, 30), L("evt_mid", 20)], False, NO_BOUNDS,
     Step(True, Forward("evt_mid", 20), False)),  # an unusable id does not become the cursor
    # first sync: nothing at all, all in one page, or a search
    (None, [], False, NO_BOUNDS, Step(False, None, False)),
    (None, PAGE, False, NO_BOUNDS, Step(True, Forward("evt_new", 30), False)),
    (None, PAGE, True, NO_BOUNDS, Step(False, Search(lo=0, hi=21), True)),
    # bisection: an empty probe raises lo; a full one lowers hi; one that holds all below is handed on
    (Search(lo=0, hi=100), [], False, NO_BOUNDS, Step(False, Search(lo=50, hi=100), True)),
    (Search(lo=0, hi=100), [L("evt_a", 40), L("evt_b", 12)], True, NO_BOUNDS, Step(False, Search(lo=0, hi=13), True)),
    (Search(lo=0, hi=100), [L("evt_a", 40)], False, NO_BOUNDS, Step(True, Forward("evt_a", 40), True)),
    (Search(lo=11, hi=13), [L("evt_a", 11)], True, NO_BOUNDS, Step(False, Second(None, 11), True)),
    # a crowded oldest second is walked down; its last page is handed on
    (Second(None, 11), PAGE, True, NO_BOUNDS, Step(False, Second(None, 11, "evt_old"), True)),
    (Second(None, 11, "evt_old"), PAGE, False, NO_BOUNDS, Step(True, Forward("evt_new", 30), True)),
    (Second(None, 11, "evt_old"), [], False, NO_BOUNDS, Step(False, Search(None), True)),  # it expired
    # a start: the newest page from it, then the anchor
    (None, PAGE, True, Bounds(15, None), Step(False, Search(hi=21), True)),
    (Search(hi=21), [L("evt_before", 14)], False, Bounds(15, None), Step(False, Forward("evt_before", 14), True)),
    (Search(hi=21), [], False, Bounds(15, None), Step(False, Search(lo=15, hi=21), True)),
    (None, [], False, Bounds(15, None), Step(False, None, False)),
    (Search(15), [], False, NO_BOUNDS, Step(False, Search(15), False)),
]


@pytest.mark.parametrize(("state", "listed", "more", "bounds", "step"), ADVANCES)
def test_advance_by_table(state: cursors.State | None, listed: list[Listed], more: bool, bounds: Bounds,
                          step: Step) -> None:
    assert cursors.advance(state, listed, more, bounds) == step


def test_advance_refuses_a_page_it_cannot_move_on_from() -> None:
    with pytest.raises(ValueError, match="usable id"):
        cursors.advance(Forward("evt_x"), [L(None, 3)], True, NO_BOUNDS)
    with pytest.raises(ValueError, match="created"):
        cursors.advance(Search(lo=0, hi=9), [L("evt_a", None)], True, NO_BOUNDS)


@pytest.mark.parametrize("state", [Forward("evt_a", 7), Forward("evt_a"), Search(), Search(3, 4, 9),
                                   Second(None, 5), Second(2, 5, "evt_z")])
def test_cursors_round_trip(state: cursors.State) -> None:
    assert cursors.loads(cursors.dumps(state)) == state


@pytest.mark.parametrize("text", ["", "{}", '{"v":2,"last":"evt_a"}', '{"v":1,"last":5}', "[1]", "not json",
                                  '{"v":1,"second":"x"}'])
def test_unreadable_cursors_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        cursors.loads(text)


def test_a_bare_event_id_is_a_cursor_after_that_event() -> None:
    assert cursors.loads("evt_1Nx") == Forward("evt_1Nx")


@pytest.mark.parametrize(("state", "bounds", "healed"), [
    (Forward("evt_a", 500), NO_BOUNDS, Search(500)),
    (Forward("evt_a", 500), Bounds(600, 900), Search(600)),
    (Forward("evt_a"), Bounds(600, 900), Search(600)),
    (Second(7, 9, "evt_a"), NO_BOUNDS, Search(7)),
])
def test_heal_searches_again_from_the_refused_events_second(state: cursors.State, bounds: Bounds,
                                                             healed: Search) -> None:
    assert cursors.heal(state, bounds) == healed


# ---- against the simulator -------------------------------------------------------------------------


def connector(sim: StripeSimulator, page_size: int = 100, key: str = KEY) -> StripeConnector:
    return StripeConnector(api_key=Secret(key), base_url=sim.url, timeout=5, page_size=page_size, attempts=2)


def drain(conn: StripeConnector, cursor: str | None, window: Window | None = None,
          limit: int = 10_000) -> tuple[list[Page], str | None]:
    pages: list[Page] = []
    for _ in range(limit):
        page = conn.fetch_page(cursor, window)
        pages.append(page)
        if page.has_more:
            assert page.next_cursor not in (None, cursor)  # the engine's loop guard
        cursor = page.next_cursor or cursor
        if not page.has_more:
            return pages, cursor
    raise AssertionError("the walk never ends")


def ids(pages: list[Page]) -> list[str]:
    return [event.id for page in pages for event in page.events]


history = st.lists(st.tuples(st.sampled_from([0, 0, 1, 1, 2, 30, 86_400, 1_000_000]), st.integers(1, 7)),
                   max_size=25)
schedule = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 2), st.booleans()), max_size=12)


def seed_history(sim: StripeSimulator, clusters: list[tuple[int, int]]) -> None:
    """Clusters of events, ``(gap in seconds before it, size)``, ending at the simulator's ``now``."""
    second = sim.now - sum(gap for gap, _ in clusters)
    for gap, size in clusters:
        second += gap
        sim.generate(size, at=second)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters=history, steps=schedule, page_size=st.integers(1, 5), during=st.lists(st.integers(0, 40), max_size=4),
       lost=st.lists(st.booleans(), max_size=30))
def test_property_every_event_once_oldest_first_whatever_the_arrivals(
        clusters: list[tuple[int, int]], steps: list[tuple[int, int, int, bool]], page_size: int,
        during: list[int], lost: list[bool]) -> None:
    """Random histories (same-second runs, gaps up to 11 days), then random schedules: ``fetches`` pages,
    ``new`` events arriving (in the same second as the last ones or later), and events arriving while a
    request is answered (``during``: request numbers). A page may be lost before commit (``lost``): the
    same cursor is asked again. What is committed, concatenated, is the simulator's list reversed."""
    with StripeSimulator(api_key=KEY, seed=len(clusters)) as sim:
        seed_history(sim, clusters)

        def arrive(n: int) -> None:
            if n in during:
                sim.generate(2)

        sim.on_request = arrive
        conn = connector(sim, page_size)
        cursor: str | None = None
        committed: list[str] = []
        fetches = 0
        for pages, new, advance, same_second in steps:
            for _ in range(pages):
                page = conn.fetch_page(cursor)
                fetches += 1
                if fetches < len(lost) and lost[fetches]:
                    continue  # a crash before commit: neither the events nor the cursor were stored
                committed += [event.id for event in page.events]
                cursor = page.next_cursor or cursor
            sim.generate(new)
            sim.advance(0 if same_second else advance)
        rest, cursor = drain(conn, cursor)
        committed += ids(rest)
        sim.on_request = None
        truth = [event["id"] for event in sim.events()]
        assert committed == truth
        before = len(sim.requests)
        idle = conn.fetch_page(cursor)
        assert idle.events == () and not idle.has_more and len(sim.requests) == before + 1
        conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters=history, page_size=st.integers(1, 5), edges=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_property_a_window_is_exactly_its_events_oldest_first(
        clusters: list[tuple[int, int]], page_size: int, edges: tuple[float, float]) -> None:
    with StripeSimulator(api_key=KEY) as sim:
        seed_history(sim, clusters)
        span = max(1, sum(gap for gap, _ in clusters) + 2)
        low, high = sorted(edges)
        origin = sim.now - span + 1
        window = Window(datetime.fromtimestamp(origin + low * span, UTC),
                        datetime.fromtimestamp(origin + high * span + 0.5, UTC))
        with closing(connector(sim, page_size)) as conn:
            pages, _ = drain(conn, None, window)
        inside = [e["id"] for e in sim.events() if window.contains(datetime.fromtimestamp(e["created"], UTC))]
        assert ids(pages) == inside


def test_a_first_sync_holds_one_page_and_finds_a_crowded_oldest_second() -> None:
    """250 events in the oldest second, 3,000 spread after it: the search walks that one second down and
    the walk hands on every event oldest first; no page ever holds more than the page size."""
    with StripeSimulator(api_key=KEY, seed=2) as sim:
        sim.generate(250, at=sim.now - 10_000)
        seed_history(sim, [(3, 10)] * 300)
        with closing(connector(sim)) as conn:
            pages, _ = drain(conn, None)
        assert ids(pages) == [e["id"] for e in sim.events()]
        assert max(len(page.events) for page in pages) <= 100
        searched = [path for path, _ in sim.requests if "starting_after" in path]
        assert searched, "the crowded second was walked down with starting_after"
        # the search costs a few dozen requests, not a walk of the whole list
        assert len(pages) - 3250 // 100 < 40


def test_an_expired_cursor_heals_from_its_second_without_skipping(request: pytest.FixtureRequest) -> None:
    with StripeSimulator(api_key=KEY, seed=4) as sim:
        seed_history(sim, [(60, 3)] * 20)
        conn = connector(sim, 4)
        request.addfinalizer(conn.close)
        pages, cursor = drain(conn, None)
        delivered = ids(pages)
        sim.advance(RETENTION_SECONDS - 30 * 60)  # the older half expires, the cursor's event with it
        sim.generate(3)
        sim.advance(31 * 60)
        sim.generate(5)
        assert cursor is not None and cursors.loads(cursor).last not in {e["id"] for e in sim.events()}  # type: ignore[union-attr]
        first = conn.fetch_page(cursor)
        assert first.has_more and "cursor_healed" in first.meta and first.events == ()
        rest, _ = drain(conn, first.next_cursor)
        again = ids(rest)
        new = [e["id"] for e in sim.events()][-8:]
        assert again[-8:] == new  # every new event, oldest first
        assert set(again[:-8]) <= set(delivered)  # anything else is a replay the ledger drops


def test_the_anchor_starts_a_window_in_two_requests() -> None:
    with StripeSimulator(api_key=KEY, seed=6) as sim:
        seed_history(sim, [(100, 2)] * 500)
        events = sim.events()
        start, end = events[300]["created"], events[700]["created"]
        window = Window(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
        with closing(connector(sim, 50)) as conn:
            pages, _ = drain(conn, None, window)
        assert ids(pages) == [e["id"] for e in events if start <= e["created"] < end]
        assert len(pages) == 2 + 400 // 50
        assert any(f"created%5Blt%5D={start}" in path and "limit=1" in path for path, _ in sim.requests)


# ---- statuses ------------------------------------------------------------------------------------


def test_a_wrong_key_names_the_variable_never_the_key() -> None:
    with StripeSimulator(api_key=KEY) as sim:
        seed_history(sim, [(1, 2)])
        wrong = "sk_test_wrong_key_9f3e2d"
        with closing(connector(sim, key=wrong)) as conn, pytest.raises(AuthError) as caught:
            conn.fetch_page(None)
    assert "STRIPE_API_KEY" in str(caught.value) and "401" in str(caught.value)
    assert "9f3e" not in str(caught.value) and "sk_test" not in str(caught.value)


def test_a_short_retry_after_is_waited_a_long_one_goes_to_the_engine() -> None:
    with StripeSimulator(api_key=KEY) as sim:
        seed_history(sim, [(1, 3)])
        sim.faults.fail_next(1, 429, retry_after=2)
        with closing(connector(sim)) as conn:
            page = conn.fetch_page(None)
            assert len(page.events) == 3 and [s for _, s in sim.requests] == [429, 200]
            sim.faults.fail_next(1, 429, retry_after=120)
            with pytest.raises(RetryableError) as caught:
                conn.fetch_page(None)
        assert caught.value.retry_after == 120


def canned(status: int, body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers, request=httpx.Request("GET", "https://x/v1/events"))


@pytest.mark.parametrize(("response", "cursor_param", "error", "text"), [
    (canned(401, b'{"error":{"message":"Invalid API Key provided: sk_live_****abcd"}}'), None, AuthError,
     "STRIPE_API_KEY rejected"),
    (canned(403, b'{"error":{"message":"restricted"}}'), None, AuthError, "read access to Events"),
    (canned(429, b"{}", **{"Retry-After": "9"}), None, RetryableError, "rate limited"),
    (canned(500, b"<html>oops</html>"), None, RetryableError, "provider error"),
    (canned(404, b'{"error":{"code":"resource_missing","param":"ending_before","message":"No such event"}}'),
     "ending_before", FatalError, "refused ending_before"),
    (canned(400, b'{"error":{"param":"types","message":"bad type"}}'), None, FatalError, "STRIPE_EVENTS"),
    (canned(404, b'{"error":{"message":"Unrecognized request URL"}}'), None, FatalError, "STRIPE_BASE_URL"),
])
def test_status_policy(response: httpx.Response, cursor_param: str | None, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as caught:
        status_policy("stripe", response, cursor_param=cursor_param)
    assert text in str(caught.value)
    assert "abcd" not in str(caught.value)


@pytest.mark.parametrize(("raw", "problem"), [
    ("text", "not an object"),
    ({"type": "a.b", "created": 1, "data": {"object": {}}}, "no id"),
    ({"id": "evt_1", "created": 1, "data": {"object": {}}}, "no type"),
    ({"id": "evt_1", "type": "a.b", "created": 1, "data": {}}, "no data.object"),
    ({"id": "evt_1", "type": "a.b", "created": "yesterday", "data": {"object": {}}}, "created"),
    ({"id": "evt_1", "type": "a.b", "created": True, "data": {"object": {}}}, "created"),
])
def test_malformed_events_are_named(raw: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_event("stripe", raw)


def test_an_event_is_its_object_with_the_api_version_kept() -> None:
    event = parse_event("stripe", {"id": "evt_1", "type": "customer.created", "created": DEFAULT_NOW,
                                   "api_version": "2025-03-31.basil", "data": {"object": {"id": "cus_1"}}})
    assert (event.id, event.type, dict(event.data), event.action) == ("evt_1", "customer.created", {"id": "cus_1"},
                                                                      "2025-03-31.basil")
    assert event.occurred_at == datetime.fromtimestamp(DEFAULT_NOW, UTC)
    assert event.occurred_at - datetime(2026, 3, 1, 12, tzinfo=UTC) == timedelta(0)
