"""Issue 21: one small trace per event, tied to the page that brought it, that every attempt of its runs
joins — whenever and in whichever process they run.

``syncd once`` runs as a subprocess (a fresh global tracer provider each time) against the WorkOS
simulator and exports over OTLP/HTTP to a real receiver on loopback, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from syncd.store.tables import runs, steps
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.test_telemetry import KEY, base_env, syncd_once

#: The issue's bound on an event's trace: "tens of spans, not thousands".
MAX_TRACE_SPANS = 50
BOOKKEEPING = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "PRAGMA")

PER_EVENT_WORKFLOW = '''
from datetime import timedelta

import sqlalchemy as sa

from connectors import workos
from syncd import workflow

FAIL_ONCE = {fail_once!r}
SLEEPER = {sleeper!r}


@workflow(name="trace.users", on=workos.events("user.created", "user.updated"))
def users(event, ctx):
    ctx.db.execute(sa.text("SELECT 1"))  # the user's own statement: a span in the event's trace
    if event.id == FAIL_ONCE and ctx.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")
    if event.id == SLEEPER:
        ctx.sleep("nap", timedelta(hours=1))
'''


def _by_trace(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    out: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        out.setdefault(span.trace_id, []).append(span)
    return out


def _runs(db_url: str) -> dict[str, tuple[str, str | None, int]]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT event_id, status, trace_id, attempts FROM syncd_runs "
                                        "WHERE workflow = 'trace.users'")).all()
    finally:
        engine.dispose()
    return {event_id: (status, trace_id, attempts) for event_id, status, trace_id, attempts in rows}


def _make_due(db_url: str, event_id: str) -> None:
    """The retry's backoff or the sleep's hour has passed (as on a later tick): due now, awake."""
    past = datetime(2000, 1, 1, tzinfo=UTC)
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.update(runs).where(runs.c.event_id == event_id).values(next_attempt_at=past))
            conn.execute(sa.update(steps).where(steps.c.event_id == event_id, steps.c.step == "nap")
                         .values(result={"wake_at": past.isoformat(), "value": None}))
    finally:
        engine.dispose()


def test_a_catch_up_gives_each_event_a_small_trace_linked_to_its_page(tmp_path: Path, db_url: str) -> None:
    with WorkOSSimulator(events=600, seed=21, api_key=KEY) as sim, OTLPReceiver() as rx:
        users = [e["id"] for e in sim.events() if e["event"] in ("user.created", "user.updated")]
        (tmp_path / "trace_wf.py").write_text(PER_EVENT_WORKFLOW.format(fail_once=users[3], sleeper=users[5]))
        env = base_env(tmp_path, DATABASE_URL=db_url, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="trace_wf", OTEL_EXPORTER_OTLP_ENDPOINT=rx.url)
        proc = syncd_once(tmp_path, env)
        assert proc.returncode == 1, proc.stderr  # the failed first attempt
        spans = rx.spans
    by_trace = _by_trace(spans)
    [tick] = [s for s in spans if s.name == "syncd.tick"]
    tick_spans = by_trace[tick.trace_id]
    pages = {(p.trace_id, p.span_id): p for p in tick_spans if p.name == "page.fetch"}
    assert pages and not any(s.name in ("event.process", "workflow.run") for s in tick_spans)
    # every statement span explains something: no transaction bookkeeping (SYNCD_TRACE_SQL=some)
    sql = [s for s in spans if "db.system.name" in s.attributes]
    assert sql and not [s.name for s in sql if s.name.split()[0].upper() in BOOKKEEPING]
    assert [s for s in tick_spans if s.name == "page.transaction"]

    roots = [s for s in spans if s.name == "event.process" and s.attributes.get("syncd.workflows")
             and "trace.users" in s.attributes["syncd.workflows"]]
    assert sorted(r.attributes["messaging.message.id"] for r in roots) == sorted(users)
    runs = _runs(db_url)
    for root in roots:
        event_id = root.attributes["messaging.message.id"]
        trace = by_trace[root.trace_id]
        assert root.parent_span_id == "" and root.trace_id != tick.trace_id
        assert len(trace) <= MAX_TRACE_SPANS
        # linked to the page that brought it, in the tick's trace
        assert any(link in pages for link in root.links), root.links
        assert pages[next(link for link in root.links if link in pages)].attributes["syncd.source"] == "workos"
        attempts = [s for s in trace if s.name == "workflow.run"]
        assert attempts and all(a.parent_span_id == root.span_id for a in attempts)
        # the user's SELECT sits in the event's trace, under its run
        assert any(s.parent_span_id in {a.span_id for a in attempts} and "db.system.name" in s.attributes
                   for s in trace)
        assert runs[event_id][1] == root.trace_id  # the stored trace id leads to this trace
    # the failed first attempt: its ERROR span and its log line, in the event's own trace
    failed = [s for s in spans if s.name == "workflow.run" and s.is_error]
    assert [s.attributes["messaging.message.id"] for s in failed] == [users[3]]
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip().startswith("{")]
    [warning] = [rec for rec in lines if rec.get("event_id") == users[3]]
    assert warning["trace_id"] == runs[users[3]][1] and warning["span_id"] == failed[0].span_id


def test_a_retried_run_and_a_resumed_sleep_keep_their_trace(tmp_path: Path, db_url: str) -> None:
    """Each attempt runs in another ``syncd once`` process, as on another replica's later tick."""
    with WorkOSSimulator(events=120, seed=7, api_key=KEY) as sim, OTLPReceiver() as rx:
        users = [e["id"] for e in sim.events() if e["event"] in ("user.created", "user.updated")]
        retried, sleeper = users[1], users[2]
        (tmp_path / "trace_wf.py").write_text(PER_EVENT_WORKFLOW.format(fail_once=retried, sleeper=sleeper))
        env = base_env(tmp_path, DATABASE_URL=db_url, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="trace_wf", OTEL_EXPORTER_OTLP_ENDPOINT=rx.url)
        first = syncd_once(tmp_path, env)
        assert first.returncode == 1, first.stderr
        before = _runs(db_url)
        assert before[retried][0] == "failed" and before[sleeper][0] == "sleeping"
        _make_due(db_url, retried)
        _make_due(db_url, sleeper)
        second = syncd_once(tmp_path, env)
        assert second.returncode == 0, second.stderr
        spans = rx.spans
    after = _runs(db_url)
    by_trace = _by_trace(spans)
    for event_id, attempts_expected in ((retried, [1, 2]), (sleeper, [1, 1])):
        status, trace_id, _ = after[event_id]
        assert status == "succeeded" and trace_id == before[event_id][1]
        assert trace_id is not None
        trace = by_trace[trace_id]
        [root] = [s for s in trace if s.name == "event.process"]
        attempts = sorted((s for s in trace if s.name == "workflow.run"), key=lambda s: s.start_ns)
        assert [a.attributes["syncd.attempt"] for a in attempts] == attempts_expected
        assert all(a.parent_span_id == root.span_id for a in attempts)
        assert len(trace) <= MAX_TRACE_SPANS
    sleeper_trace = after[sleeper][1]
    assert sleeper_trace is not None
    outcomes = Counter(s.attributes["syncd.outcome"] for s in by_trace[sleeper_trace] if s.name == "workflow.run")
    assert outcomes == {"sleeping": 1, "succeeded": 1}


