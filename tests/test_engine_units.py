"""Pure decisions of the engine, the workflow registry and the WorkOS client, as parametrised tables.

No I/O: each row is an input and the decision syncd must take for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors import workos
from connectors.workos.client import parse_event, status_policy
from syncd.contracts import Event, Page, RunRecord, RunStatus, Skip, SkipReason, SourceRow, Window
from syncd.engine import (
    RUN_BACKOFF_CAP,
    RunTally,
    check_progress,
    cursor_key,
    error_text,
    interrupt_outcome,
    last_cursor,
    run_backoff,
    run_outcome,
    unique_events,
    window_progress,
)
from syncd.engine.decisions import pause_of
from syncd.errors import AuthError, ConfigError, CursorStuckError, FatalError, RetryableError
from syncd.http import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from syncd.timefmt import iso, parse_time
from syncd.workflows import Registry, Trigger
from syncd.workflows.steps import Checkpoint, Interrupt, Sleep

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
WEB = "github:acme/web"


def ev(event_id: str = "event_1", type_: str = "user.created", stream: str = "workos", **data: Any) -> Event:
    return Event(stream=stream, id=event_id, type=type_, occurred_at=T0, data=data)


def page(next_cursor: str | None, has_more: bool) -> Page:
    return Page(events=(), next_cursor=next_cursor, has_more=has_more)


# ---- the loop guard ---------------------------------------------------------------------------

@pytest.mark.parametrize(("cursor", "next_cursor", "has_more", "stuck"), [
    (None, None, False, False),      # empty stream, first tick
    (None, "event_2", True, False),  # first page of many
    ("event_1", "event_2", True, False),
    ("event_1", "event_1", False, False),  # caught up: the cursor may stay
    ("event_1", None, False, False),       # caught up, nothing new
    ("event_1", "event_1", True, True),    # "more" but the cursor did not move: would loop forever
    ("event_1", None, True, True),
    (None, None, True, True),
])
def test_check_progress(cursor: str | None, next_cursor: str | None, has_more: bool, stuck: bool) -> None:
    if stuck:
        with pytest.raises(CursorStuckError) as info:
            check_progress("workos", cursor, page(next_cursor, has_more))
        assert info.value.source == "workos"
        assert repr(cursor) in str(info.value)
    else:
        check_progress("workos", cursor, page(next_cursor, has_more))


@pytest.mark.parametrize(("ids", "expected"), [
    ([], []),
    (["a"], ["a"]),
    (["a", "b", "c"], ["a", "b", "c"]),
    (["a", "b", "a"], ["a", "b"]),
    (["b", "b", "b"], ["b"]),
    (["c", "a", "c", "b", "a"], ["c", "a", "b"]),  # order of first appearance is kept
])
def test_unique_events(ids: list[str], expected: list[str]) -> None:
    events = [ev(event_id, n=n) for n, event_id in enumerate(ids)]
    out = unique_events(events)
    assert [e.id for e in out] == expected
    # the first occurrence wins (a provider repeating a boundary event must not swap its payload)
    assert [e.data["n"] for e in out] == [ids.index(e.id) for e in out]


# ---- run outcomes and backoff -------------------------------------------------------------------

@pytest.mark.parametrize(("error", "attempt", "max_attempts", "status", "wait"), [
    (None, 1, 5, "succeeded", None),
    (None, 5, 5, "succeeded", None),  # success on the last attempt is a success
    ("boom", 1, 5, "failed", timedelta(seconds=30)),
    ("boom", 2, 5, "failed", timedelta(seconds=60)),
    ("boom", 4, 5, "failed", timedelta(seconds=240)),
    ("boom", 5, 5, "dead", None),
    ("boom", 7, 5, "dead", None),
    ("boom", 1, 1, "dead", None),  # retries=1: no second attempt
])
def test_run_outcome(error: str | None, attempt: int, max_attempts: int, status: str,
                     wait: timedelta | None) -> None:
    assert run_outcome(error, attempt, max_attempts, T0) == (status, None if wait is None else T0 + wait)


WAKE = T0 + timedelta(minutes=30)


@pytest.mark.parametrize(("interrupt", "attempt", "expected"), [
    (Sleep("wait", WAKE, new={"wake_at": WAKE.isoformat()}), 1,
     ({"wait": {"wake_at": WAKE.isoformat()}}, "sleeping", WAKE, None)),
    (Sleep("wait", WAKE, new=None), 1, ({}, "sleeping", WAKE, None)),  # a sleep seen before: nothing to store
    (Checkpoint({"send": {"value": 1}}), 1, ({"send": {"value": 1}}, "pending", T0, None)),  # go on at once
    (Checkpoint({}), 2, ({}, "pending", T0, None)),  # deferred out of a page's transaction
    (Checkpoint({"a": {"value": 1}}, error="step 'b' failed"), 1,
     ({"a": {"value": 1}}, "failed", T0 + timedelta(seconds=30), "step 'b' failed")),
    (Checkpoint({}, error="step 'b' failed"), 5, ({}, "dead", None, "step 'b' failed")),
])
def test_interrupt_outcome(interrupt: Interrupt, attempt: int, expected: tuple[object, ...]) -> None:
    assert interrupt_outcome(interrupt, attempt, 5, T0) == expected


@pytest.mark.parametrize(("exc", "expected"), [
    (RetryableError("workos", "429", retry_after=120), (T0 + timedelta(seconds=120), "workos: 429")),
    (RetryableError("workos", "503"), (None, None)),
    (RetryableError("workos", "503", retry_after=0), (None, None)),
    (FatalError("workos", "404"), (None, None)),
    (RuntimeError("bug"), (None, None)),
])
def test_pause_of(exc: Exception, expected: tuple[datetime | None, str | None]) -> None:
    assert pause_of(exc, T0) == expected


def source_row(state: str = "active", paused_until: datetime | None = None) -> SourceRow:
    return SourceRow(key="workos", source="workos", kind="live", state=state, cursor=None, meta=None,
                     window_start=None, window_end=None, window_workflow=None, progress=None, lease_owner=None,
                     lease_expires_at=None, lease_token=0, paused_until=paused_until, pause_reason="slow down",
                     events_seen=0, last_success_at=None, last_error=None, last_error_at=None)


@pytest.mark.parametrize(("row", "expected"), [
    (source_row(), None),
    (source_row("done"), Skip(SkipReason.DONE)),
    (source_row(paused_until=T0 + timedelta(seconds=1)),
     Skip(SkipReason.PAUSED, f"until {(T0 + timedelta(seconds=1)).isoformat()}: slow down")),
    (source_row(paused_until=T0), None),  # a pause ends at its time
    (source_row("done", paused_until=T0 + timedelta(hours=1)), Skip(SkipReason.DONE)),
])
def test_skip_decision(row: SourceRow, expected: Skip | None) -> None:
    assert row.skip(T0) == expected


def test_a_skip_reads_as_tick_results_always_showed_it() -> None:
    assert str(Skip(SkipReason.LEASE_HELD)) == "lease held by another replica"
    assert str(Skip(SkipReason.PAUSED, "until 2026-01-01T00:00:00+00:00: 429")).startswith("paused until ")


def record(status: RunStatus, error: str | None = None, event_id: str = "e1") -> RunRecord:
    return RunRecord("wf", "workos", event_id, "1", status, 1, None, error, None, T0, T0, 1.0)


@pytest.mark.parametrize(("records", "expected"), [
    ([], RunTally()),
    ([record(RunStatus.SUCCEEDED), record(RunStatus.SUCCEEDED)], RunTally(ok=2)),
    ([record(RunStatus.PENDING), record(RunStatus.SLEEPING)], RunTally(suspended=2)),
    ([record(RunStatus.FAILED, "boom"), record(RunStatus.DEAD, "bad", "e2"), record(RunStatus.SUCCEEDED)],
     RunTally(ok=1, failed=2, failed_runs=(("wf", "e1", "boom"), ("wf", "e2", "bad")))),
    ([record(RunStatus.FAILED, "step failed")], RunTally(failed=1, failed_runs=(("wf", "e1", "step failed"),))),
])
def test_run_tally(records: list[RunRecord], expected: RunTally) -> None:
    assert RunTally.of(records) == expected
    assert RunTally.of(records) + RunTally(ok=1) == RunTally(expected.ok + 1, expected.failed, expected.suspended,
                                                             expected.failed_runs)


@pytest.mark.parametrize(("cursor", "nexts", "expected"), [
    ("c0", ["c1", "c2"], "c2"),
    ("c0", ["c1", None], "c1"),  # a page without a next cursor leaves it where it was
    ("c0", [None], "c0"),
    (None, [], None),
])
def test_last_cursor(cursor: str | None, nexts: list[str | None], expected: str | None) -> None:
    pages = [Page(events=(), next_cursor=n, has_more=False) for n in nexts]
    assert last_cursor(cursor, pages) == expected


@pytest.mark.parametrize(("attempt", "expected"), [
    (1, timedelta(seconds=30)),
    (2, timedelta(seconds=60)),
    (3, timedelta(seconds=120)),
    (7, timedelta(seconds=1920)),
    (8, RUN_BACKOFF_CAP),  # 3840 s capped at an hour
    (40, RUN_BACKOFF_CAP),
    (10_000, RUN_BACKOFF_CAP),  # 2 ** 9999 seconds would overflow a timedelta
])
def test_run_backoff(attempt: int, expected: timedelta) -> None:
    assert run_backoff(attempt) == expected
    assert run_backoff(attempt) <= RUN_BACKOFF_CAP == timedelta(hours=1)


# ---- cursor keys and backfill windows ----------------------------------------------------------

WINDOW = Window(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize(("source", "window", "wf", "expected"), [
    ("workos", None, None, "workos"),
    ("github:acme/web", None, None, "github:acme/web"),
    ("workos", None, "welcome", "workos"),  # a workflow restriction only exists for backfills
    ("workos", WINDOW, None, "workos@1767225600000-1767312000000"),
    ("workos", WINDOW, "welcome", "workos@1767225600000-1767312000000/welcome"),
])
def test_cursor_key(source: str, window: Window | None, wf: str | None, expected: str) -> None:
    assert cursor_key(source, window, wf) == expected


def test_cursor_keys_of_different_windows_differ() -> None:
    other = Window(start=WINDOW.start, end=WINDOW.end + timedelta(milliseconds=1))
    assert cursor_key("workos", WINDOW) != cursor_key("workos", other)


@pytest.mark.parametrize(("reached", "expected"), [
    (WINDOW.start - timedelta(hours=1), 0.0),
    (WINDOW.start, 0.0),
    (WINDOW.start + timedelta(hours=6), 0.25),
    (WINDOW.start + timedelta(hours=12), 0.5),
    (WINDOW.end, 1.0),
    (WINDOW.end + timedelta(days=3), 1.0),
])
def test_window_progress(reached: datetime, expected: float) -> None:
    assert window_progress(WINDOW, reached) == pytest.approx(expected)


def test_window_progress_of_an_empty_window_is_complete() -> None:
    assert window_progress(Window(start=T0, end=T0), T0 - timedelta(days=1)) == 1.0


# ---- lenient timestamps ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    # the three shapes WorkOS has sent
    ("2026-01-15T12:00:00.000Z", datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),
    ("2023-04-28 20:05:31.093", datetime(2023, 4, 28, 20, 5, 31, 93000, tzinfo=UTC)),
    ("2020-05-06 04:21:48.649164", datetime(2020, 5, 6, 4, 21, 48, 649164, tzinfo=UTC)),
    # zones and variants
    ("2026-01-15t12:00:00z", datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),
    ("2026-01-15T14:30:00+02:30", datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),
    ("2026-01-15T07:00:00.5-05:00", datetime(2026, 1, 15, 12, 0, 0, 500000, tzinfo=UTC)),
    ("  2026-01-15T12:00:00Z  ", datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),
    ("2026-01-15", datetime(2026, 1, 15, tzinfo=UTC)),
    # epoch seconds and milliseconds
    (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    (1_700_000_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    (1_700_000_000.25, datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)),
    (0, datetime(1970, 1, 1, tzinfo=UTC)),
    # already a datetime
    (datetime(2026, 1, 15, 12, 0), datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),
])
def test_parse_time(value: Any, expected: datetime) -> None:
    parsed = parse_time(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [
    None, "", "   ", "yesterday", "2026-13-01T00:00:00Z", "15/01/2026", True, [], {},
    float("nan"), float("inf"), 1e20, -1e20,  # out of range: still a ValueError, never Overflow/OSError
])
def test_parse_time_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="not a timestamp"):
        parse_time(value)


def test_iso_round_trips_through_parse_time() -> None:
    moment = datetime(2026, 1, 15, 12, 0, 1, 234000, tzinfo=UTC)
    assert iso(moment) == "2026-01-15T12:00:01.234Z"
    assert parse_time(iso(moment)) == moment


# ---- Retry-After ------------------------------------------------------------------------------------

NOW_HTTP = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0),
    ("  7 ", 7.0),
    ("1.5", 1.5),
    ("0", 0.0),
    ("-3", 0.0),  # a wait is never negative
    ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
    ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # a date in the past: go now
    ("9999999", MAX_RETRY_AFTER_SECONDS),  # capped: a pause time must stay a valid datetime
    ("1e20", MAX_RETRY_AFTER_SECONDS),
    ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
    (None, None),
    ("", None),
    ("soon", None),
    ("Wed, 99 Foo 2015", None),
    ("inf", None),
    ("nan", None),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW_HTTP) == expected


# ---- triggers and the registry -----------------------------------------------------------------------

@pytest.mark.parametrize(("trigger", "event", "matches"), [
    (Trigger("workos"), ev(type_="user.created"), True),
    (Trigger("workos"), ev(type_="session.created"), True),
    (Trigger("workos", types=frozenset({"user.created"})), ev(type_="user.created"), True),
    (Trigger("workos", types=frozenset({"user.created"})), ev(type_="user.updated"), False),
    (Trigger("workos", types=frozenset()), ev(type_="user.created"), False),
    (Trigger("github"), ev(type_="user.created"), False),
    (Trigger("github"), ev(type_="issues", stream=WEB), True),
    (Trigger("github", streams=frozenset({"github:acme/web"})), ev(type_="issues", stream=WEB), True),
    (Trigger("github", streams=frozenset({"github:acme/api"})), ev(type_="issues", stream=WEB), False),
    (Trigger("workos", where=lambda e: e.data.get("plan") == "pro"), ev(plan="pro"), True),
    (Trigger("workos", where=lambda e: e.data.get("plan") == "pro"), ev(plan="free"), False),
    (Trigger("workos", types=frozenset({"user.updated"}), where=lambda e: True), ev(type_="user.created"),
     False),
    (workos.events("user.created", "user.deleted"), ev(type_="user.deleted"), True),
    (workos.events("user.created", where=lambda e: e.id == "event_9"), ev("event_9"), True),
    (workos.events("user.created", where=lambda e: e.id == "event_9"), ev("event_8"), False),
])
def test_trigger_matches(trigger: Trigger, event: Event, matches: bool) -> None:
    assert trigger.matches(event) is matches


@pytest.mark.parametrize("bad", ["", "a,b", 5])
def test_workos_events_rejects_bad_types(bad: Any) -> None:
    with pytest.raises(ValueError):
        workos.events(bad)


def noop(event: Event, ctx: Any) -> None:
    return None


def other_noop(event: Event, ctx: Any) -> None:
    return None


def registry_of(*triggers: Trigger) -> Registry:
    registry = Registry()
    for n, trigger in enumerate(triggers):
        registry.workflow(f"wf{n}", on=trigger)(noop)
    return registry


@pytest.mark.parametrize(("triggers", "expected"), [
    ((), set()),
    ((workos.events("user.created"),), {"user.created"}),
    ((workos.events("user.created"), workos.events("user.created", "user.deleted")),
     {"user.created", "user.deleted"}),
    ((workos.events("user.created"), Trigger("github")), {"user.created"}),  # other providers do not count
    ((Trigger("github"),), set()),
    ((workos.events("user.created"), workos.events()), None),  # one listens to everything
    ((workos.events(),), None),
])
def test_registry_event_types(triggers: tuple[Trigger, ...], expected: set[str] | None) -> None:
    assert registry_of(*triggers).event_types("workos") == expected


def test_registry_matching_returns_every_matching_workflow() -> None:
    registry = registry_of(workos.events("user.created"), workos.events("user.deleted"), workos.events())
    assert [wf.name for wf in registry.matching(ev(type_="user.created"))] == ["wf0", "wf2"]
    assert [wf.name for wf in registry.matching(ev(type_="session.created"))] == ["wf2"]
    assert registry.matching(ev(type_="issues", stream="github:a/b")) == []


def test_duplicate_workflow_name_is_a_config_error_naming_it() -> None:
    registry = Registry()
    registry.workflow("welcome", on=workos.events("user.created"))(noop)
    with pytest.raises(ConfigError) as info:
        registry.workflow("welcome", on=workos.events("user.deleted"))(other_noop)
    assert info.value.variable == "SYNCD_WORKFLOWS"
    assert "'welcome'" in str(info.value)
    assert "other_noop" in str(info.value)  # says where the second one is
    assert registry.get("welcome") is not None and registry.get("welcome").fn is noop  # type: ignore[union-attr]


def test_registering_the_same_function_twice_is_not_a_duplicate() -> None:
    # a module imported twice (e.g. by SYNCD_WORKFLOWS and by the user's own code) registers the same function
    registry = Registry()
    registry.workflow("welcome", on=workos.events("user.created"))(noop)
    registry.workflow("welcome", on=workos.events("user.created"))(noop)
    assert len(registry) == 1


@pytest.mark.parametrize(("name", "retries"), [("", None), ("ok", 0), ("ok", -1)])
def test_workflow_decorator_rejects_bad_arguments(name: str, retries: int | None) -> None:
    with pytest.raises(ValueError):
        Registry().workflow(name, on=workos.events("user.created"), retries=retries)


# ---- the WorkOS client's pure parts ------------------------------------------------------------------

GOOD = {"object": "event", "id": "event_01", "event": "user.created",
        "created_at": "2026-01-15T12:00:00.000Z", "data": {"id": "user_01"}}


@pytest.mark.parametrize(("raw", "problem"), [
    ("not an object", "not an object"),
    (["event_01"], "not an object"),
    ({**GOOD, "id": None}, "no id"),
    ({k: v for k, v in GOOD.items() if k != "id"}, "no id"),
    ({**GOOD, "id": ""}, "no id"),
    ({**GOOD, "id": 12}, "no id"),
    ({k: v for k, v in GOOD.items() if k != "event"}, "no type"),
    ({**GOOD, "event": ""}, "no type"),
    ({**GOOD, "data": "x"}, "no data object"),
    ({**GOOD, "data": [1, 2]}, "no data object"),
    ({k: v for k, v in GOOD.items() if k != "data"}, "no data object"),
    ({**GOOD, "created_at": "yesterday"}, "created_at"),
    ({k: v for k, v in GOOD.items() if k != "created_at"}, "created_at"),
    ({**GOOD, "created_at": 1e20}, "created_at"),
])
def test_parse_event_rejects_malformed(raw: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_event("workos", raw)


@pytest.mark.parametrize("created_at", ["2026-01-15T12:00:00.000Z", "2026-01-15 12:00:00.000",
                                        "2026-01-15 12:00:00.000000", 1768478400000])
def test_parse_event_accepts_every_timestamp_form(created_at: Any) -> None:
    event = parse_event("workos", {**GOOD, "created_at": created_at})
    assert (event.stream, event.id, event.type) == ("workos", "event_01", "user.created")
    assert event.data == {"id": "user_01"}
    assert event.occurred_at == datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert event.provider == "workos"


def response(status: int, body: Any = None, headers: dict[str, str] | None = None, text: str | None = None,
             ) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body if body is not None else {"message": "x"}, headers=headers)


@pytest.mark.parametrize(("resp", "error", "says"), [
    (response(200, {"data": []}), None, None),
    (response(401, {"message": "Unauthorized"}), AuthError, "WORKOS_API_KEY rejected"),
    (response(403, {"message": "Forbidden"}), AuthError, "WORKOS_API_KEY"),
    (response(429, {"message": "Too many"}, {"Retry-After": "7"}), RetryableError, "rate limited"),
    (response(500), RetryableError, "HTTP 500"),
    (response(502, text="<html>502 Bad Gateway</html>"), RetryableError, "HTTP 502"),
    (response(503), RetryableError, "HTTP 503"),
    (response(408), RetryableError, "HTTP 408"),
    (response(422, {"message": "Validation failed.", "errors": [{"code": "required", "field": "events"}]}),
     FatalError, "events: required"),
    (response(404, {"message": "Not Found"}), FatalError, "HTTP 404"),
    (response(400), FatalError, "HTTP 400"),
])
def test_status_policy(resp: httpx.Response, error: type[Exception] | None, says: str | None) -> None:
    if error is None:
        status_policy("workos", resp)
        return
    with pytest.raises(error) as info:
        status_policy("workos", resp)
    assert type(info.value) is error  # 401 is an AuthError, not just "fatal"; 429 is not fatal
    assert says is not None and says in str(info.value)
    assert str(info.value).startswith("workos: ")


def test_status_policy_reads_retry_after_of_a_429() -> None:
    with pytest.raises(RetryableError) as info:
        status_policy("workos", response(429, headers={"Retry-After": "7"}))
    assert info.value.retry_after == 7.0
    with pytest.raises(RetryableError) as info:
        status_policy("workos", response(429))
    assert info.value.retry_after is None


def test_status_policy_of_a_422_points_at_workos_events() -> None:
    with pytest.raises(FatalError, match="WORKOS_EVENTS"):
        status_policy("workos", response(422, {"message": "Validation failed."}))


@pytest.mark.parametrize(("exc", "kept", "gone"), [
    (ValueError("boom"), "ValueError: boom", None),
    (RuntimeError("POST https://hooks.slack.com/services/T000/B000/sentinel-path failed"),
     "https://hooks.slack.com/", "sentinel-path"),
    (RuntimeError("(psycopg.errors.UniqueViolation) duplicate key\n[SQL: INSERT INTO t VALUES (%(e)s)]\n"
                  "[parameters: {'e': 'ada@example.com'}]"), "UniqueViolation", "ada@example.com"),
])
def test_error_text_keeps_the_error_and_drops_secrets_and_values(exc: Exception, kept: str, gone: str | None) -> None:
    text = error_text(exc)
    assert kept in text
    assert gone is None or gone not in text
