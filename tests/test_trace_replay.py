"""Every attempt of a run reachable from the trace id stored on it (issue 21), when the attempt is not the
engine's own: a dead run replayed by ``syncd replay`` (what the dashboard's Replay of a dead run calls)
and a failed run whose retry was brought forward (``Store.retry_now``, the dashboard's Replay of a failed
run). A retry on a later tick, on another replica, and a resumed sleep are in ``test_telemetry_traces``.

Each step runs as its own ``syncd`` process, exporting to a real OTLP/HTTP receiver on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from syncd.contracts import RunKey
from syncd.store import SqlStore
from syncd.store.db import create_engine
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.test_telemetry import KEY, TIMEOUT, base_env, syncd_once
from tests.test_telemetry_traces import MAX_TRACE_SPANS, _by_trace

FLAKY_WORKFLOWS = '''
from pathlib import Path

from connectors import workos
from syncd import workflow

DEAD, RETRIED = {dead!r}, {retried!r}
FIXED = Path(__file__).with_name("fixed")  # the fix is deployed: both succeed from now on


@workflow(name="trace.once", on=workos.events("user.created", "user.updated"), retries=1)
def once(event, ctx):
    if event.id == DEAD and not FIXED.exists():
        raise RuntimeError("fails until fixed; no retry: dead at once")


@workflow(name="trace.retried", on=workos.events("user.created", "user.updated"))
def retried(event, ctx):
    if event.id == RETRIED and not FIXED.exists():
        raise RuntimeError("fails until fixed")
'''


def _run(db: str, workflow: str, event_id: str) -> tuple[str, str | None, int]:
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT status, trace_id, attempts FROM syncd_runs WHERE workflow = :w "
                                       "AND event_id = :e"), {"w": workflow, "e": event_id}).one()
    finally:
        engine.dispose()
    return row[0], row[1], row[2]


def _attempts(trace: list[ReceivedSpan], workflow: str) -> list[ReceivedSpan]:
    return sorted((s for s in trace if s.name == "workflow.run" and s.attributes.get("syncd.workflow") == workflow),
                  key=lambda s: s.start_ns)


def test_a_replay_and_a_retry_brought_forward_join_their_events_traces(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'replay.db'}"
    with WorkOSSimulator(events=60, seed=11, api_key=KEY) as sim, OTLPReceiver() as rx:
        users = [e["id"] for e in sim.events() if e["event"] in ("user.created", "user.updated")]
        dead, retried = users[0], users[1]
        (tmp_path / "flaky_wf.py").write_text(FLAKY_WORKFLOWS.format(dead=dead, retried=retried))
        env = base_env(tmp_path, DATABASE_URL=db, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="flaky_wf", OTEL_EXPORTER_OTLP_ENDPOINT=rx.url)
        first = syncd_once(tmp_path, env)
        assert first.returncode == 1, first.stderr
        dead_trace = _run(db, "trace.once", dead)[1]
        retried_trace = _run(db, "trace.retried", retried)[1]
        assert _run(db, "trace.once", dead)[0] == "dead" and _run(db, "trace.retried", retried)[0] == "failed"
        (tmp_path / "fixed").write_text("")

        store = SqlStore(create_engine(db))
        try:  # the dashboard's Replay on a failed run: its retry is due now, for the next worker
            assert store.retry_now(RunKey("trace.retried", "workos", retried), datetime.now(UTC))
        finally:
            store.close()
            store.db.dispose()
        replay = subprocess.run([sys.executable, "-m", "syncd", "replay", "--event", dead], cwd=tmp_path,
                                env={**env, "SYNCD_REPLICA_ID": "replayer"}, capture_output=True, text=True,
                                timeout=TIMEOUT, check=False)
        assert replay.returncode == 0, replay.stderr
        second = syncd_once(tmp_path, {**env, "SYNCD_REPLICA_ID": "another-replica"})
        assert second.returncode == 0, second.stderr
        spans = rx.spans
    by_trace = _by_trace(spans)

    # the replay: same stored trace id; under the event's root, an event.replay span holding attempt 2,
    # linked to the replay command's own span
    status, trace_id, attempts = _run(db, "trace.once", dead)
    assert (status, trace_id, attempts) == ("succeeded", dead_trace, 2)
    assert trace_id is not None
    trace = by_trace[trace_id]
    [root] = [s for s in trace if s.name == "event.process"]
    [replayed] = [s for s in trace if s.name == "event.replay"]
    [command] = [s for s in spans if s.name == "syncd.replay"]
    assert replayed.parent_span_id == root.span_id and replayed.attributes["messaging.message.id"] == dead
    assert (command.trace_id, command.span_id) in replayed.links and command.trace_id != trace_id
    first_try, again = _attempts(trace, "trace.once")
    assert first_try.parent_span_id == root.span_id and first_try.is_error
    assert again.parent_span_id == replayed.span_id and not again.is_error
    assert [first_try.attributes["syncd.attempt"], again.attributes["syncd.attempt"]] == [1, 2]
    assert len(trace) <= MAX_TRACE_SPANS
    lines = [json.loads(line) for line in replay.stderr.splitlines() if line.strip().startswith("{")]
    [said] = [rec for rec in lines if rec.get("event_id") == dead and "replayed" in rec["message"]]
    assert said["trace_id"] == trace_id  # the replay's log line is joined to the event's trace

    # the retry brought forward: run by a worker of another process, in the same trace
    status, trace_id, attempts = _run(db, "trace.retried", retried)
    assert (status, trace_id, attempts) == ("succeeded", retried_trace, 2)
    assert trace_id is not None
    trace = by_trace[trace_id]
    [root] = [s for s in trace if s.name == "event.process"]
    runs = _attempts(trace, "trace.retried")
    assert [s.attributes["syncd.attempt"] for s in runs] == [1, 2]
    assert all(s.parent_span_id == root.span_id for s in runs) and runs[0].is_error and not runs[1].is_error
