"""The WorkOS Events API simulator, exercised over real loopback HTTP with httpx."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.workos import Faults, WorkOSSimulator, parse_timestamp, ulid, ulid_ms

KEY = "sk_test_simulator"
AUTH = {"Authorization": f"Bearer {KEY}"}
KINDS = ("user", "organization", "organization_membership")
LIFECYCLE = [f"{kind}.{action}" for kind in KINDS for action in ("created", "updated", "deleted")]
EVENT_ID = re.compile(r"event_[0-7][0-9A-HJKMNP-TV-Z]{25}")
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=3000, seed=7) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def client(sim: WorkOSSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers=AUTH, timeout=5) as http:
        yield http


def get_events(http: httpx.Client, **params: Any) -> httpx.Response:
    return http.get("/events", params={"events": ",".join(LIFECYCLE), **params})


def walk(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Follow list_metadata.after until it is null."""
    seen: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(10_000):
        page = get_events(http, limit=100, **params, **({"after": after} if after else {}))
        assert page.status_code == 200, page.text
        body = page.json()
        seen += body["data"]
        after = body["list_metadata"]["after"]
        if after is None:
            return seen
        assert after == body["data"][-1]["id"]
    raise AssertionError("paging did not end")


def expected(sim: WorkOSSimulator, types: list[str]) -> list[dict[str, Any]]:
    return [event for event in sim.events() if event["event"] in types]


# ---------------------------------------------------------------------------------------- contract
def test_health_needs_no_key(sim: WorkOSSimulator) -> None:
    response = httpx.get(f"{sim.url}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk_test_wrong"}, {"Authorization": KEY}])
def test_wrong_or_missing_key_is_401(sim: WorkOSSimulator, headers: dict[str, str]) -> None:
    response = httpx.get(f"{sim.url}/events", params={"events": "user.created"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}


def test_events_filter_is_required(client: httpx.Client) -> None:
    response = client.get("/events", params={"limit": 5})
    assert response.status_code == 422
    assert response.json() == {"errors": [{"code": "required", "field": "events"}],
                               "message": "Validation failed."}


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "ten"}, "limit"),
    ({"order": "sideways"}, "order"), ({"after": "event_nope"}, "after"), ({"before": "42"}, "before"),
    ({"range_start": "yesterday"}, "range_start"), ({"range_end": "2026-13-01"}, "range_end"),
])
def test_invalid_parameters_are_422(client: httpx.Client, params: dict[str, Any], field: str) -> None:
    response = get_events(client, **params)
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_filter_shapes_agree(sim: WorkOSSimulator, client: httpx.Client) -> None:
    types = ["user.created", "organization.deleted"]
    shapes = [f"events={','.join(types)}", "&".join(f"events={t}" for t in types),
              "&".join(f"events[]={t}" for t in types),
              "events%5B%5D=user.created&events=organization.deleted"]
    bodies = {client.get(f"/events?{shape}&limit=100").content for shape in shapes}
    assert len(bodies) == 1
    data = json.loads(bodies.pop())["data"]
    assert [e["id"] for e in data] == [e["id"] for e in expected(sim, types)][:100]


