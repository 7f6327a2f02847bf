"""Logs joined to traces (issue 21): every line logged about an event's run — by syncd or by the workflow's
own code, on a worker or inline in the page's transaction, on a first attempt or a retry in another
process — carries that event's trace id and the span id of the run attempt it was logged in.

``syncd once`` runs as a subprocess (JSON logs) exporting to a real OTLP/HTTP receiver on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulators.workos import WorkOSSimulator
from tests.otlp_receiver import OTLPReceiver
from tests.test_telemetry import KEY, base_env, syncd_once
from tests.test_telemetry_traces import _make_due

LOGGING_WORKFLOWS = '''
import logging

from connectors import workos
from syncd import workflow

FAIL_ONCE = {fail_once!r}
log = logging.getLogger("user.workflows")


@workflow(name="logs.queued", on=workos.events("user.created", "user.updated"))
def queued(event, ctx):
    log.info("queued run saw %s", event.id, extra={{"event_id": event.id, "attempt": ctx.attempt}})
    if event.id == FAIL_ONCE and ctx.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")


@workflow(name="logs.inline", on=workos.events("user.created"), inline=True)
def inline(event, ctx):
    log.info("inline run saw %s", event.id, extra={{"event_id": event.id, "attempt": ctx.attempt}})
'''


def _lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip().startswith("{")]


def _runs(db: str) -> dict[tuple[str, str], str]:
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT workflow, event_id, trace_id FROM syncd_runs")).all()
    finally:
        engine.dispose()
    return {(w, e): t for w, e, t in rows}


def test_every_line_about_a_run_carries_its_events_trace_and_attempt_span(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'logs.db'}"
    with WorkOSSimulator(events=40, seed=2, api_key=KEY) as sim, OTLPReceiver() as rx:
        created = [e["id"] for e in sim.events() if e["event"] == "user.created"]
        retried = created[0]
        (tmp_path / "logging_wf.py").write_text(LOGGING_WORKFLOWS.format(fail_once=retried))
        env = base_env(tmp_path, DATABASE_URL=db, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="logging_wf", OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, LOG_FORMAT="json")
        first = syncd_once(tmp_path, env)
        assert first.returncode == 1, first.stderr
        _make_due(db, retried)
        second = syncd_once(tmp_path, {**env, "SYNCD_REPLICA_ID": "another-replica"})
        assert second.returncode == 0, second.stderr
        spans = rx.spans
    runs = _runs(db)
    attempt_spans = {(s.attributes["syncd.workflow"], s.attributes.get("messaging.message.id"), s.span_id): s
                     for s in spans if s.name == "workflow.run"}
    lines = [rec for rec in _lines(first.stderr) + _lines(second.stderr) if rec.get("event_id")]
    user_lines = [rec for rec in lines if rec["logger"] == "user.workflows"]
    # both workflows' lines, the retried run's two attempts, and syncd's own warning about its failure
    assert {rec["message"].split()[0] for rec in user_lines} == {"queued", "inline"}
    assert len([rec for rec in user_lines if rec["event_id"] == retried and rec["message"].startswith("queued")]) == 2
    assert [rec for rec in lines if rec["logger"] == "syncd.engine" and rec["event_id"] == retried]
    for rec in lines:
        workflow = rec.get("workflow") or ("logs.inline" if rec["message"].startswith("inline") else "logs.queued")
        trace_id = runs[(workflow, rec["event_id"])]
        assert rec.get("trace_id") == trace_id, rec
        span = next((s for (w, _, span_id), s in attempt_spans.items() if w == workflow and span_id == rec["span_id"]),
                    None)
        assert span is not None and span.trace_id == trace_id, rec  # the run attempt's own span
        if "attempt" in rec:
            assert span.attributes["syncd.attempt"] == rec["attempt"]
