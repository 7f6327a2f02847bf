"""Traces as Jaeger would receive them: ``syncd`` runs as a subprocess (a fresh global tracer provider)
against the WorkOS simulator and exports over OTLP/HTTP to a real receiver on loopback.

Shown here: the span trees (a tick's trace, one small trace per event linked to its page: issue 21) and
their attributes, the ERROR span of a failing workflow and the trace id stored on its run, stable
semantic-convention names, that no credential reaches the exported bytes or the logs (even with every
request header captured), JSON logs carrying trace ids, and that SIGTERM exits within 10 s while the
collector refuses connections or hangs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider

from simulators.workos import Faults, WorkOSSimulator
from syncd.errors import ConfigError
from syncd.logs import JsonFormatter, TextFormatter, redact, setup_logging
from syncd.settings import TelemetrySettings, export_timeout, exporter_name, traces_endpoint
from syncd.telemetry import DropOrphanClientSpans, setup_telemetry
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_telemetry_secret_93c1"
TIMEOUT = 60

FAILING_WORKFLOW = '''
import sqlalchemy as sa

from connectors import workos
from syncd import workflow

FAIL_ID = {fail_id!r}


@workflow(name="tele.users", on=workos.events("user.created", "user.updated"), version="2.1")
def users(event, ctx):
    ctx.db.execute(sa.text("SELECT 1"))  # in the run's SAVEPOINT: a SQL span under workflow.run
    if event.id == FAIL_ID:
        raise RuntimeError("boom on purpose")
'''


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A minimal environment; nothing from the test runner's (no OTEL_* leaks in)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1",
            "SYNCD_HTTP_PORT": "0", **extra}


def syncd_once(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- one sync, as exported -------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=160, seed=21, api_key=KEY) as simulator:
        yield simulator


def test_one_sync_exports_the_span_tree_without_secrets(tmp_path: Path, db_url: str,
                                                        sim: WorkOSSimulator) -> None:
    user_events = [e["id"] for e in sim.events() if e["event"] in ("user.created", "user.updated")]
    fail_id = user_events[3]
    (tmp_path / "tele_wf.py").write_text(FAILING_WORKFLOW.format(fail_id=fail_id))
    with OTLPReceiver() as rx:
        env = base_env(tmp_path, DATABASE_URL=db_url, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="tele_wf", SYNCD_BUILTINS="none", OTEL_SERVICE_NAME="syncd-test",
                       OTEL_EXPORTER_OTLP_ENDPOINT=rx.url,
                       # the worst configuration: capture every request header (Authorization included)
                       OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST=".*")
        proc = syncd_once(tmp_path, env)
        # a failing workflow does not fail the tick, but `once` exits 1 for the failed run (issue 18)
        assert proc.returncode == 1 and proc.stdout.startswith("workos: ok"), proc.stderr
        spans, raw = rx.spans, rx.raw  # `once` flushed before exiting

    # -- no secret anywhere: exported bytes (decompressed), stdout, stderr
    assert KEY.encode() not in raw and b"bearer" not in raw.lower()
    assert KEY not in proc.stdout + proc.stderr and "bearer" not in (proc.stdout + proc.stderr).lower()

    by_id = {s.span_id: s for s in spans}
    named = _by_name(spans)
    [tick] = named["syncd.tick"]
    [sync] = named["source.sync"]
    assert tick.parent_span_id == "" and sync.parent_span_id == tick.span_id
    assert tick.resource["service.name"] == "syncd-test"
    # two kinds of trace (issue 21): the tick's, and one per event; no orphan span in either
    processes = named["event.process"]
    event_traces = {p.trace_id for p in processes}
    assert {s.trace_id for s in spans} == {tick.trace_id} | event_traces
    assert len(event_traces) == len(processes) and tick.trace_id not in event_traces
    assert all(s.parent_span_id in by_id for s in spans if s is not tick and s not in processes)
    assert all(p.parent_span_id == "" for p in processes)

    # -- the tick: source.sync > page.fetch > (GET, page.transaction > SQL)
    pages = named["page.fetch"]
    assert pages and all(p.parent_span_id == sync.span_id and p.trace_id == tick.trace_id for p in pages)
    http = [s for s in spans if s.kind == "client" and "http.request.method" in s.attributes]
    assert len(http) == len(pages)
    for page in pages:
        [get] = [h for h in http if h.parent_span_id == page.span_id]
        assert get.attributes["http.request.method"] == "GET"  # stable HTTP semconv (not http.method)
        assert get.attributes["http.response.status_code"] == 200
        # issue 17: every outbound URL is cut to scheme and host (a path or a query may be a secret)
        assert get.attributes["url.full"] == sim.url + "/…"
        assert "http.request.header.user_agent" in get.attributes  # headers really were captured…
        redacted = ["[REDACTED]"]
        assert get.attributes.get("http.request.header.authorization", redacted) == redacted  # …not this
        assert page.attributes["messaging.system"] == "workos"
        assert page.attributes["messaging.operation.type"] == "receive"
    transactions = named["page.transaction"]
    assert transactions and all(by_id[t.parent_span_id].name == "page.fetch" for t in transactions)
    batch_sizes = [p.attributes["messaging.batch.message_count"] for p in pages]
    assert sum(batch_sizes) == sync.attributes["syncd.events"]

    # -- each event: event.process (linked to its page.fetch) > workflow.run > the user's SQL
    page_ids = {(p.trace_id, p.span_id) for p in pages}
    assert all(any(link in page_ids for link in p.links) for p in processes)
    assert {p.attributes["messaging.message.id"] for p in processes} == set(user_events)
    assert {(p.kind, p.attributes["messaging.operation.type"]) for p in processes} == {("consumer",
                                                                                         "process")}
    runs = named["workflow.run"]
    assert len(runs) == len(processes)
    assert all(by_id[r.parent_span_id].name == "event.process" for r in runs)
    assert all(r.trace_id == by_id[r.parent_span_id].trace_id for r in runs)
    assert {r.attributes["syncd.workflow"] for r in runs} == {"tele.users"}
    assert {r.attributes["syncd.workflow.version"] for r in runs} == {"2.1"}
    assert max(len([s for s in spans if s.trace_id == t]) for t in event_traces) <= 50

    # -- SQL statements are child spans (stable database semconv); no SAVEPOINT bookkeeping (issue 21)
    sql = [s for s in spans if "db.system.name" in s.attributes]
    assert {s.attributes["db.system.name"] for s in sql} == {db_url.split(":", 1)[0].split("+")[0]}
    assert any(by_id[s.parent_span_id].name == "workflow.run" for s in sql)  # the user's SELECT 1
    assert any(by_id[s.parent_span_id].name == "page.transaction" for s in sql)  # ledger and cursor writes
    assert not [s.name for s in sql if s.name.split()[0].upper() in ("SAVEPOINT", "RELEASE", "ROLLBACK")]

    # -- source.sync attributes match the database
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            cursor, seen = conn.execute(sa.text("SELECT cursor, events_seen FROM syncd_sources "
                                                "WHERE key = 'workos'")).one()
            status, trace_id = conn.execute(
                sa.text("SELECT status, trace_id FROM syncd_runs WHERE event_id = :e"), {"e": fail_id}).one()
            ok_trace_ids = {t for (t,) in conn.execute(sa.text(
                "SELECT trace_id FROM syncd_runs WHERE status = 'succeeded'"))}
    finally:
        engine.dispose()
    assert sync.attributes["syncd.source"] == "workos" and sync.attributes["messaging.system"] == "workos"
    assert sync.attributes["syncd.pages"] == len(pages)
    assert sync.attributes["syncd.events"] == seen == len(user_events)
    assert sync.attributes["syncd.cursor.after"] == cursor
    assert "syncd.lag_seconds" in sync.attributes
    assert not tick.is_error and not sync.is_error

    # -- the failing workflow: one ERROR span with the exception, its event's trace id on the run row
    failed = [r for r in runs if r.is_error]
    assert len(failed) == 1
    [bad] = failed
    assert by_id[bad.parent_span_id].attributes["messaging.message.id"] == fail_id
    assert bad.attributes["syncd.outcome"] == "failed"
    assert "boom on purpose" in bad.status_message
    [(event_name, exception)] = bad.events
    assert event_name == "exception" and exception["exception.type"] == "RuntimeError"
    assert status == "failed" and trace_id == bad.trace_id
    assert ok_trace_ids == event_traces - {bad.trace_id}
    assert all(r.attributes["syncd.outcome"] == "succeeded" for r in runs if r is not bad)

    # -- logs: JSON lines; the failure's line carries its run's span ids; no httpx request lines
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    [warning] = [rec for rec in lines if rec.get("event_id") == fail_id]
    assert warning["level"] == "warning" and warning["trace_id"] == bad.trace_id
    assert warning["span_id"] == bad.span_id  # logged inside the run's span
    assert not any(rec["logger"].startswith(("httpx", "httpcore")) for rec in lines)


def _by_name(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    out: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def test_batched_mirrors_and_prefetched_pages_keep_one_span_per_event_and_request(
        tmp_path: Path, db_url: str) -> None:
    """The built-in mirrors apply a page in one batch, and on PostgreSQL a slow provider's next page is
    fetched while one commits: still one ``event.process`` per event (a trace of its own, linked to its
    page and its ``workflow.batch``), and every GET under the ``page.fetch`` of the page it brought."""
    # 3,500 events: more than one catch-up transaction (3,000 events or 1 s of pages), so a page is prefetched
    with WorkOSSimulator(events=3500, seed=5, api_key=KEY, faults=Faults(latency=0.03)) as slow, \
            OTLPReceiver() as rx:
        env = base_env(tmp_path, DATABASE_URL=db_url, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=slow.url,
                       OTEL_EXPORTER_OTLP_ENDPOINT=rx.url)
        proc = syncd_once(tmp_path, env)
        assert proc.returncode == 0, proc.stderr
        spans = rx.spans
        mirrored = [e["id"] for e in slow.events() if e["event"].rpartition(".")[0]
                    in ("user", "organization", "organization_membership")]
    by_id = {s.span_id: s for s in spans}
    named = _by_name(spans)
    pages = named["page.fetch"]
    assert len(pages) == -(-len(mirrored) // 100)
    gets = [s for s in spans if s.kind == "client" and "http.request.method" in s.attributes]
    assert sorted(by_id[g.parent_span_id].span_id for g in gets) == sorted(p.span_id for p in pages)
    batches = named["workflow.batch"]
    assert all(by_id[b.parent_span_id].name == "page.transaction" for b in batches)
    assert sum(b.attributes["messaging.batch.message_count"] for b in batches) == len(mirrored)
    # issue 21: each mirrored event is a trace of its own (one root span), linked to its page and its batch
    processes = named["event.process"]
    assert sorted(p.attributes["messaging.message.id"] for p in processes) == sorted(mirrored)
    assert all(p.parent_span_id == "" for p in processes)
    page_ids = {(p.trace_id, p.span_id) for p in pages}
    batch_ids = {(b.trace_id, b.span_id) for b in batches}
    assert all(len(p.links) == 2 and p.links[0] in page_ids and p.links[1] in batch_ids for p in processes)
    assert len({p.trace_id for p in processes}) == len(processes)
    assert "workflow.run" not in named  # a batch's events get no span each beyond their root
    # every page is a child of source.sync, prefetched or not (not of the page committing meanwhile)
    [sync] = named["source.sync"]
    assert {p.parent_span_id for p in pages} == {sync.span_id}
    # PostgreSQL prefetches from a slow provider (the first page of each transaction after the first);
    # SQLite never does
    prefetched = [p for p in pages if p.attributes.get("syncd.prefetched")]
    assert bool(prefetched) == db_url.startswith("postgresql")
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            trace_ids = {t for (t,) in conn.execute(sa.text("SELECT DISTINCT trace_id FROM syncd_runs"))}
    finally:
        engine.dispose()
    # a batch's runs store the trace holding their one attempt, the batch (the tick's trace)
    assert trace_ids == {named["syncd.tick"][0].trace_id}


def test_tracing_off_stores_no_trace_id(tmp_path: Path, sim: WorkOSSimulator) -> None:
    """OTEL_SDK_DISABLED: nothing exported, and runs carry no bogus all-zero trace id."""
    db = tmp_path / "off.db"
    with OTLPReceiver() as rx:
        env = base_env(tmp_path, DATABASE_URL=f"sqlite:///{db}", WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, OTEL_SDK_DISABLED="true")
        proc = syncd_once(tmp_path, env)
        assert proc.returncode == 0, proc.stderr
        assert rx.spans == []
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*), count(trace_id) FROM syncd_runs")).one()[1] == 0
    engine.dispose()


# ---- shutdown while the collector is down -----------------------------------------------------------


@pytest.fixture
def hung_collector() -> Iterator[str]:
    """A port that accepts TCP connections (the kernel completes them) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.slow
