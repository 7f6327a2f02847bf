"""The dashboard and the run queue (issue #22): every page and filter with runs in every status, the claim of a
running run, the queue's depth and oldest age, and Replay of a ``failed`` run (its retry brought forward).

Real things: the WorkOS simulator over loopback, SQLite and PostgreSQL, a real claim by ``Store.claim_runs``,
the real worker pool. Runs in the queue's intermediate statuses (queued, pending, sleeping) are made by setting
rows of a synced database to them: the state a ``syncd run`` replica leaves between a page and a worker.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.workos import WorkOSSimulator
from syncd.contracts import Event, RunKey
from syncd.ops.app import App
from syncd.ops.dashboard import dashboard_for
from syncd.ops.dashboard.pages import STATUS_CHOICES
from syncd.ops.http import HealthServer, Monitor
from syncd.store.tables import runs
from syncd.workflows import Context, Registry
from tests.conftest import settings_for, workos_env
from tests.test_dashboard import UI_TOKEN

OWNER = "replica-a/worker-7"


@dataclass
class Queue:
    app: App
    server: HealthServer
    broken: dict[str, bool]
    client: httpx.Client

    def post(self, path: str, data: dict[str, str], **headers: str) -> httpx.Response:
        return self.client.post(path, data=data, headers={"Origin": self.server.url, **headers})


def queue_registry(broken: dict[str, bool]) -> Registry:
    """``welcome`` (user.created) fails while broken and is retried (failed runs); ``doomed``
    (organization.created) fails once for good (dead runs); ``audit`` (user.updated) succeeds."""
    registry = Registry()

    @registry.workflow("welcome", on=workos.events("user.created"), retries=5)
    def welcome(event: Event, ctx: Context) -> None:
        if broken["on"]:
            raise RuntimeError("mail server said 503")

    @registry.workflow("doomed", on=workos.events("organization.created"), retries=1)
    def doomed(event: Event, ctx: Context) -> None:
        raise RuntimeError("never works")

    @registry.workflow("audit", on=workos.events("user.updated"))
    def audit(event: Event, ctx: Context) -> None:
        pass

    return registry


def _set_status(app: App, keys: list[tuple[str, str, str]], status: str, due: datetime) -> None:
    with app.db.begin() as conn:
        for workflow, stream, event_id in keys:
            conn.execute(sa.update(runs).where(runs.c.workflow == workflow, runs.c.stream == stream,
                                               runs.c.event_id == event_id)
                         .values(status=status, next_attempt_at=due, finished_at=None))


def statuses(app: App) -> dict[tuple[str, str, str], tuple[str, int, datetime | None]]:
    with app.db.connect() as conn:
        return {(r.workflow, r.stream, r.event_id): (r.status, r.attempts, r.next_attempt_at) for r in conn.execute(
            sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id, runs.c.status, runs.c.attempts,
                      runs.c.next_attempt_at))}


@pytest.fixture
def queue(db_url: str, workos_sim: WorkOSSimulator, apps: list[App]) -> Iterator[Queue]:
    with queue_on(db_url, workos_sim, apps) as served:
        yield served


@contextlib.contextmanager
def queue_on(db_url: str, workos_sim: WorkOSSimulator, apps: list[App]) -> Iterator[Queue]:
    """A synced database with runs in every status: failed, dead and succeeded from the sync; then, of the
    audit runs, 6 queued (due 5 minutes ago), 3 pending (due now), 2 sleeping (due in an hour), and one of the
    queued ones claimed by ``OWNER`` (running)."""
    broken = {"on": True}
    settings = settings_for(db_url, SYNCD_UI_TOKEN=UI_TOKEN, **workos_env(workos_sim))
    app = App.build(settings, registry=queue_registry(broken))
    apps.append(app)
    assert app.tick_all()[0].ok
    now = datetime.now(UTC)
    audit = sorted(k for k, (s, _, _) in statuses(app).items() if k[0] == "audit" and s == "succeeded")
    assert len(audit) >= 12
    _set_status(app, audit[:6], "queued", now - timedelta(minutes=5))
    _set_status(app, audit[6:9], "pending", now - timedelta(seconds=1))
    _set_status(app, audit[9:11], "sleeping", now + timedelta(hours=1))
    claimed = app.engine.store.claim_runs(OWNER, now, lease_seconds=600, limit=1, workflows=["audit"], limited={})
    assert len(claimed) == 1
    monitor = Monitor(app.reads, ["workos"], interval=60)
    server = HealthServer(monitor, host="127.0.0.1", port=0, dashboard=dashboard_for(settings, app))
    server.start()
    client = httpx.Client(base_url=server.url, timeout=30)
    assert client.post("/signin", data={"token": UI_TOKEN}, headers={"Origin": server.url}).status_code == 303
    try:
        yield Queue(app, server, broken, client)
    finally:
        client.close()
        server.stop()


def shown_runs(page: str) -> list[tuple[str, str, str]]:
    """(workflow, event id, status) of each row of the runs table."""
    return re.findall(r'<tr>\s*<td>([^<]+)</td>\s*<td><code>[^<]*</code></td>\s*<td><a href="[^"]+"><code>([^<]+)'
                      r'</code></a>.*?<span class="status (\w+)">', page, re.S)


def test_every_status_filter_shows_exactly_its_runs(queue: Queue) -> None:
    everything = statuses(queue.app)
    by_status: dict[str, int] = {}
    for status, _, _ in everything.values():
        by_status[status] = by_status.get(status, 0) + 1
    assert {"queued", "running", "pending", "sleeping", "failed", "dead", "succeeded"} <= set(by_status)
    for choice, wanted in STATUS_CHOICES.items():
        answer = queue.client.get("/runs", params={"status": choice})
        assert answer.status_code == 200, choice
        rows = shown_runs(answer.text)
        expected = sum(by_status.get(s, 0) for s in wanted)
        assert len(rows) == min(50, expected), (choice, len(rows), expected)
        assert {status for _, _, status in rows} <= set(wanted), choice
        for workflow, event_id, status in rows:
            assert everything[(workflow, "workos", event_id)][0] == status
    unfiltered = shown_runs(queue.client.get("/runs").text)
    assert len(unfiltered) == 50
    # every status also with a workflow and a source filter
    for choice in STATUS_CHOICES:
        for workflow in ("audit", "welcome", "doomed"):
            answer = queue.client.get("/runs", params={"status": choice, "workflow": workflow, "source": "workos"})
            assert answer.status_code == 200 and all(w == workflow for w, _, _ in shown_runs(answer.text))


def test_a_running_run_shows_its_claim_and_the_queue_its_depth(queue: Queue) -> None:
    page = queue.client.get("/runs", params={"status": "in-flight"}).text
    rows = shown_runs(page)
    assert len(rows) == 1 and rows[0][2] == "running"
    with queue.app.db.connect() as conn:
        until = conn.execute(sa.select(runs.c.claimed_until).where(runs.c.status == "running")).scalar_one()
    assert f"claimed by <code>{OWNER}</code>" in page
    assert f"until {until.strftime('%Y-%m-%d %H:%M:%S')}" in page
    assert "<button type=\"submit\">Replay " not in page  # a running run is the worker's
    # the per-workflow queue table on the runs page: queued, running, pending, sleeping, failed, dead
    assert re.search(r"<tr><td>audit</td><td>5</td><td>1</td><td>3</td><td>2</td><td>0</td><td>0</td></tr>", page)
    sources = queue.client.get("/").text
    table = re.search(r'<table id="run-queue">(.*?)</table>', sources, re.S)
    assert table is not None, sources
    cells = re.findall(r"<td>(.*?)</td>", table.group(1), re.S)
    # due now: 5 queued + 3 pending (failed retries are due later); the oldest waited 5 minutes
    assert re.search(r">8</a>", cells[0]) and cells[1].strip() == "5 min"
    assert ">1</a>" in cells[2] and "audit: 1" in cells[2]
    failed = sum(1 for s, _, _ in statuses(queue.app).values() if s == "failed")
    assert cells[3].strip() == str(failed + 2)  # failed runs waiting for their retry, and the sleepers


def test_replay_of_a_failed_run_brings_its_retry_forward(queue: Queue) -> None:
    before = statuses(queue.app)
    failed = sorted(k for k, (s, _, _) in before.items() if s == "failed")
    assert failed
    page = queue.client.get("/runs", params={"status": "failed"}).text
    workflow, stream, event_id = failed[0]
    assert f">Replay welcome on {event_id} now</button>" in page
    due_at = before[failed[0]][2]
    assert due_at is not None and due_at > datetime.now(UTC) + timedelta(seconds=5)  # its retry is later

    answer = queue.post("/actions/retry", {"workflow": workflow, "stream": stream, "event_id": event_id,
                                           "back": "/runs?status=failed"})
    assert answer.status_code == 303 and answer.headers["location"] == "/runs?status=failed&retried=1"
    assert "The failed run is due now" in queue.client.get(answer.headers["location"]).text
    after = statuses(queue.app)
    status, attempts, due = after[failed[0]]
    assert status == "failed" and attempts == before[failed[0]][1] and due is not None
    assert due <= datetime.now(UTC)
    assert {k: v for k, v in after.items() if k != failed[0]} == {k: v for k, v in before.items() if k != failed[0]}

    # the queue runs it now, and only it of the failed runs: the others still wait for their retry
    queue.broken["on"] = False
    queue.app.workers().drain()
    done = statuses(queue.app)
    assert done[failed[0]][:2] == ("succeeded", attempts + 1)
    assert all(done[k][0] == "failed" for k in failed[1:])


def test_replay_now_changes_nothing_but_a_failed_run(queue: Queue) -> None:
    before = statuses(queue.app)
    pick = {s: next(k for k, (st, _, _) in sorted(before.items()) if st == s)
            for s in ("dead", "running", "succeeded", "sleeping")}
    for status, (workflow, stream, event_id) in pick.items():
        answer = queue.post("/actions/retry", {"workflow": workflow, "stream": stream, "event_id": event_id})
        assert answer.status_code == 303 and answer.headers["location"] == "/runs?retried=0", status
    gone = queue.post("/actions/retry", {"workflow": "welcome", "stream": "workos", "event_id": "evt_nope"})
    assert gone.headers["location"] == "/runs?retried=0"
    assert queue.post("/actions/retry", {"workflow": "welcome"}).status_code == 400
    assert statuses(queue.app) == before
    # htmx: the row is swapped for the outcome
    failed = next(k for k, (s, _, _) in sorted(before.items()) if s == "failed")
    row = queue.post("/actions/retry", dict(zip(("workflow", "stream", "event_id"), failed, strict=True)),
                     **{"HX-Request": "true"})
    assert row.status_code == 200 and 'role="status">due now</span>' in row.text


def test_replay_now_obeys_the_origin_and_session_rules(queue: Queue) -> None:
    before = statuses(queue.app)
    workflow, stream, event_id = next(k for k, (s, _, _) in sorted(before.items()) if s == "failed")
    data = {"workflow": workflow, "stream": stream, "event_id": event_id}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-site", "Origin": queue.server.url},
                    {"Origin": "null"}):
        refused = queue.client.post("/actions/retry", data=data, headers=headers)
        assert refused.status_code == 403 and "nothing was changed" in refused.text
    with httpx.Client(base_url=queue.server.url, timeout=30) as anonymous:
        assert anonymous.post("/actions/retry", data=data, headers={"Origin": queue.server.url}).status_code == 401
    assert statuses(queue.app) == before
    assert queue.client.get("/runs").status_code == 200  # still signed in


def test_store_retry_now_contract(queue: Queue) -> None:
    store, before = queue.app.engine.store, statuses(queue.app)
    now = datetime.now(UTC)
    failed = next(k for k, (s, _, _) in sorted(before.items()) if s == "failed")
    for key, (status, _, _) in sorted(before.items()):
        if status != "failed":
            assert store.retry_now(RunKey(*key), now) is False, status
    assert store.retry_now(RunKey("welcome", "workos", "evt_missing"), now) is False
    assert store.retry_now(RunKey(*failed), now) is True
    assert statuses(queue.app)[failed] == ("failed", before[failed][1], now)


def test_every_page_answers_with_runs_in_every_status(queue: Queue) -> None:
    event_id = next(k for k, (s, _, _) in statuses(queue.app).items() if s == "running")[2]
    for path in ("/", "/fragments/sources", "/runs", "/quarantine", f"/events?q={event_id}", "/runs/replay-all",
                 "/runs?status=nonsense", "/runs?page=1"):
        answer = queue.client.get(path)
        assert answer.status_code == 200, path
        assert "Traceback" not in answer.text
    history = queue.client.get("/events", params={"q": event_id}).text
    assert '<span class="status running">running</span>' in history
