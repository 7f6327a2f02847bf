"""``/metrics``: syncd's metric families, read from the database, in Prometheus text format.

Metrics are hand-formatted rather than built with ``prometheus_client``: every value is computed from
the database at scrape time (so there is no in-process state for a client library to hold), there
are a handful of families, and the text format needs only label escaping. Counters are totals over
the whole deployment: scrape one replica, or aggregate replicas with ``max by (source)``, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from syncd.contracts import Reads, TickRow, TickStats
from syncd.ops.health import HEALTHY_INTERVALS, read_states, verdicts

#: Run states counted by ``syncd_workflow_runs`` (the index on status keeps these cheap; succeeded is not).
COUNTED_RUN_STATES = ("failed", "dead", "sleeping")
CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float


@dataclass(frozen=True)
class MetricFamily:
    name: str
    type: str  # counter | gauge
    help: str
    samples: tuple[Sample, ...] = field(default=())


def _family(name: str, kind: str, text: str, values: Mapping[Labels, float]) -> MetricFamily:
    return MetricFamily(name, kind, text, tuple(Sample(k, v) for k, v in sorted(values.items())))


def _src(key: str, **labels: str) -> Labels:
    return (("source", key), *sorted(labels.items()))


def span_families() -> list[MetricFamily]:
    """This process's spans lost on the way to the collector (``syncd.telemetry_spans.COUNTS``). Unlike
    the families read from the database, a per-replica count since the process started."""
    from syncd.telemetry_spans import COUNTS

    return [_family("syncd_spans_dropped_total", "counter",
                    "Spans this process could not export: queue_full (OTEL_BSP_MAX_QUEUE_SIZE) or "
                    "export_failed (the collector refused them or could not be reached).",
                    {(("reason", "queue_full"),): float(COUNTS.dropped),
                     (("reason", "export_failed"),): float(COUNTS.failed)})]


def collect_metrics(reads: Reads, keys: Sequence[str], *, now: datetime, interval: float,
                    started_at: datetime | None = None) -> list[MetricFamily]:
    """Every metric family, from one snapshot of the database. ``keys``: the configured live sources
    (always present, with zeros before their first tick, so ``rate()`` sees the series start).
    Raises SQLAlchemyError when the database cannot be read."""
    with reads.snapshot() as snap:
        everything = snap.sources()
        rows = [row for row in everything if not row.retired(now)]  # windows finished long ago leave
        retired = {row.key for row in everything} - {row.key for row in rows}
        totals = {key: stats for key, stats in snap.tick_stats().items() if key not in retired}
        counted = snap.run_counts(COUNTED_RUN_STATES)
        last_ticks = {key: snap.last_tick(key) for key in sorted(totals)}
        limit = HEALTHY_INTERVALS * interval
        last_ok = {key: snap.last_tick(key, succeeded=True) for key, last in last_ticks.items()
                   if last is not None and _stale(last, now, limit)}
        states = read_states(snap, keys)
        queue = snap.queue(now)
    known = sorted({*keys, *(r.key for r in rows)})
    events = {_src(k): 0.0 for k in known} | {_src(r.key): float(r.events_seen) for r in rows}
    last_success = {_src(r.key): r.last_success_at.timestamp() for r in rows if r.last_success_at}
    tick_counts, pages, attempts = _tick_totals(sorted({*known, *totals}), totals)
    run_counts = {_src(k, status=s): 0.0 for k in keys for s in COUNTED_RUN_STATES}
    run_counts |= {_src(stream, status=status): float(n) for (stream, status), n in counted.items()}
    durations = _durations(last_ticks)
    lags = {_src(k): lag for k, last in last_ticks.items()
            if (lag := cursor_lag(last, last_ok.get(k), now=now, limit=limit)) is not None}
    judged = verdicts(states, keys, now=now, interval=interval, started_at=started_at)
    healthy = {_src(v.key): float(v.healthy) for v in judged}
    return [
        _family("syncd_source_healthy", "gauge", "1 while the source passes the /healthz rule, else 0.",
                healthy),
        _family("syncd_events_processed_total", "counter",
                "Events recorded in the ledger for the first time, per cursor.", events),
        _family("syncd_pages_fetched_total", "counter", "Pages fetched from the provider.", pages),
        _family("syncd_ticks_total", "counter", "Ticks by outcome.", tick_counts),
        _family("syncd_workflow_run_attempts_total", "counter",
                "Workflow run attempts by outcome (retries included).", attempts),
        _family("syncd_workflow_runs", "gauge",
                "Workflow runs now in a state: failed (to be retried), dead (dead-lettered), sleeping.",
                run_counts),
        _family("syncd_tick_duration_seconds", "gauge", "Duration of the source's last tick.", durations),
        _family("syncd_cursor_lag_seconds", "gauge",
                "Age of the newest event processed by the last tick (0 when it found nothing new); while "
                "ticks fail or hang, that of the last successful tick plus the time since it ended.", lags),
        _family("syncd_last_success_timestamp_seconds", "gauge",
                "Unix time at which the source's last successful tick ended.", last_success),
        _family("syncd_run_queue_depth", "gauge", "Workflow runs due now that no worker has claimed yet.",
                {(): float(queue.depth)}),
        _family("syncd_run_queue_oldest_age_seconds", "gauge",
                "How long the run due the longest has waited for a worker (0 when none waits).",
                {(): queue.oldest_age(now)}),
        _family("syncd_runs_in_flight", "gauge", "Workflow runs being executed by a worker, per workflow.",
                {(("workflow", w),): float(n) for w, n in sorted(queue.in_flight.items())}),
    ]


def _tick_totals(keys: Iterable[str], totals: Mapping[str, TickStats]
                 ) -> tuple[dict[Labels, float], dict[Labels, float], dict[Labels, float]]:
    """Ticks by outcome, pages and run attempts by outcome per cursor (zeros for cursors without ticks)."""
    tick_counts: dict[Labels, float] = {}
    pages: dict[Labels, float] = {}
    attempts: dict[Labels, float] = {}
    for key in keys:
        t = totals.get(key, TickStats(ticks=0, ok=0, pages=0, runs_ok=0, runs_failed=0))
        tick_counts[_src(key, outcome="ok")] = t.ok
        tick_counts[_src(key, outcome="failed")] = t.failed
        pages[_src(key)] = t.pages
        attempts[_src(key, outcome="succeeded")] = t.runs_ok
        attempts[_src(key, outcome="failed")] = t.runs_failed
    return tick_counts, pages, attempts


def _durations(last_ticks: Mapping[str, TickRow | None]) -> dict[Labels, float]:
    """The last tick's duration per cursor."""
    return {_src(key): max(0.0, (last.finished_at - last.started_at).total_seconds())
            for key, last in last_ticks.items() if last is not None}


