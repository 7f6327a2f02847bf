"""``syncd check``: the ``/healthz`` verdict, cheap enough for a container health check every 30 s.

First it asks the daemon of this container (``SYNCD_HTTP_PORT`` on the loopback): its ``/healthz`` applies
the rule over the same database, and asking it imports no connector, no workflow and no database driver.
The answer is trusted only if it names this settings' database (:data:`~syncd.ops.health.DATABASE_HEADER`),
so another syncd on the port is never taken for ours. Without an answer (no daemon here, port 0, another
database), the rule is applied to the database directly, as before: that path builds the configured
sources to know their keys, so it costs about as much as a start of ``syncd once``.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.ops.health import DATABASE_HEADER, HealthReport, assess, database_id
from syncd.settings import Settings

#: How long to wait for the daemon's answer before judging from the database (the HEALTHCHECK allows 10 s).
PROBE_TIMEOUT_SECONDS = 4.0


@dataclass(frozen=True)
class DaemonAnswer:
    """The daemon's ``/healthz`` answer, as ``syncd check`` prints it."""

    healthy: bool
    body: str

    def text(self) -> str:
        return self.body if self.body.endswith("\n") else self.body + "\n"


def check(settings: Settings) -> HealthReport | DaemonAnswer:
    """The /healthz verdict: the local daemon's if it answers for this database, else from the database."""
    answer = ask_daemon(settings)
    return answer if answer is not None else check_database(settings)


def ask_daemon(settings: Settings, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> DaemonAnswer | None:
    """GET ``/healthz`` of the daemon on this host; None when none answers for this database."""
    if settings.http_port == 0:
        return None
    host = settings.http_host if settings.http_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    conn = http.client.HTTPConnection(host, settings.http_port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read(64_000).decode("utf-8", "replace")
        fingerprint = response.getheader(DATABASE_HEADER)
    except (OSError, http.client.HTTPException):
        return None  # nobody listening, or not answering in time: the database decides
    finally:
        conn.close()
    if response.status not in (200, 503) or fingerprint != database_id(settings.database_url):
        return None
    return DaemonAnswer(healthy=response.status == 200, body=body)


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


def check_database(settings: Settings) -> HealthReport:
    """The /healthz verdict computed from the database directly (no daemon answered)."""
    from syncd.store.db import create_engine
    from syncd.store.reads import SqlReads

    keys = configured_sources(settings)
    db = create_engine(settings.database_url)
    try:
        return assess(SqlReads(db), keys, now=datetime.now(UTC), interval=settings.interval_seconds)
    finally:
        db.dispose()
