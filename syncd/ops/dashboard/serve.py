"""``syncd ui``: the dashboard (with /healthz and /metrics) of ``DATABASE_URL``, without syncing anything."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from syncd.errors import ConfigError
from syncd.ops.app import App
from syncd.ops.dashboard import dashboard_for
from syncd.ops.health import database_id
from syncd.ops.http import HealthServer, Monitor
from syncd.ops.scheduler import install_signal_handlers
from syncd.settings import Settings

log = logging.getLogger("syncd.dashboard")


def serve_dashboard(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT. The workflows of ``SYNCD_WORKFLOWS`` are loaded (Replay runs them);
    no tick is scheduled and no migration is applied. ConfigError (exit 2) when the dashboard would be off
    (a non-loopback ``host`` without ``SYNCD_UI_TOKEN``) or the port cannot be bound."""
    app = App.build(settings, require_sources=False, run_migrations=False)
    try:
        dashboard = dashboard_for(settings, app, host=host)
        off = dashboard.off_reason()
        if off:
            raise ConfigError("SYNCD_UI_TOKEN", off.removeprefix("dashboard off: "))
        monitor = Monitor(app.reads, [c.key for c in app.connectors], interval=settings.interval_seconds,
                          now=app.engine.clock.now, started_at=datetime.now(UTC),
                          database=database_id(settings.database_url))
        install_signal_handlers(app.stop)
        with HealthServer(monitor, host=host, port=port, dashboard=dashboard) as server:
            print(f"syncd dashboard on {server.url}/ (Ctrl-C stops)", flush=True)
            while not app.stop.wait(0.5):
                pass
    finally:
        app.close()
