"""``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (issue 21): the standard values are honoured, a
bad one exits 2 naming its variable, and an event's trace is kept or dropped as a whole — its root and
every attempt of its runs, in whichever process they run — while the run row and the log lines keep the
trace id either way.

``syncd once`` runs as a subprocess exporting to a real OTLP/HTTP receiver on loopback.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.trace import get_current_span

from simulators.workos import WorkOSSimulator
from syncd.contracts import Event
from syncd.errors import ConfigError
from syncd.settings import TelemetrySettings
from syncd.telemetry_sampling import SamplerChoice, sampler_choice
from tests.otlp_receiver import OTLPReceiver
from tests.test_telemetry import KEY, base_env, syncd_once
from tests.test_telemetry_traces import PER_EVENT_WORKFLOW, _by_trace, _make_due, _runs


@pytest.mark.parametrize(("env", "name", "ratio"), [
    ({}, "parentbased_always_on", 1.0),
    ({"OTEL_TRACES_SAMPLER": "always_off"}, "always_off", 1.0),
    ({"OTEL_TRACES_SAMPLER": " AlWaYs_On "}, "always_on", 1.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, "parentbased_always_off", 1.0),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, "traceidratio", 0.25),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}, "parentbased_traceidratio", 1.0),
    ({"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "nonsense"}, "always_on", 1.0),
])
def test_standard_sampler_values(env: dict[str, str], name: str, ratio: float) -> None:
    assert sampler_choice(env) == SamplerChoice(name, ratio)
    # read even when tracing is off, so a typo is caught before someone turns tracing on
    assert TelemetrySettings.from_env(env).sampler == SamplerChoice(name, ratio)


@pytest.mark.parametrize(("env", "variable"), [
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
    ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
     "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"}, "OTEL_TRACES_SAMPLER_ARG"),
])
def test_a_bad_sampler_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sampler_choice(env)
    assert caught.value.variable == variable


@pytest.mark.parametrize("choice", [SamplerChoice("traceidratio", 0.3), SamplerChoice("always_off"),
                                    SamplerChoice("parentbased_traceidratio", 0.7), SamplerChoice()])
def test_an_event_traces_decision_is_the_sdk_samplers_for_a_root(choice: SamplerChoice) -> None:
    sdk = choice.sdk_sampler()
    ids = [random.Random(n).getrandbits(128) or 1 for n in range(2000)]
    ours = [choice.keeps(i) for i in ids]
    theirs = [sdk.should_sample(None, i, "event.process").decision is sampling.Decision.RECORD_AND_SAMPLE
              for i in ids]
    assert ours == theirs


def test_a_bad_sampler_exits_2_naming_it(tmp_path: Path) -> None:
    env = base_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}", WORKOS_API_KEY=KEY,
                   WORKOS_BASE_URL="http://127.0.0.1:9", OTEL_TRACES_SAMPLER="traceidratio",
                   OTEL_TRACES_SAMPLER_ARG="50%")
    proc = syncd_once(tmp_path, env)
    assert proc.returncode == 2 and "OTEL_TRACES_SAMPLER_ARG" in proc.stderr, proc.stderr
    assert not (tmp_path / "s.db").exists()  # refused before anything ran


def test_a_ratio_keeps_or_drops_each_event_trace_whole(tmp_path: Path) -> None:
    """Half the event traces kept: a kept one has its root and every attempt (the retry and the sleep's
    resumption ran in a second process); a dropped one has no span at all; all keep their trace id."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    choice = SamplerChoice("traceidratio", 0.5)
    with WorkOSSimulator(events=150, seed=5, api_key=KEY) as sim, OTLPReceiver() as rx:
        users = [e["id"] for e in sim.events() if e["event"] in ("user.created", "user.updated")]
        retried, sleeper = users[1], users[2]
        (tmp_path / "trace_wf.py").write_text(PER_EVENT_WORKFLOW.format(fail_once=retried, sleeper=sleeper))
        env = base_env(tmp_path, DATABASE_URL=db, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="trace_wf", OTEL_EXPORTER_OTLP_ENDPOINT=rx.url,
                       OTEL_TRACES_SAMPLER=choice.name, OTEL_TRACES_SAMPLER_ARG=str(choice.ratio))
        first = syncd_once(tmp_path, env)
        assert first.returncode == 1, first.stderr
        _make_due(db, retried)
        _make_due(db, sleeper)
        second = syncd_once(tmp_path, {**env, "SYNCD_REPLICA_ID": "another-replica"})
        assert second.returncode == 0, second.stderr
        spans = rx.spans
    runs = _runs(db)
    by_trace = _by_trace(spans)
    kept = {e for e in users if choice.keeps(int(runs[e][1] or "0", 16))}
    assert kept and len(kept) < len(users)  # 40-odd events: both kinds, but for a 1 in 10^12 chance
    for event_id in users:
        status, trace_id, attempts = runs[event_id]
        assert status == "succeeded" and trace_id is not None  # the link to the event, sampled or not
        assert attempts == (2 if event_id == retried else 1)
        trace = by_trace.get(trace_id, [])
        if event_id not in kept:
            assert trace == [], (event_id, [s.name for s in trace])
            continue
        [root] = [s for s in trace if s.name == "event.process"]
        assert root.attributes["messaging.message.id"] == event_id
        runs_seen = [s for s in trace if s.name == "workflow.run"]
        expected = 2 if event_id in (retried, sleeper) else 1
        assert len(runs_seen) == expected and all(s.parent_span_id == root.span_id for s in runs_seen)
    # the failed first attempt's log line names its event's trace, kept or not
    lines = [json.loads(line) for line in first.stderr.splitlines() if line.strip().startswith("{")]
    [warning] = [rec for rec in lines if rec.get("event_id") == retried and rec["level"] == "warning"]
    assert warning["trace_id"] == runs[retried][1]


