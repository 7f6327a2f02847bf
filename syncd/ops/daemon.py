"""``syncd run``: the daemon's life, from start-up to a graceful stop.

Signals only set the stop event (``scheduler.install_signal_handlers``); the scheduler stops starting
ticks, the ticks in hand commit their page, then the health endpoint stops and spans are flushed.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from syncd import retrylog
from syncd.errors import ConfigError
from syncd.ops.app import App
from syncd.ops.backfill import window_jobs
from syncd.ops.dashboard import dashboard_for
from syncd.ops.health import database_id
from syncd.ops.http import HealthServer, Monitor
from syncd.ops.retention import prune_chores
from syncd.ops.scheduler import Daemon, install_signal_handlers
from syncd.ops.spanlosses import loss_chore, report_losses
from syncd.settings import Settings
from syncd.telemetry import setup_telemetry

log = logging.getLogger("syncd.daemon")

#: From SIGTERM to exit (the container's grace period is longer): ticks finish, then spans are flushed.
STOP_BUDGET_SECONDS = 9.0
#: The main thread's longest sleep while running (bench/README.md "G", session 12: 2 wake-ups a second were
#: a tenth of the idle daemon's CPU at 10 sources).
IDLE_WAIT_SECONDS = 5.0


def run_daemon(settings: Settings) -> None:
    """``syncd run``: tick every source (and ``EVENTS_RANGE_*`` window) every interval, serve /healthz and
    /metrics, until SIGTERM or SIGINT; then finish the pages in hand and flush spans within
    ``STOP_BUDGET_SECONDS``. Raises ConfigError before anything runs when a setting is bad.
    """
    telemetry = setup_telemetry(settings.telemetry)
    retrylog.install()  # workflow steps' retries too, before any provider request was retried
    app = App.build(settings)
    install_signal_handlers(app.stop)
    jobs: list[tuple[str, Callable[[], object]]] = [(c.key, functools.partial(app.tick, c))
                                                    for c in app.connectors]
    jobs += [(job.key, job) for job in window_jobs(app)]  # EVENTS_RANGE_*: one job per window
    daemon = Daemon(jobs, interval=settings.interval_seconds, stop=app.stop,
                    chores=[*prune_chores(app), loss_chore(app)], pacers=app.pacers(), batcher=app.batcher)
    log.info("syncd running: sources %s, workflows %s", ", ".join(c.key for c in app.connectors),
             ", ".join(sorted(w.name for w in app.registry.all())))
    health = start_health_server(settings, app)
    workers = app.workers().start()  # runs off the ingest path: the ticks only record and queue them
    app.engine.workers = workers
    daemon.start()
    listeners = app.listeners(daemon.wake)  # e.g. PostgreSQL tables: a NOTIFY ticks the source at once
    stopping = time.monotonic()
    try:
        # Woken at once by the stop event (a signal's handler sets it on this thread, interrupting the
        # wait); the timeout only bounds a lost wake-up. Every wake-up is CPU of an idle daemon.
        while not app.stop.wait(IDLE_WAIT_SECONDS):
            pass
        stopping = time.monotonic()
        daemon.wait()
    finally:
        # The runs in flight finish within what is left of the budget (their claims die with the process
        # otherwise, and another replica takes them over at once).
        workers.close(timeout=max(0.5, STOP_BUDGET_SECONDS - 2 - (time.monotonic() - stopping)))
        for listener in listeners:
            listener.stop(timeout=1.0)
        if health is not None:
            health.stop()
        # Whatever is left of the SIGTERM budget, at most OTEL_EXPORTER_OTLP_TIMEOUT, even if Jaeger is down.
        left = STOP_BUDGET_SECONDS - (time.monotonic() - stopping)
        telemetry.shutdown(timeout=max(0.5, min(telemetry.timeout, left)))
        report_losses(app.db, app.engine.replica_id)  # for `syncd status`, the flush's own losses included
    log.info("stopped")
    if not daemon.idle or workers.in_flight:
        logging.shutdown()
        # A tick or a run is stuck in I/O; its transaction was never committed, so nothing is lost (a run's
        # claim dies with the process: another replica, or the next start, takes it over at once).
        os._exit(0)
    app.close()


def start_health_server(settings: Settings, app: App) -> HealthServer | None:
    """/healthz and /metrics on SYNCD_HTTP_HOST:SYNCD_HTTP_PORT (None when the port is 0)."""
    if settings.http_port == 0:
        return None
    monitor = Monitor(app.reads, [c.key for c in app.connectors], interval=settings.interval_seconds,
                      now=app.engine.clock.now, started_at=datetime.now(UTC),
                      database=database_id(settings.database_url))
    server = HealthServer(monitor, host=settings.http_host, port=settings.http_port,
                          dashboard=dashboard_for(settings, app))
    try:
        server.start()
    except ConfigError:
        app.close()
        raise
    return server
