"""``syncd.testing`` used the way a user's own test suite would use it, on ``tests/kit_flows.py``: real
simulators over loopback, a real SQLite file, ``syncd once`` through ``syncd.ops``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.testing import Reply, Sandbox, run
from tests.kit_flows import SCHEMA, registry


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(registry=registry, path=tmp_path, schema=SCHEMA, repos={"acme/web": 2},
                 integrations=["crm", "billing", "analytics"]) as box:
        yield box


def test_a_workflow_writes_to_the_users_own_table(sandbox: Sandbox) -> None:
    first = sandbox.workos_event("user.created", {"id": "user_1", "email": "ada@example.com"})
    sandbox.workos_event("user.created", {"id": "user_2", "email": "grace@example.com"})
    result = sandbox.once()
    assert result.exit_code == 0, result.lines
    assert sandbox.query("SELECT user_id, email FROM welcome_queue ORDER BY user_id") == [
        ("user_1", "ada@example.com"), ("user_2", "grace@example.com")]
    runs = sandbox.runs("kit-welcome")
    assert (runs[0].event_id, runs[0].status) == (first, "succeeded")
    assert len(runs) == 2
    assert sandbox.once().exit_code == 0  # nothing new: nothing runs twice
    assert len(sandbox.runs("kit-welcome")) == 2


def test_a_parallel_fan_out_to_three_integrations_is_recorded_at_the_sink(sandbox: Sandbox) -> None:
    sandbox.workos_event("organization.created", {"id": "org_1", "name": "Acme"})
    assert sandbox.once().exit_code == 0
    calls = sandbox.calls()
    assert sorted((c.integration, c.method, c.path) for c in calls) == [
        ("analytics", "POST", "/orgs"), ("billing", "POST", "/orgs"), ("crm", "POST", "/orgs")]
    assert {c.integration: c.json for c in calls} == {
        name: {"id": "org_1", "to": name} for name in ("crm", "billing", "analytics")}
    keys = [c.idempotency_key for c in calls]
    assert all(keys) and len(set(keys)) == 3  # one per step, the same on every retry of it
    (run,) = sandbox.runs("kit-fan-out")
    assert run.status == "succeeded"
    assert run.steps == {"crm": {}, "billing": {}, "analytics": {}}


def test_a_failing_workflow_is_failed_then_dead_with_its_error(sandbox: Sandbox) -> None:
    sandbox.workos_event("user.deleted", {"id": "user_9"})
    result = sandbox.once()
    assert result.exit_code == 1
    (run,) = sandbox.runs("kit-fails")
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error is not None and "RuntimeError: cannot handle user.deleted" in run.error
    assert run.due is not None
    sandbox.advance(run.due - sandbox.clock.now())  # the retry's time: the next once retries it
    sandbox.once()
    (run,) = sandbox.runs("kit-fails")
    assert (run.status, run.attempts) == ("dead", 2)  # retries=2: two attempts, then dead-lettered


def test_a_thirty_minute_sleep_is_resumed_once_the_clock_moves(sandbox: Sandbox) -> None:
    sandbox.workos_event("organization_membership.created", {"id": "om_1"})
    assert sandbox.once().exit_code == 0
    (run,) = sandbox.runs("kit-nudge")
    assert run.status == "sleeping" and sandbox.calls() == []
    sandbox.advance(timedelta(minutes=29))
    sandbox.once()
    assert sandbox.runs("kit-nudge")[0].status == "sleeping"  # not yet
    sandbox.advance(timedelta(minutes=1))
    assert sandbox.once().exit_code == 0
    (run,) = sandbox.runs("kit-nudge")
    assert run.status == "succeeded"
    assert [(c.integration, c.path, c.json) for c in sandbox.calls()] == [
        ("crm", "/nudge", {"id": "om_1"}), ("slack", "/", {"text": "nudged om_1"})]


def test_realistic_events_from_the_simulators_generators(sandbox: Sandbox) -> None:
    made = sandbox.workos_events(300)
    created = [e for e in made if e["event"] == "user.created"]
    assert created  # the generator's mix of types includes users created
    changes = sandbox.github_changes("acme/web", 3)
    result = sandbox.once()
    assert result.errors == []  # every tick ok (some generated users are deleted: kit-fails fails on them)
    assert sorted(r[0] for r in sandbox.query("SELECT user_id FROM welcome_queue")) == sorted(
        e["data"]["id"] for e in created)
    titles = dict(sandbox.query("SELECT issue_id, title FROM triaged"))
    assert all(titles[c["id"]] == c["title"] for c in changes if "pull_request" not in c)


def test_a_failing_integration_fails_the_run_and_is_retried(tmp_path: Path) -> None:
    with Sandbox(registry=registry, path=tmp_path, schema=SCHEMA, integrations=["crm", "billing", "analytics"],
                 responses={"billing": Reply(503)}) as box:
        box.workos_event("organization.created", {"id": "org_2"})
        assert box.once().exit_code == 1
        (run,) = box.runs("kit-fan-out")
        assert run.status == "failed" and run.error is not None and "answered 503" in run.error
        assert {c.integration: c.status for c in box.calls()} == {"crm": 200, "billing": 503, "analytics": 200}
        assert set(run.steps) == {"crm", "analytics"}  # the others' results stay stored


def test_a_run_error_keeps_the_message_but_not_the_users_values(tmp_path: Path) -> None:
    """The README's first example without its table: the stored error says what is wrong, and the SQL
    parameters (the user's e-mail) are not in it."""
    with Sandbox(registry=registry, path=tmp_path) as box:
        box.workos_event("user.created", {"id": "user_5", "email": "zoe.private@example.com"})
        assert box.once().exit_code == 1
        (run,) = box.runs("kit-welcome")
    assert run.status == "failed" and run.error is not None
    assert "OperationalError" in run.error and "no such table: welcome_queue" in run.error
    assert "zoe.private@example.com" not in run.error and "[parameters" not in run.error


def test_run_one_workflow_on_one_event_and_resume_its_sleep() -> None:
    """``syncd.testing.run``: the unit-test form, one workflow and one event."""
    nudge = registry.get("kit-nudge")
    assert nudge is not None
    result = run(nudge, type="organization_membership.created", data={"id": "om_7"}, integrations=["crm"])
    try:
        assert (result.status, result.calls, result.steps) == ("sleeping", [], {"wait": result.steps["wait"]})
        later = result.resume(after=timedelta(minutes=30))
        assert later.status == "succeeded" and later.error is None
        assert [(c.integration, c.json) for c in later.calls] == [
            ("crm", {"id": "om_7"}), ("slack", {"text": "nudged om_7"})]
        assert set(later.steps) == {"wait", "ping", "slack"}
    finally:
        result.close()


def test_run_with_canned_replies_and_a_failing_integration() -> None:
    fan_out = registry.get("kit-fan-out")
    assert fan_out is not None
    result = run(fan_out, type="organization.created", data={"id": "org_3"},
                 integrations={"crm": {"id": "c_1"}, "billing": Reply(500, {"error": "down"}), "analytics": None})
    try:
        assert result.status == "failed" and result.error is not None and "answered 500" in result.error
        assert result.steps["crm"] == {"id": "c_1"} and "billing" not in result.steps
        assert {c.integration for c in result.calls} == {"crm", "billing", "analytics"}
    finally:
        result.close()