# ---- SYNCD_TRACE_SQL ---------------------------------------------------------------------------------


def test_trace_sql_switch_shows_every_statement_or_none(tmp_path: Path) -> None:
    """``some`` (the default, above) leaves out the SAVEPOINT bookkeeping; ``all`` shows it; ``none`` makes
    no SQL span; anything else exits 2 naming the variable."""
    names: dict[str, list[str]] = {}
    with WorkOSSimulator(events=120, seed=3, api_key=KEY) as sim:
        for mode in ("all", "none"):
            with OTLPReceiver() as rx:
                env = base_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / mode}.db", WORKOS_API_KEY=KEY,
                               WORKOS_BASE_URL=sim.url, OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, SYNCD_TRACE_SQL=mode)
                proc = syncd_once(tmp_path, env)
                assert proc.returncode == 0, proc.stderr
                names[mode] = [s.name.split()[0].upper() for s in rx.spans if "db.system.name" in s.attributes]
                assert any(s.name == "event.process" for s in rx.spans)
        bad = syncd_once(tmp_path, {**env, "SYNCD_TRACE_SQL": "everything"})
    assert "SAVEPOINT" in names["all"] and "RELEASE" in names["all"] and "INSERT" in names["all"]
    assert names["none"] == []
    assert bad.returncode == 2 and "SYNCD_TRACE_SQL" in bad.stderr


# ---- lost spans ----------------------------------------------------------------------------------------


def test_spans_dropped_by_a_full_queue_are_counted_and_said(tmp_path: Path) -> None:
    """A queue of one span cannot hold a catch-up's spans: ``syncd once`` says how many were lost."""
    with WorkOSSimulator(events=300, seed=3, api_key=KEY) as sim, OTLPReceiver() as rx:
        env = base_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'q.db'}", WORKOS_API_KEY=KEY,
                       WORKOS_BASE_URL=sim.url, OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, OTEL_BSP_MAX_QUEUE_SIZE="1")
        proc = syncd_once(tmp_path, env)
        received = len(rx.spans)
    assert proc.returncode == 0, proc.stderr
    [line] = [json.loads(x) for x in proc.stderr.splitlines() if "span(s) dropped" in x]
    dropped = int(line["message"].split()[0])
    assert line["level"] == "warning" and dropped > 0
    assert received + dropped >= 300  # every event's root was either exported or counted