@pytest.mark.parametrize(("collector", "timeout", "bound"), [
    ("refusing", None, 10.0),  # the default export timeout (5 s) fits in the 10 s budget
    # the spec's milliseconds; the wait is bounded by it: ignored, the default 5 s alone would break the bound,
    # which leaves 4 s for the stop itself on a loaded 2-core box (1.5 s + 2 s failed there at 4.1 s)
    ("hung", "500", 0.5 + 4.0),
])
def test_sigterm_exits_within_10s_while_the_collector_is_down(
        tmp_path: Path, sim: WorkOSSimulator, collector: str, timeout: str | None, bound: float,
        request: pytest.FixtureRequest) -> None:
    endpoint = (f"http://127.0.0.1:{closed_port()}" if collector == "refusing"
                else request.getfixturevalue("hung_collector"))
    db = tmp_path / "run.db"
    port = closed_port()
    env = base_env(tmp_path, DATABASE_URL=f"sqlite:///{db}", WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                   OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, SYNC_INTERVAL_SECONDS="60",
                   SYNCD_HTTP_PORT=str(port), SYNCD_HTTP_HOST="127.0.0.1",
                   **({"OTEL_EXPORTER_OTLP_TIMEOUT": timeout} if timeout else {}))
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ok, events = _wait_for_tick(db, proc, deadline=time.monotonic() + 30)
        assert ok == 1 and events > 100  # the dead collector did not fail the tick (two pages)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200 and b"workos: ok" in resp.read()
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=12)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert took < bound, f"took {took:.1f}s to exit"
    assert "Traceback" not in err and KEY not in err
    # the spans it could not deliver (or gave up on at the stop) are recorded for `syncd status`
    from syncd.store.spanloss import span_losses

    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        lost = span_losses(engine)
    finally:
        engine.dispose()
    assert [r.replica for r in lost] and sum(r.failed for r in lost) > 0, err


