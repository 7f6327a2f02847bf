"""Checking a ``.env`` file: which names syncd, OpenTelemetry and Compose read, and the warnings (with a
"did you mean") for names that look meant for them but are not. Also hands the file's ``OTEL_*`` values to
the OpenTelemetry SDK, which reads only the process environment."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from syncd.otel_variables import OTEL_VARIABLES

#: Every variable syncd (core and bundled connectors) reads; used to catch typos in ``.env``.
SYNCD_VARIABLES = frozenset(
    {
        "DATABASE_URL", "SYNC_INTERVAL_SECONDS", "SYNCD_SOURCES", "SYNCD_WORKFLOWS", "SYNCD_BUILTINS",
        "SYNCD_MAX_ATTEMPTS", "SYNCD_LEASE_SECONDS", "SYNCD_HTTP_PORT", "SYNCD_HTTP_TIMEOUT", "SYNCD_ENV_FILE",
        "SYNCD_PREFETCH_PAGES", "SYNCD_GROUP_EVENTS", "SYNCD_GROUP_SECONDS", "SYNCD_UI_TOKEN", "SYNCD_LOG_PAYLOADS",
        "SYNCD_REPLICA_ID", "SYNCD_JAEGER_URL", "LOG_LEVEL", "LOG_FORMAT", "EVENTS_RANGE_START", "EVENTS_RANGE_END",
        "SYNCD_SMTP_URL", "SYNCD_SMTP_FROM", "SYNCD_SLACK_WEBHOOK_URL", "SYNCD_SLACK_RATE",
        "WORKOS_API_KEY", "WORKOS_BASE_URL", "WORKOS_EVENTS",
        "GITHUB_TOKEN", "GITHUB_REPOS", "GITHUB_BASE_URL", "GITHUB_RECONCILE_SECONDS",
        "STRIPE_API_KEY", "STRIPE_BASE_URL", "STRIPE_EVENTS",
        "SYNCD_SQL_URL", "SYNCD_SQL_TABLES", "SYNCD_SQL_GAP_SECONDS",
        "SYNCD_HTTP_HOST", "SYNCD_RETENTION_DAYS", "SYNCD_WORKERS", "SYNCD_TRACE_SQL",
    }
)
#: Read from the same ``.env`` by Docker Compose (docker-compose.yml and its override files).
COMPOSE_VARIABLES = frozenset({"POSTGRES_PASSWORD", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"})
#: What a ``.env`` may set without a warning: syncd's, OpenTelemetry's and Compose's variables.
KNOWN_VARIABLES = SYNCD_VARIABLES | OTEL_VARIABLES | COMPOSE_VARIABLES
_PREFIXES = ("SYNCD_", "SYNC_", "WORKOS_", "GITHUB_", "EVENTS_", "OTEL_", "DATABASE_", "LOG_")
#: How alike (difflib's ratio) a name without one of syncd's prefixes must be to a known name to be
#: reported as its typo: ``DATABSE_URL`` is 0.96 from ``DATABASE_URL``; an unrelated ``PGPASSWORD`` is
#: 0.74 from ``POSTGRES_PASSWORD`` and a ``.env`` may hold other tools' variables.
NEAR_MISS = 0.85
_INTEGRATION_VARIABLE = re.compile(r"SYNCD_INTEGRATION_[A-Z0-9_]+_(URL|TOKEN|RATE)")
_INTEGRATION_PREFIX = "SYNCD_INTEGRATION_"


def env_file_warnings(path: Path) -> list[str]:
    """Names in a ``.env`` that syncd, OpenTelemetry and Compose do not read but that look meant for them
    (one of syncd's prefixes, or a near-miss of a known name), each with a "did you mean" when one fits.
    Names only: values (credentials, OTLP headers) are never part of a warning."""
    if not path.is_file():
        return []
    from dotenv import dotenv_values

    warnings = []
    for name in dotenv_values(path):
        if name in KNOWN_VARIABLES or _INTEGRATION_VARIABLE.fullmatch(name):
            continue
        hint = did_you_mean(name)
        if hint or name.startswith(_PREFIXES):
            warnings.append(f"{path} sets {name}, which syncd does not read{hint}")
    return warnings


def did_you_mean(name: str) -> str:
    """`` (did you mean KNOWN_NAME?)`` for a likely typo of a known variable, else ``""``."""
    if name.upper() in KNOWN_VARIABLES:
        return f" (did you mean {name.upper()}? names are case-sensitive)"
    if name.startswith(_INTEGRATION_PREFIX):
        return (f" (integrations are {_INTEGRATION_PREFIX}<NAME>_URL and {_INTEGRATION_PREFIX}<NAME>_TOKEN, "
                f"optionally {_INTEGRATION_PREFIX}<NAME>_RATE)")
    cutoff = 0.6 if name.startswith(_PREFIXES) else NEAR_MISS
    close = difflib.get_close_matches(name.upper(), sorted(KNOWN_VARIABLES), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""


def export_otel(values: Mapping[str, str], environ: os._Environ[str] | dict[str, str] = os.environ) -> list[str]:
    """Copy the ``OTEL_*`` entries of ``values`` (a ``.env``'s) into ``environ`` (the process environment,
    where the OpenTelemetry SDK reads OTLP headers, certificates, compression, the sampler, resource
    attributes…), except names ``environ`` already sets: the real environment wins, as for syncd's own
    settings. Returns the names copied, never the values (headers carry API keys)."""
    copied = [name for name in values if name.startswith("OTEL_") and name not in environ]
    for name in copied:
        environ[name] = values[name]
    return copied