def _stale(last: TickRow, now: datetime, limit: float) -> bool:
    """The last tick failed, or none has ended within ``limit`` (one is hanging, or none runs)."""
    return not last.ok or (now - last.finished_at).total_seconds() > limit


def cursor_lag(last: TickRow | None, last_ok: TickRow | None, *, now: datetime, limit: float) -> float | None:
    """How far behind a cursor is. After a successful tick: the age of the newest event it processed when
    it committed (0 if it found nothing new: it was caught up). While ticks fail or hang (:func:`_stale`),
    the source falls further behind every second: the last successful tick's lag plus the time since it
    ended, so lag alerts fire during an outage. None: never a successful tick (nothing to measure from)."""
    if last is None:
        return None
    if not _stale(last, now, limit):
        return float(last.lag_seconds or 0.0)
    base = last if last.ok else last_ok
    if base is None:
        return None
    return float(base.lag_seconds or 0.0) + max(0.0, (now - base.finished_at).total_seconds())


def render_metrics(families: Iterable[MetricFamily]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_escape(fam.help, quote=False)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for sample in fam.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
            lines.append(f"{fam.name}{{{labels}}} {_number(sample.value)}" if labels
                         else f"{fam.name} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _escape(value: str, *, quote: bool = True) -> str:
    value = value.replace("\\", "\\\\").replace("\n", "\\n")
    return value.replace('"', '\\"') if quote else value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