@pytest.mark.parametrize("sampler", ["always_off", "parentbased_always_off"])
def test_sampling_everything_off_exports_nothing_yet_runs_keep_their_trace_id(tmp_path: Path, sampler: str) -> None:
    db = f"sqlite:///{tmp_path / 'off.db'}"
    with WorkOSSimulator(events=60, seed=9, api_key=KEY) as sim, OTLPReceiver() as rx:
        users = [e["id"] for e in sim.events() if e["event"] in ("user.created", "user.updated")]
        (tmp_path / "trace_wf.py").write_text(PER_EVENT_WORKFLOW.format(fail_once="", sleeper=""))
        env = base_env(tmp_path, DATABASE_URL=db, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="trace_wf", OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, OTEL_TRACES_SAMPLER=sampler)
        proc = syncd_once(tmp_path, env)
        assert proc.returncode == 0, proc.stderr
        spans = rx.spans
    assert spans == []
    runs = _runs(db)
    assert users and all(runs[e][0] == "succeeded" and runs[e][1] for e in users)


def _roots_of_a_page(encoded: bool, page_sampled: bool) -> tuple[dict[str, int], list[Any]]:
    """Event roots emitted for 20 events of a page, keeping the traces whose id is even."""
    from syncd import telemetry_spans
    from syncd.engine.tracing import EventTraces

    provider = TracerProvider(shutdown_on_exit=False,
                              sampler=sampling.ALWAYS_ON if page_sampled else sampling.ALWAYS_OFF)
    page = provider.get_tracer("t").start_span("page.fetch")
    events = [Event("workos", f"event_{i:04d}", "user.created", datetime(2026, 1, 1, tzinfo=UTC), {})
              for i in range(20)]
    capture = _Capture()
    telemetry_spans.install(capture, Resource.create({"service.name": "s"}), encoded=encoded,
                            keeps=lambda trace_id: trace_id % 2 == 0)
    try:
        traces = EventTraces({e.id: page for e in events})
        ids = {e.id: int(traces.trace_id(e, "my.flow") or "", 16) for e in events}
        # a later attempt continues the trace with its decision: sampled exactly when kept
        for trace_id in ids.values():
            parent = get_current_span(telemetry_spans.continue_trace(format(trace_id, "032x"))).get_span_context()
            assert parent.trace_flags.sampled == (trace_id % 2 == 0)
        traces.finish()
    finally:
        telemetry_spans.uninstall()
    return ids, capture.ended


class _Capture:
    def __init__(self) -> None:
        self.ended: list[Any] = []

    def on_end(self, span: Any) -> None:
        self.ended.append(span)


@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize("page_sampled", [False, True])
def test_only_kept_event_traces_get_a_root_and_links_only_to_kept_pages(encoded: bool, page_sampled: bool) -> None:
    """Even when the tick's trace was dropped, each event's own trace is decided on its id (and its run
    stores the id either way); a root links to its page only when the page's trace was kept."""
    from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

    ids, ended = _roots_of_a_page(encoded, page_sampled)
    kept = {trace_id for trace_id in ids.values() if trace_id % 2 == 0}
    assert len(ids) == 20 and 0 < len(kept) < 20  # ids are random: 1 in 2^19 that all are on one side
    if encoded:
        [bundle] = ended
        spans = ScopeSpans.FromString(bundle.payload).spans
        assert bundle.count == len(spans)
        emitted = {int.from_bytes(s.trace_id, "big"): len(s.links) for s in spans}
    else:
        emitted = {s.context.trace_id: len(s.links) for s in ended}
    assert set(emitted) == kept
    assert set(emitted.values()) == ({1} if page_sampled else {0})