def test_paging_walks_the_whole_stream_in_order(sim: WorkOSSimulator, client: httpx.Client) -> None:
    seen = walk(client)
    want = expected(sim, LIFECYCLE)
    assert seen == want
    ids = [event["id"] for event in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_default_limit_and_orders(sim: WorkOSSimulator, client: httpx.Client) -> None:
    want = [e["id"] for e in expected(sim, LIFECYCLE)]
    asc = client.get("/events", params={"events": ",".join(LIFECYCLE)}).json()
    assert [e["id"] for e in asc["data"]] == want[:10]
    assert asc["list_metadata"] == {"before": None, "after": want[9]}
    assert [e["id"] for e in get_events(client, order="normal").json()["data"]] == want[:10]
    desc = get_events(client, order="desc", limit=5).json()
    assert [e["id"] for e in desc["data"]] == want[::-1][:5]
    older = get_events(client, order="desc", limit=5, after=desc["list_metadata"]["after"]).json()
    assert [e["id"] for e in older["data"]] == want[::-1][5:10]


def test_before_and_unknown_ids(sim: WorkOSSimulator, client: httpx.Client) -> None:
    want = [e["id"] for e in expected(sim, LIFECYCLE)]
    page = get_events(client, before=want[3]).json()
    assert [e["id"] for e in page["data"]] == want[:3] and page["list_metadata"]["after"] is None
    # A well-formed id that is not in the stream is placed by its time, like a keyset cursor.
    between = "event_" + ulid(ulid_ms(want[500]), 0)
    assert between < want[500]
    assert get_events(client, after=between, limit=1).json()["data"][0]["id"] == want[500]
    assert get_events(client, after="event_" + "7" + "Z" * 25).json()["data"] == []


def test_range_start_inclusive_end_exclusive(sim: WorkOSSimulator, client: httpx.Client) -> None:
    events = expected(sim, LIFECYCLE)
    start, end = events[100]["created_at"], events[180]["created_at"]
    seen = walk(client, range_start=start, range_end=end)
    assert [e["id"] for e in seen] == [e["id"] for e in events[100:180]]
    shifted = parse_timestamp(start).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert walk(client, range_start=shifted, range_end=end) == seen


def test_organization_filter(sim: WorkOSSimulator, client: httpx.Client) -> None:
    org = next(e["data"]["id"] for e in sim.events() if e["event"] == "organization.created")
    seen = walk(client, organization_id=org)
    assert seen and all(e["data"].get("organization_id", e["data"]["id"]) == org for e in seen)
    assert any(e["event"].startswith("organization_membership.") for e in seen)


def test_other_types_appear_only_when_requested(sim: WorkOSSimulator, client: httpx.Client) -> None:
    assert all(e["event"] in LIFECYCLE for e in walk(client))
    others = client.get("/events", params={"events": "session.created,connection.deactivated", "limit": 100})
    types = {e["event"] for e in others.json()["data"]}
    assert types == {"session.created", "connection.deactivated"}


# -------------------------------------------------------------------------------------------- data
def test_events_are_well_formed_and_time_ordered(sim: WorkOSSimulator) -> None:
    events = sim.events()
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    for event in events:
        assert list(event) == ["object", "id", "event", "data", "created_at", "context"]
        assert event["object"] == "event" and EVENT_ID.fullmatch(event["id"])
        moment = parse_timestamp(event["created_at"])
        assert ulid_ms(event["id"]) == int(moment.timestamp() * 1000)
        assert NOW - timedelta(days=21) < moment <= NOW


def test_lifecycles_are_consistent(sim: WorkOSSimulator) -> None:
    live: dict[str, dict[str, Any]] = {}
    fields = {"user": {"email", "first_name", "last_name", "email_verified", "profile_picture_url",
                       "external_id", "last_sign_in_at", "metadata"},
              "organization": {"name", "domains", "metadata", "external_id"},
              "organization_membership": {"user_id", "organization_id", "status", "role",
                                          "custom_attributes", "directory_managed"}}
    for event in expected(sim, LIFECYCLE):
        kind, action = event["event"].rsplit(".", 1)
        data = event["data"]
        assert fields[kind] | {"id", "object", "created_at", "updated_at"} <= set(data)
        assert data["updated_at"] == event["created_at"]
        if action == "created":
            assert data["id"] not in live and data["created_at"] == data["updated_at"]
            if kind == "organization_membership":
                assert data["user_id"] in live and data["organization_id"] in live
        else:
            previous = live[data["id"]]
            assert parse_timestamp(data["updated_at"]) > parse_timestamp(previous["updated_at"])
            assert data["created_at"] == previous["created_at"]
        if action == "deleted":
            assert not any(o.get("user_id") == data["id"] or o.get("organization_id") == data["id"]
                           for o in live.values()), "memberships go before their user or organization"
            del live[data["id"]]
        else:
            live[data["id"]] = data
    actions = {e["event"].rsplit(".", 1)[1] for e in expected(sim, LIFECYCLE)}
    assert actions == {"created", "updated", "deleted"}


def replay(events: list[dict[str, Any]], types: set[str]) -> dict[str, dict[str, dict[str, Any]]]:
    buckets = {"user": "users", "organization": "organizations",
               "organization_membership": "organization_memberships"}
    state: dict[str, dict[str, dict[str, Any]]] = {bucket: {} for bucket in buckets.values()}
    for event in events:
        kind, action = event["event"].rsplit(".", 1)
        if event["event"] not in types or kind not in buckets:
            continue
        if action == "deleted":
            state[buckets[kind]].pop(event["data"]["id"], None)
        else:
            state[buckets[kind]][event["data"]["id"]] = event["data"]
    return state


def test_final_state_matches_replay(sim: WorkOSSimulator) -> None:
    state = sim.final_state()
    assert state == replay(sim.events(), set(LIFECYCLE))
    assert all(state.values())
    users_only = {"user.created", "user.updated", "user.deleted"}
    assert sim.final_state(users_only) == replay(sim.events(), users_only)
    for membership in state["organization_memberships"].values():
        assert membership["user_id"] in state["users"]
        assert membership["organization_id"] in state["organizations"]


def test_final_state_keeps_newer_data() -> None:
    simulator = WorkOSSimulator(events=400, seed=2)
    before = simulator.final_state()
    user_id, user = next(iter(before["users"].items()))
    stale = {**user, "first_name": "Stale", "updated_at": "2020-01-01T00:00:00.000Z"}
    simulator.append({"event": "user.updated", "data": stale})
    assert simulator.final_state() == before
    simulator.append({"event": "user.deleted", "data": {**user, "updated_at": "2030-01-01 00:00:00.000"}})
    simulator.append({"event": "user.updated", "data": {**user, "updated_at": "2029-01-01T00:00:00Z"}})
    assert user_id not in simulator.final_state()["users"]


def test_determinism() -> None:
    first = WorkOSSimulator(events=2000, seed=11, timestamp_style="mixed")
    second = WorkOSSimulator(events=2000, seed=11, timestamp_style="mixed")
    other = WorkOSSimulator(events=2000, seed=12, timestamp_style="mixed")
    with first, second:
        pages = [httpx.get(f"{s.url}/events", params={"events": ",".join(LIFECYCLE), "limit": 100},
                           headers=AUTH).content for s in (first, second)]
    assert pages[0] == pages[1]
    assert first.events() == second.events() != other.events()
    first.generate(50)  # later events are stamped by the clock, but the lifecycle goes on the same way
    second.generate(50)
    assert [e["event"] for e in first.events()] == [e["event"] for e in second.events()]


def test_mixed_timestamps_use_every_form() -> None:
    events = WorkOSSimulator(events=300, seed=5, timestamp_style="mixed").events()
    stamps = [e["created_at"] for e in events]
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s) for s in stamps)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", s) for s in stamps)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", s) for s in stamps)
    for event in events:
        assert int(parse_timestamp(event["created_at"]).timestamp() * 1000) == ulid_ms(event["id"])


