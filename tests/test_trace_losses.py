"""Lost spans reach ``syncd status`` (issue 21: "if spans ever are dropped, a counter in /metrics and
``syncd status`` says how many"): each process adds what it lost to its replica's row of
``syncd_span_losses``, which status — another process — reads.

The losses are real: ``syncd once`` exports to a collector that is down (nothing listens on its port)
through an export queue of one span, so spans are both dropped (queue full) and not delivered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simulators.workos import WorkOSSimulator
from syncd.ops.spanlosses import LossReporter
from syncd.ops.spanlosses import render as render_losses
from syncd.ops.status import collect
from syncd.store.db import create_engine
from syncd.store.reads import SqlReads
from syncd.store.schema import migrate
from syncd.store.spanloss import span_losses
from syncd.telemetry_spans import SpanCounts
from tests.test_telemetry import KEY, TIMEOUT, base_env, closed_port, syncd_once


def _status(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", "status", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def _said(stderr: str) -> tuple[int, int]:
    """(dropped, failed) from the "span(s) dropped" warning ``syncd once`` logs at exit."""
    [line] = [json.loads(x) for x in stderr.splitlines() if "span(s) dropped" in x]
    words = line["message"].split()
    return int(words[3]), int(words[words.index("refused") - 1])


def test_spans_lost_to_a_down_collector_and_a_full_queue_show_in_status(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'lost.db'}"
    with WorkOSSimulator(events=40, seed=4, api_key=KEY) as sim:
        env = base_env(tmp_path, DATABASE_URL=db, WORKOS_API_KEY=KEY, WORKOS_BASE_URL=sim.url,
                       OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
                       OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_MAX_QUEUE_SIZE="1", SYNCD_REPLICA_ID="replica-a")
        first = syncd_once(tmp_path, env)
        assert first.returncode == 0, first.stderr
        dropped, failed = _said(first.stderr)
        assert dropped > 0 and failed > 0

        text = _status(tmp_path, env)
        report = json.loads(_status(tmp_path, env, "--json").stdout)
    assert text.returncode == 0, text.stderr
    assert (f"spans lost: {dropped + failed:,} ({dropped:,} dropped with the export queue full "
            f"(OTEL_BSP_MAX_QUEUE_SIZE), {failed:,} not delivered to the collector)") in text.stdout
    assert "replica-a" in text.stdout
    spans = report["spans"]
    assert (spans["lost"], spans["dropped"], spans["failed"]) == (dropped + failed, dropped, failed)
    assert [r["replica"] for r in spans["replicas"]] == ["replica-a"]


def test_nothing_lost_nothing_said(db_url: str) -> None:
    db = create_engine(db_url)
    try:
        migrate(db)
        item = collect(SqlReads(db))["spans"]
    finally:
        db.dispose()
    assert item == {"lost": 0, "dropped": 0, "failed": 0, "last_at": None, "replicas": []}
    assert render_losses(item) == []


def test_a_reporter_adds_only_what_is_new_once(db_url: str) -> None:
    """The daemon's chore: each report adds the losses since the last; nothing new writes nothing; two
    replicas (PostgreSQL: concurrent upserts) keep their own totals."""
    db = create_engine(db_url)
    try:
        migrate(db)
        counts, other = SpanCounts(), SpanCounts()
        reporter, other_reporter = LossReporter(counts), LossReporter(other)
        assert reporter.report(db, "r1") == 0 and span_losses(db) == []
        counts.add(dropped=3)
        assert reporter.report(db, "r1") == 3
        [row] = span_losses(db)
        assert (row.replica, row.dropped, row.failed) == ("r1", 3, 0)
        assert reporter.report(db, "r1") == 0 and span_losses(db) == [row]  # nothing new: not even last_at
        counts.add(dropped=1, failed=2)
        other.add(failed=5)
        assert reporter.report(db, "r1") == 3 and other_reporter.report(db, "r2") == 5
        rows = {r.replica: r for r in span_losses(db)}
        assert (rows["r1"].dropped, rows["r1"].failed, rows["r2"].failed) == (4, 2, 5)
        assert rows["r1"].first_at == row.first_at <= rows["r1"].last_at
        assert datetime.now(UTC) - rows["r1"].last_at < timedelta(minutes=5)
    finally:
        db.dispose()


def test_a_report_that_cannot_be_written_is_kept_for_the_next(tmp_path: Path) -> None:
    db = create_engine(f"sqlite:///{tmp_path / 'later.db'}")  # not migrated yet: no table
    try:
        counts = SpanCounts()
        reporter = LossReporter(counts)
        counts.add(failed=7)
        assert reporter.report(db, "r1") == 0  # logged, not raised
        migrate(db)
        assert reporter.report(db, "r1") == 7
        assert [(r.replica, r.failed) for r in span_losses(db)] == [("r1", 7)]
    finally:
        db.dispose()