def _wait_for_tick(db: Path, proc: subprocess.Popen[str], deadline: float) -> tuple[int, int]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"syncd run exited early ({proc.returncode}): {err}")
            if db.is_file():
                try:
                    with engine.connect() as conn:
                        row = conn.execute(sa.text("SELECT ok, events FROM syncd_ticks ORDER BY id")).first()
                except sa.exc.OperationalError:  # the schema is not there yet
                    row = None
                if row is not None:
                    return int(row[0]), int(row[1])
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("no tick was recorded in time")


# ---- configuration, pure ----------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "none"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "OTLP"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, "none"),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, "none"),
    ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, "none"),
])
def test_exporter_choice(env: dict[str, str], expected: str) -> None:
    assert exporter_name(env) == expected


def test_bad_exporter_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        exporter_name({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "jaeger:4318"})


@pytest.mark.parametrize(("env", "url"), [
    ({}, "http://localhost:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"}, "http://jaeger:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otel.example/custom"}, "https://otel.example/custom"),
])
def test_traces_endpoint(env: dict[str, str], url: str) -> None:
    assert traces_endpoint(env) == url


@pytest.mark.parametrize(("raw", "seconds"), [(None, 5.0), ("3", 3.0), ("0.5", 0.5), ("10000", 10.0)])
def test_export_timeout_in_seconds_or_the_specs_milliseconds(raw: str | None, seconds: float) -> None:
    assert export_timeout({} if raw is None else {"OTEL_EXPORTER_OTLP_TIMEOUT": raw}) == seconds