def test_append_and_generate_extend_the_stream() -> None:
    with WorkOSSimulator(events=50, seed=4) as simulator:
        last = simulator.events()[-1]["id"]
        simulator.append([{"event": "user.created", "data": "not an object"},
                          {"event": "vault.secret.rotated", "data": {"id": "x"}, "context": {"actor": "me"}}])
        simulator.generate(20)
        events = simulator.events()
        assert len(events) == 72 and [e["id"] for e in events] == sorted(e["id"] for e in events)
        assert events[50]["id"] > last and events[51]["context"] == {"actor": "me"}
        with pytest.raises(ValueError):
            simulator.append({"event": "user.created", "id": last})
        with pytest.raises(ValueError):
            simulator.append({"data": {}})
        page = httpx.get(f"{simulator.url}/events", params={"events": "vault.secret.rotated,user.created",
                                                             "after": last}, headers=AUTH).json()
        assert [e["data"] for e in page["data"][:2]] == ["not an object", {"id": "x"}]


def test_live_traffic_appears_over_time() -> None:
    with WorkOSSimulator(events=10, seed=1, live_rate=200) as simulator, \
            httpx.Client(base_url=simulator.url, headers=AUTH) as http:
        first = second = walk(http)
        deadline = time.monotonic() + 10  # generous on a loaded machine: 200 events/s arrive within ms
        while len(second) <= len(first) and time.monotonic() < deadline:  # wait for the traffic itself
            time.sleep(0.05)
            second = walk(http)
    assert len(second) > len(first) and second[:len(first)] == first


def test_generates_50k_events() -> None:
    simulator = WorkOSSimulator(events=50_000, seed=3)
    with simulator, httpx.Client(base_url=simulator.url, headers=AUTH) as http:
        assert http.get("/health").json()["events"] == 50_000
        newest = http.get("/events", params={"events": "user.created", "order": "desc", "limit": 1}).json()
    created_at = parse_timestamp(newest["data"][0]["created_at"])
    assert NOW - timedelta(hours=1) < created_at <= NOW


def test_repr_hides_the_key() -> None:
    assert "sk_test" not in repr(WorkOSSimulator(events=1, api_key="sk_test_secret"))


