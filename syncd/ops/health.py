"""Health and metrics, read from the database so every replica reports the same thing.

``GET /healthz``: 200 while every configured source is healthy, else 503; the body gives one line per
source with the reason. ``GET /metrics``: Prometheus text format. ``syncd check`` applies the same rule
and exits 0 or 1 (the container's HEALTHCHECK).

The rule (:func:`judge`), per live source, with ``limit = 3 * SYNC_INTERVAL_SECONDS``: healthy if its
last *successful* tick ended within ``limit`` (so one or two failed ticks in a row do not flip it), or
the provider paused it (a rate limit being honoured), or a tick holds its lease right now (a long
catch-up renews the lease with every committed page). A source that keeps failing — a wrong key, a
provider down — turns unhealthy once its last success is older than ``limit``; a source that never
succeeded is unhealthy as soon as its first tick has failed.

Metrics are hand-formatted rather than built with ``prometheus_client``: every value is computed from
the database at scrape time (so there is no in-process state for a client library to hold), there
are a handful of families, and the text format needs only label escaping. Counters are totals over
the whole deployment: scrape one replica, or aggregate replicas with ``max by (source)``, not ``sum``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncd.errors import ConfigError
from syncd.settings import Settings
from syncd.store.db import reading
from syncd.store.tables import runs, sources, ticks

log = logging.getLogger("syncd.health")

#: A source is unhealthy once its last successful tick is older than this many intervals.
HEALTHY_INTERVALS = 3
#: Run states counted by ``syncd_workflow_runs`` (the index on status keeps these cheap; succeeded is not).
COUNTED_RUN_STATES = ("failed", "dead", "sleeping")
CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ---- the rule --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceState:
    """What the database says about one cursor (a row of ``syncd_sources``)."""

    key: str
    last_success_at: datetime | None = None
    last_error: str | None = None
    paused_until: datetime | None = None
    pause_reason: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None


@dataclass(frozen=True)
class SourceHealth:
    key: str
    healthy: bool
    reason: str


@dataclass(frozen=True)
class HealthReport:
    """The verdict for every configured source. Healthy when there is at least one and all are."""

    sources: tuple[SourceHealth, ...]
    problem: str | None = None  # a reason that is not one source's (no database, nothing configured)

    @property
    def healthy(self) -> bool:
        return self.problem is None and bool(self.sources) and all(s.healthy for s in self.sources)

    def text(self) -> str:
        lines = ["healthy" if self.healthy else "unhealthy"]
        if self.problem:
            lines.append(self.problem)
        lines += [f"{s.key}: {'ok' if s.healthy else 'FAILING'} — {s.reason}" for s in self.sources]
        return "\n".join(lines) + "\n"


def judge(key: str, state: SourceState | None, *, now: datetime, interval: float,
          started_at: datetime | None = None) -> SourceHealth:
    """Apply the health rule (module docstring) to one source. ``started_at``: when this process
    started, so a source without a row yet is "starting" for one limit; None (``syncd check``): no grace."""
    limit = HEALTHY_INTERVALS * interval
    if state is None:
        if started_at is not None and (now - started_at).total_seconds() <= limit:
            return SourceHealth(key, True, "starting: no tick recorded yet")
        return SourceHealth(key, False, "never synced: no tick recorded")
    error = f"; last error: {state.last_error}" if state.last_error else ""
    age = (now - state.last_success_at).total_seconds() if state.last_success_at else None
    if age is not None and age <= limit:
        return SourceHealth(key, True, f"last successful tick {age:.0f}s ago (limit {limit:.0f}s){error}")
    if state.paused_until is not None and state.paused_until > now:
        return SourceHealth(key, True, f"paused until {state.paused_until.isoformat()} "
                                       f"({state.pause_reason or 'rate limited'})")
    if state.lease_owner and state.lease_expires_at is not None and state.lease_expires_at > now:
        return SourceHealth(key, True, f"tick in progress on {state.lease_owner}")
    if age is None:
        return SourceHealth(key, False, f"no successful tick yet{error}")
    return SourceHealth(key, False, f"no successful tick for {age:.0f}s (limit {limit:.0f}s){error}")


def read_states(conn: Connection, keys: Iterable[str]) -> dict[str, SourceState]:
    wanted = list(keys)
    if not wanted:
        return {}
    columns = [sources.c[f] for f in SourceState.__dataclass_fields__]
    rows = conn.execute(sa.select(*columns).where(sources.c.key.in_(wanted))).mappings()
    return {row["key"]: SourceState(**row) for row in rows}


# ---- metrics ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class MetricFamily:
    name: str
    type: str  # counter | gauge
    help: str
    samples: tuple[Sample, ...] = field(default=())


Labels = tuple[tuple[str, str], ...]


def _family(name: str, kind: str, text: str, values: Mapping[Labels, float]) -> MetricFamily:
    return MetricFamily(name, kind, text, tuple(Sample(k, v) for k, v in sorted(values.items())))


def collect_metrics(conn: Connection, keys: Sequence[str], *, now: datetime, interval: float,
                    started_at: datetime | None = None) -> list[MetricFamily]:
    """Every metric family, from the database. ``keys``: the configured live sources (always present,
    with zeros before their first tick, so ``rate()`` sees the series start)."""
    rows = conn.execute(sa.select(sources.c.key, sources.c.events_seen, sources.c.last_success_at)).all()
    known = sorted({*keys, *(r.key for r in rows)})
    events = {_src(k): 0.0 for k in known} | {_src(r.key): float(r.events_seen) for r in rows}
    last_success = {_src(r.key): r.last_success_at.timestamp() for r in rows if r.last_success_at}

    ok_case = sa.case((ticks.c.ok, 1), else_=0)
    tick_rows = conn.execute(
        sa.select(ticks.c.source, sa.func.count().label("n"), sa.func.sum(ok_case).label("ok"),
                  sa.func.sum(ticks.c.pages).label("pages"), sa.func.sum(ticks.c.runs_ok).label("runs_ok"),
                  sa.func.sum(ticks.c.runs_failed).label("runs_failed"))
        .group_by(ticks.c.source)).all()
    totals = {r.source: r for r in tick_rows}
    tick_counts: dict[Labels, float] = {}
    pages: dict[Labels, float] = {}
    attempts: dict[Labels, float] = {}
    for key in sorted({*known, *totals}):
        t = totals.get(key)
        n, ok = (int(t.n), int(t.ok or 0)) if t else (0, 0)
        tick_counts[_src(key, outcome="ok")] = ok
        tick_counts[_src(key, outcome="failed")] = n - ok
        pages[_src(key)] = int(t.pages or 0) if t else 0
        attempts[_src(key, outcome="succeeded")] = int(t.runs_ok or 0) if t else 0
        attempts[_src(key, outcome="failed")] = int(t.runs_failed or 0) if t else 0

    run_counts = {_src(k, status=s): 0.0 for k in keys for s in COUNTED_RUN_STATES}
    run_query = (sa.select(runs.c.stream, runs.c.status, sa.func.count().label("n"))
                 .where(runs.c.status.in_(COUNTED_RUN_STATES)).group_by(runs.c.stream, runs.c.status))
    for r in conn.execute(run_query):
        run_counts[_src(r.stream, status=r.status)] = int(r.n)

    durations: dict[Labels, float] = {}
    lags: dict[Labels, float] = {}
    for key in sorted(totals):
        last = conn.execute(
            sa.select(ticks.c.started_at, ticks.c.finished_at, ticks.c.ok, ticks.c.lag_seconds)
            .where(ticks.c.source == key).order_by(ticks.c.started_at.desc(), ticks.c.id.desc()).limit(1)
        ).first()
        if last is None:
            continue
        durations[_src(key)] = max(0.0, (last.finished_at - last.started_at).total_seconds())
        if last.lag_seconds is not None:
            lags[_src(key)] = float(last.lag_seconds)
        elif last.ok:
            lags[_src(key)] = 0.0  # a successful tick that found nothing new is caught up

    states = read_states(conn, keys)
    verdicts = [judge(k, states.get(k), now=now, interval=interval, started_at=started_at) for k in keys]
    healthy = {_src(v.key): float(v.healthy) for v in verdicts}
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
                "Age of the newest event processed by the last tick (0 when it found nothing new).", lags),
        _family("syncd_last_success_timestamp_seconds", "gauge",
                "Unix time at which the source's last successful tick ended.", last_success),
    ]


def _src(key: str, **labels: str) -> Labels:
    return (("source", key), *sorted(labels.items()))


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


# ---- the monitor: health and metrics of one set of sources -----------------------------------------


class Monitor:
    """Health and metrics of ``keys`` (the configured live sources) in ``db``. Thread-safe.

    Its own queries are never traced (they would be orphan spans every scrape). A database error
    makes the report unhealthy with the error's type, never its text (which may hold a URL).
    """

    def __init__(self, db: Engine, keys: Sequence[str], *, interval: float, now: Now | None = None,
                 started_at: datetime | None = None) -> None:
        self.db = db
        self.keys = tuple(keys)
        self.interval = interval
        self.now = now or _utcnow
        self.started_at = started_at

    def health(self) -> HealthReport:
        if not self.keys:
            return HealthReport((), problem="no source is configured")
        try:
            with _untraced(), reading(self.db) as conn:
                states = read_states(conn, self.keys)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("health check could not read the database: %s", type(exc).__name__)
            return HealthReport((), problem=f"database unavailable ({type(exc).__name__})")
        now = self.now()
        return HealthReport(tuple(judge(k, states.get(k), now=now, interval=self.interval,
                                        started_at=self.started_at) for k in self.keys))

    def metrics(self) -> str:
        """Raises SQLAlchemyError when the database cannot be read."""
        with _untraced(), reading(self.db) as conn:
            families = collect_metrics(conn, self.keys, now=self.now(), interval=self.interval,
                                       started_at=self.started_at)
        return render_metrics(families)


def _untraced() -> Any:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


# ---- the HTTP endpoint -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # one small response per request; no Nagle stall on loopback
    timeout = 10  # a client that stops sending cannot hold a thread forever

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            report = self.server.monitor.health()
            self._reply(200 if report.healthy else 503, report.text(), TEXT)
        elif path == "/metrics":
            try:
                body = self.server.monitor.metrics()
            except sa.exc.SQLAlchemyError as exc:
                log.warning("metrics could not read the database: %s", type(exc).__name__)
                self._reply(503, f"database unavailable ({type(exc).__name__})\n", TEXT)
                return
            self._reply(200, body, CONTENT_TYPE_METRICS)
        else:
            self._reply(404, "not found: try /healthz or /metrics\n", TEXT)

    def _reply(self, status: int, text: str, content_type: str) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would drown the daemon's own log lines


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], monitor: Monitor) -> None:
        self.monitor = monitor
        super().__init__(address, _Handler)


class HealthServer:
    """``/healthz`` and ``/metrics`` served from a daemon thread. ``port=0`` picks a free port (tests)."""

    def __init__(self, monitor: Monitor, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        self.monitor = monitor
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("health server not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Bind and serve; returns the base URL. ConfigError (naming SYNCD_HTTP_PORT) if it cannot bind."""
        try:
            self._server = _Server((self.host, self.port), self.monitor)
        except OSError as exc:
            raise ConfigError("SYNCD_HTTP_PORT", f"cannot listen on {self.host}:{self.port} "
                              f"({exc.strerror or exc}); choose another port or 0 to disable") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="syncd-health", daemon=True)
        self._thread.start()
        log.info("health and metrics on %s (/healthz, /metrics)", self.url)
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


# ---- `syncd check` ---------------------------------------------------------------------------------


def configured_sources(settings: Settings) -> list[str]:
    """Keys of the live sources ``settings`` configure (what ``syncd run`` would tick)."""
    from syncd.ops.app import build_connectors, build_registry
    from syncd.plugins import load_providers

    found = load_providers()
    built = build_connectors(settings, found, build_registry(settings, found))
    try:
        return [c.key for c in built]
    finally:
        for connector in built:
            connector.close()


def check(settings: Settings) -> HealthReport:
    """The /healthz verdict computed from the database directly (``syncd check``)."""
    from syncd.store.db import create_engine

    keys = configured_sources(settings)
    db = create_engine(settings.database_url)
    try:
        return Monitor(db, keys, interval=settings.interval_seconds).health()
    finally:
        db.dispose()