def test_a_bad_span_queue_size_names_its_variable() -> None:
    # raised before any tracer provider is installed: the process is left as it was
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_QUEUE_SIZE"):
        setup_telemetry(TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "console",
                                                     "OTEL_BSP_MAX_QUEUE_SIZE": "lots"}), instrument=False)


def test_orphan_client_spans_are_dropped_and_nested_ones_kept() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=DropOrphanClientSpans(ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("SELECT orphan", kind=SpanKind.CLIENT):
        pass
    with tracer.start_as_current_span("syncd.tick"):
        tracer.start_span("SELECT", kind=SpanKind.CLIENT).end()
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["SELECT", "syncd.tick"]
    provider.shutdown()


# ---- logs, in process -------------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        if handler not in before[0]:
            root.removeHandler(handler)
    root.setLevel(before[1])


def test_json_logs_carry_trace_ids_inside_a_span(log_stream: io.StringIO) -> None:
    setup_logging("INFO", "auto", stream=log_stream)  # a StringIO is not a terminal: JSON
    provider = TracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("test")
    log = logging.getLogger("syncd.test")
    log.info("outside")
    with tracer.start_as_current_span("work") as span:
        log.warning("inside %s", "a span", extra={"source": "workos", "count": 3})
        ctx = span.get_span_context()
    logging.getLogger("httpx").info("HTTP Request: GET http://x/events?after=1 \"HTTP/1.1 200 OK\"")
    outside, inside = (json.loads(line) for line in log_stream.getvalue().splitlines())
    assert "trace_id" not in outside and outside["message"] == "outside"
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert inside["level"] == "warning" and inside["message"] == "inside a span"
    assert inside["source"] == "workos" and inside["count"] == 3 and inside["logger"] == "syncd.test"


def test_logs_mask_credentials_as_a_last_resort(log_stream: io.StringIO) -> None:
    setup_logging("INFO", "json", stream=log_stream)
    log = logging.getLogger("syncd.test")
    log.error("request failed with headers Authorization: Bearer %s", KEY)
    try:
        raise ValueError(f"token ghp_{'a' * 36} rejected")
    except ValueError:
        log.exception("boom")
    text = log_stream.getvalue()
    assert KEY not in text and "ghp_aaaa" not in text and "Bearer sk" not in text
    assert redact(f"Bearer {KEY} and github_pat_11ABC and {KEY}") == "*** and *** and ***"
    assert redact("postgresql+psycopg://syncd:s3cret@db:5432/x") == "postgresql+psycopg://***@db:5432/x"


def test_text_logs_on_a_terminal_show_the_trace_of_warnings() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    fmt = TextFormatter()
    with provider.get_tracer("t").start_as_current_span("work") as span:
        record = logging.LogRecord("syncd.x", logging.WARNING, __file__, 1, "careful", (), None)
        trace_id = format(span.get_span_context().trace_id, "032x")
        record.trace_id = trace_id  # as TraceContextFilter sets it
    assert fmt.format(record).endswith(f"[trace {trace_id}]")
    # JSON lines carry the trace id as a field instead (a log pipeline joins on it), not in the text
    line = json.loads(JsonFormatter().format(record))
    assert (line["message"], line["level"], line["trace_id"]) == ("careful", "warning", trace_id)