# ------------------------------------------------------------------------------------------ faults
def statuses(simulator: WorkOSSimulator, count: int) -> list[int | str]:
    seen: list[int | str] = []
    with httpx.Client(base_url=simulator.url, headers=AUTH, timeout=2) as http:
        for _ in range(count):
            try:
                seen.append(get_events(http).status_code)
            except httpx.TransportError as error:
                seen.append(type(error).__name__)
    return seen


def test_error_rate_rotates_5xx() -> None:
    with WorkOSSimulator(events=100, faults=Faults(error_rate=1.0)) as simulator:
        assert statuses(simulator, 4) == [500, 502, 503, 500]
        assert simulator.requests[-1][1] == 500


def test_rate_limit_sends_retry_after() -> None:
    with WorkOSSimulator(events=100, faults=Faults(rate_limit_rate=1.0, retry_after=2)) as simulator, \
            httpx.Client(base_url=simulator.url, headers=AUTH) as http:
        response = get_events(http)
        assert response.status_code == 429 and response.headers["Retry-After"] == "2"
        simulator.faults = Faults(rate_limit_rate=1.0, retry_after=0.25)
        assert get_events(http).headers["Retry-After"] == "0.25"


def test_timeout_delays_the_answer() -> None:
    with WorkOSSimulator(events=100, faults=Faults(timeout_rate=1.0, slow_seconds=0.3)) as simulator:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{simulator.url}/events", params={"events": "user.created"}, headers=AUTH, timeout=0.1)
        started = time.monotonic()
        assert statuses(simulator, 1) == [200]
        assert time.monotonic() - started >= 0.3


def test_broken_bodies() -> None:
    with WorkOSSimulator(events=100, faults=Faults(broken_rate=1.0)) as simulator, \
            httpx.Client(base_url=simulator.url, headers=AUTH) as http:
        for _ in range(2):
            response = get_events(http)
            assert response.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                response.json()
        with pytest.raises(httpx.RemoteProtocolError):
            get_events(http)


def test_reset_closes_without_response() -> None:
    with WorkOSSimulator(events=100, faults=Faults(reset_rate=1.0)) as simulator:
        outcome = statuses(simulator, 2)
        assert all(o in ("ReadError", "RemoteProtocolError") for o in outcome), outcome
        assert [status for _, status in simulator.requests] == [0, 0]


def test_fault_draws_are_reproducible() -> None:
    faults = Faults(error_rate=0.2, rate_limit_rate=0.2, broken_rate=0.1)
    runs = []
    for _ in range(2):
        with WorkOSSimulator(events=100, seed=9, faults=faults) as simulator:
            runs.append(statuses(simulator, 30))
    assert runs[0] == runs[1] and 200 in runs[0] and 429 in runs[0]


def test_faults_validate_rates() -> None:
    with pytest.raises(ValueError):
        Faults(error_rate=0.7, reset_rate=0.7)


def test_repeat_boundary() -> None:
    with WorkOSSimulator(events=300, faults=Faults(repeat_boundary=True)) as simulator, \
            httpx.Client(base_url=simulator.url, headers=AUTH) as http:
        first = get_events(http, limit=5).json()
        second = get_events(http, limit=5, after=first["list_metadata"]["after"]).json()
        assert second["data"][0] == first["data"][-1] and len(second["data"]) == 5
        ids = [e["id"] for e in walk(http)]
        assert set(ids) == {e["id"] for e in expected(simulator, LIFECYCLE)} and len(ids) > len(set(ids))


def test_stuck_after_repeats_the_same_page() -> None:
    with WorkOSSimulator(events=300) as simulator, httpx.Client(base_url=simulator.url, headers=AUTH) as http:
        first = get_events(http, limit=5).json()
        stuck_at = first["list_metadata"]["after"]
        simulator.faults = Faults(stuck_after=stuck_at)
        page = get_events(http, limit=5, after=stuck_at)
        again = get_events(http, limit=5, after=page.json()["list_metadata"]["after"])
        assert again.content == page.content == get_events(http).content
        assert page.json()["list_metadata"]["after"] is not None


# --------------------------------------------------------------------------------------------- CLI
def test_cli_serves_until_sigterm() -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.workos", "--port", "0", "--events", "200", "--seed", "3",
         "--api-key", "sk_test_cli_key_123"], stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        pattern = r"WorkOS simulator on (http://127\.0\.0\.1:\d+) \(200 events, api key (\S+)\)\n"
        match = re.fullmatch(pattern, line)
        assert match, line
        assert match.group(2) == "sk_test_…"
        response = httpx.get(f"{match.group(1)}/events", params={"events": "user.created"},
                             headers={"Authorization": "Bearer sk_test_cli_key_123"})
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
