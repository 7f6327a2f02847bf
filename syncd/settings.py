"""Typed settings from the environment (and ``.env``). Every bad value names its variable.

Provider-specific variables (``WORKOS_*``, ``GITHUB_*``) are read by each connector package, with the
same helpers, so nothing provider-specific lives here.

A value that start-up accepts must work on every tick: the getters take numbers only when finite and
within bounds (a timeout of ``nan`` or an interval of 10^20 seconds would only fail later, when a
datetime or a socket is computed from them), and :meth:`Settings.from_env` checks what a column or a
driver could not hold. Each refusal is a ``ConfigError`` naming the variable (``syncd`` exits 2).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Re-exported: their home is syncd.envfile.
from syncd.envfile import KNOWN_VARIABLES as KNOWN_VARIABLES
from syncd.envfile import env_file_warnings as env_file_warnings

# The readers live in syncd.envreaders; re-exported here (``X as X``), where connectors import them from.
from syncd.envreaders import Rate as Rate
from syncd.envreaders import Secret as Secret
from syncd.envreaders import get_float as get_float
from syncd.envreaders import get_int as get_int
from syncd.envreaders import get_list as get_list
from syncd.envreaders import get_rate as get_rate
from syncd.envreaders import get_secret as get_secret
from syncd.envreaders import get_str as get_str
from syncd.envreaders import get_url as get_url
from syncd.envreaders import normalize_database_url as normalize_database_url
from syncd.envreaders import parse_time_ms as parse_time_ms
from syncd.envreaders import shown_value
from syncd.errors import ConfigError
from syncd.redaction import printable, redact_url
from syncd.telemetry_sampling import DEFAULT_CHOICE, SamplerChoice, sampler_choice

#: Pages fetched ahead of the commits by default (``SYNCD_PREFETCH_PAGES``; see ``SyncEngine._page_loop``).
#: ``SYNCD_WORKERS``: runs in flight per process. Most runs wait on the network (integrations), so many
#: more than the cores; each holds a database connection only while it writes.
WORKERS = 16
MAX_WORKERS = 256
PREFETCH_PAGES = 20
#: A catch-up commits several pages in one transaction: up to this many events (``SYNCD_GROUP_EVENTS``), or
#: the pages that arrived within GROUP_SECONDS (``SYNCD_GROUP_SECONDS``; see ``syncd.engine.pages.Pager.group``).
#: 3,000 rather than 1,000: the mirrors' random-key pages dirtied by a transaction are shared by more events
#: (bench/README.md, "Measurements behind the code").
GROUP_EVENTS = 3000
GROUP_SECONDS = 1.0
MAX_GROUP_EVENTS = 100_000
MAX_GROUP_SECONDS = 60.0

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Longest tick interval: a week (a longer wait is a cron job's, not a poller's).
MAX_INTERVAL_SECONDS = 7 * 86_400
#: Longest lease: three of the longest intervals (the default lease is three intervals).
MAX_LEASE_SECONDS = 3 * MAX_INTERVAL_SECONDS
#: ``SYNCD_HTTP_TIMEOUT`` bounds: a tenth of a second to ten minutes per request phase.
HTTP_TIMEOUT_SECONDS = (0.1, 600.0)
#: The longest ``SYNCD_REPLICA_ID``: the width of the columns that store it (``syncd_sources.lease_owner``,
#: ``syncd_ticks.replica``; a test checks they agree).
MAX_REPLICA_ID_LENGTH = 200
#: Most attempts of a run (``SYNCD_MAX_ATTEMPTS``, ``@workflow(retries=)``): with the run backoff capped
#: at an hour, 50 attempts span about two days; the engine's doubling backoff overflows a timedelta
#: past about 60.
MAX_ATTEMPTS = 50
#: Pages fetched ahead at most (each is held in memory until committed).
MAX_PREFETCH_PAGES = 1_000
#: The drivers syncd is built and tested with, by backend (``postgresql://`` is read as psycopg 3).
DRIVERS = {"sqlite": ("pysqlite",), "postgresql": ("psycopg",)}


# ---- small readers shared by core and connectors (defined in syncd.envreaders) --------------------------


def http_timeout(environ: Mapping[str, str]) -> float:
    """``SYNCD_HTTP_TIMEOUT``: seconds per phase of a provider request (default 30)."""
    low, high = HTTP_TIMEOUT_SECONDS
    return get_float(environ, "SYNCD_HTTP_TIMEOUT", 30.0, minimum=low, maximum=high)


# ---- OpenTelemetry's variables (what syncd.telemetry does with them: its module docstring) ----------

EXPORTERS = ("otlp", "console", "none")
DEFAULT_EXPORT_TIMEOUT = 5.0
#: Above this, ``OTEL_EXPORTER_OTLP_TIMEOUT`` is read as milliseconds (the spec's unit; the Python SDK
#: reads seconds, so both are met in the wild).
MILLISECONDS_ABOVE = 60.0
#: Spans waiting for export. A catch-up transaction of 3,000 events ends about 6,000 spans at once (an
#: ``event.process`` and a ``workflow.run`` each); the SDK's default queue of 2,048 dropped most of them.
#: Only while tracing; ``OTEL_BSP_MAX_QUEUE_SIZE`` overrides it.
SPAN_QUEUE = 16_384
#: A larger queue is memory, not spans saved (and a huge one overflows the queue's C size).
MAX_SPAN_QUEUE = 1_000_000


def exporter_name(environ: Mapping[str, str]) -> str:
    """Which exporter the environment asks for: ``otlp``, ``console`` or ``none``."""
    if (get_str(environ, "OTEL_SDK_DISABLED", "false") or "").lower() == "true":
        return "none"
    name = get_str(environ, "OTEL_TRACES_EXPORTER")
    if name is None:
        names = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return "otlp" if any(get_str(environ, n) for n in names) else "none"
    name = name.lower()
    if name not in EXPORTERS:
        raise ConfigError("OTEL_TRACES_EXPORTER", f"expected otlp, console or none, got {name!r}")
    return name


def export_timeout(environ: Mapping[str, str]) -> float:
    """``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds (values above 60 are taken as milliseconds)."""
    timeout = get_float(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_EXPORT_TIMEOUT, minimum=0.1,
                        maximum=600_000)  # ten minutes, in milliseconds
    return timeout / 1000 if timeout > MILLISECONDS_ABOVE else timeout


def traces_endpoint(environ: Mapping[str, str]) -> str:
    """The OTLP/HTTP traces URL: ``…_TRACES_ENDPOINT`` as given, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` +
    ``/v1/traces`` (default ``http://localhost:4318``)."""
    name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    url = get_str(environ, name)
    if url is None:
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        base = get_str(environ, name, "http://localhost:4318") or ""
        url = base.rstrip("/") + "/v1/traces"
    if not url.startswith(("http://", "https://")):
        raise ConfigError(name, f"expected an http(s):// URL (OTLP over HTTP, e.g. http://jaeger:4318), "
                                f"got {url!r}")
    return url


@dataclass(frozen=True)
class TelemetrySettings:
    """The tracing set-up ``OTEL_*`` asks for. ``endpoint`` and ``max_queue_size`` are read (and
    checked) only when they are used: the endpoint for ``otlp``, the queue whenever tracing is on."""

    exporter: str = "none"  # otlp | console | none
    timeout: float = DEFAULT_EXPORT_TIMEOUT  # seconds
    endpoint: str | None = None  # the OTLP/HTTP traces URL (otlp only)
    service_name: str = "syncd"
    max_queue_size: int = SPAN_QUEUE
    semconv_opt_in: str = "http,database"  # OTEL_SEMCONV_STABILITY_OPT_IN for the instrumentations
    sanitize_headers: str = ""  # header names the user asks to redact, besides syncd's own list
    sql: str = "some"  # SYNCD_TRACE_SQL: which SQL statements become spans (syncd.telemetry_spans)
    sampler: SamplerChoice = DEFAULT_CHOICE  # OTEL_TRACES_SAMPLER(_ARG), checked even when tracing is off

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TelemetrySettings:
        exporter = exporter_name(environ)
        timeout = export_timeout(environ)
        sampler = sampler_choice(environ)
        if exporter == "none":
            return cls(exporter=exporter, timeout=timeout, sampler=sampler)
        return cls(
            exporter=exporter,
            timeout=timeout,
            sampler=sampler,
            endpoint=traces_endpoint(environ) if exporter == "otlp" else None,
            service_name=get_str(environ, "OTEL_SERVICE_NAME", "syncd") or "syncd",
            max_queue_size=get_int(environ, "OTEL_BSP_MAX_QUEUE_SIZE", SPAN_QUEUE, minimum=1,
                                   maximum=MAX_SPAN_QUEUE),
            semconv_opt_in=get_str(environ, "OTEL_SEMCONV_STABILITY_OPT_IN", "http,database") or "http,database",
            sanitize_headers=get_str(environ, "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS") or "",
            sql=trace_sql(environ),
        )


def trace_sql(environ: Mapping[str, str]) -> str:
    """``SYNCD_TRACE_SQL``: ``some`` (default), ``all`` or ``none``; anything else is a ConfigError."""
    value = (get_str(environ, "SYNCD_TRACE_SQL", "some") or "some").strip().lower()
    if value not in ("some", "all", "none"):
        raise ConfigError("SYNCD_TRACE_SQL", f"expected some, all or none, got {value!r}")
    return value


# ---- what workflows may reach outside the database ---------------------------------------------------

INTEGRATION_PREFIX = "SYNCD_INTEGRATION_"


@dataclass(frozen=True)
class HttpIntegration:
    """``SYNCD_INTEGRATION_<NAME>_URL``, its optional ``_TOKEN`` (sent as a Bearer token) and ``_RATE``
    (calls allowed, shared by every replica). The repr shows the URL's scheme and host only: its path or
    query may be a secret."""

    url: str
    token: Secret | None = None
    rate: Rate | None = None

    def __repr__(self) -> str:
        return f"HttpIntegration(url={redact_url(self.url)!r}, token={self.token!r}, rate={self.rate!r})"


@dataclass(frozen=True)
class Integrations:
    """The outbound integrations workflows get (``ctx.http``, ``ctx.slack``, ``ctx.send_email``), and
    nothing else of the environment. Secrets stay wrapped; a missing one is reported when it is used."""

    http: Mapping[str, HttpIntegration] = field(default_factory=dict)  # by variable stem (INTERCOM)
    slack_webhook_url: Secret | None = None
    slack_rate: Rate | None = None  # SYNCD_SLACK_RATE
    smtp_url: Secret | None = None  # smtp://user:pass@host:587 or smtps://…
    smtp_from: str = "syncd@localhost"

    @staticmethod
    def variable(name: str) -> str:
        """``SYNCD_INTEGRATION_<NAME>`` for ``ctx.http(name)``: upper case, ``-`` as ``_``."""
        return INTEGRATION_PREFIX + name.upper().replace("-", "_")

    def http_integration(self, name: str) -> HttpIntegration:
        """The integration ``name``; ConfigError naming its ``_URL`` variable when it has none."""
        found = self.http.get(self.variable(name)[len(INTEGRATION_PREFIX):])
        if found is None:
            raise ConfigError(f"{self.variable(name)}_URL", f"is not set (the URL of the {name!r} integration)")
        return found

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Integrations:
        stems = {k[len(INTEGRATION_PREFIX):-len("_URL")] for k in environ
                 if k.startswith(INTEGRATION_PREFIX) and k.endswith("_URL")}
        http = {stem: HttpIntegration(url, get_secret(environ, f"{INTEGRATION_PREFIX}{stem}_TOKEN"),
                                      get_rate(environ, f"{INTEGRATION_PREFIX}{stem}_RATE"))
                for stem in sorted(stems) if (url := get_str(environ, f"{INTEGRATION_PREFIX}{stem}_URL"))}
        webhook = get_secret(environ, "SYNCD_SLACK_WEBHOOK_URL")
        _check_rates_have_urls(environ, http, webhook)
        return cls(http=http, slack_webhook_url=webhook, slack_rate=get_rate(environ, "SYNCD_SLACK_RATE"),
                   smtp_url=get_secret(environ, "SYNCD_SMTP_URL"),
                   smtp_from=get_str(environ, "SYNCD_SMTP_FROM", "syncd@localhost") or "syncd@localhost")


def _check_rates_have_urls(environ: Mapping[str, str], http: Mapping[str, HttpIntegration],
                           webhook: Secret | None) -> None:
    """A rate for an integration that is not configured is a typo in its name (or a forgotten URL)."""
    for name in sorted(environ):
        if name.startswith(INTEGRATION_PREFIX) and name.endswith("_RATE") and get_str(environ, name):
            stem = name[len(INTEGRATION_PREFIX):-len("_RATE")]
            if stem not in http:
                raise ConfigError(name, f"is set but {INTEGRATION_PREFIX}{stem}_URL is not (a rate for which "
                                        "integration?)")
    if get_str(environ, "SYNCD_SLACK_RATE") and not webhook:
        raise ConfigError("SYNCD_SLACK_RATE", "is set but SYNCD_SLACK_WEBHOOK_URL is not")


#: SYNCD_RETENTION_DAYS: longer than WorkOS's 30-day event retention, so a live cursor never meets pruned history.
RETENTION_DAYS = 35
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True)
class Settings:
    """Core settings. Build with :meth:`from_env`; the repr hides the database password."""

    database_url: str = "sqlite:///syncd.db"
    interval_seconds: int = 60
    sources: tuple[str, ...] = ()
    workflow_modules: tuple[str, ...] = ()
    builtins: tuple[str, ...] | None = None  # None: every provider's built-in mirror workflows
    max_attempts: int = 5
    lease_seconds: int = 180
    retention_days: int = RETENTION_DAYS  # `syncd prune` (and `syncd run` daily) removes history older than this
    http_port: int = 8080
    http_host: str = "0.0.0.0"  # where /healthz and /metrics listen
    prefetch_pages: int = PREFETCH_PAGES  # pages fetched ahead of the commits (PostgreSQL, slow providers); 0: none
    workers: int = WORKERS  # workflow runs in flight at once in this process (the run queue's workers)
    group_events: int = GROUP_EVENTS  # a catch-up's transaction holds pages up to this many events (1: one page)
    group_seconds: float = GROUP_SECONDS  # ... or the pages that arrived within this many seconds
    log_level: str = "INFO"
    log_format: str = "auto"
    replica_id: str | None = None
    range_start: datetime | None = None
    range_end: datetime | None = None
    jaeger_url: str | None = None  # links from `syncd status` to a run's trace
    ui_token: Secret | None = None  # SYNCD_UI_TOKEN: the dashboard's sign-in token (syncd.ops.dashboard)
    log_payloads: bool = False  # SYNCD_LOG_PAYLOADS: payload values may appear in logs, spans, errors (syncd.payloads)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    integrations: Integrations = field(default_factory=Integrations)
    #: The raw environment, for the connector packages only: each reads its own variables (WORKOS_*…).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.__dict__.items() if k != "environ"}
        shown["database_url"] = safe_url(self.database_url)
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Settings({inner})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, now: datetime | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        database_url = normalize_database_url(get_str(env, "DATABASE_URL", "sqlite:///syncd.db") or "")
        try:
            url = make_url(database_url)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise ConfigError("DATABASE_URL", "not a database URL (e.g. sqlite:///syncd.db)") from None
        check_driver(url.get_backend_name(), url.get_driver_name())
        interval = get_int(env, "SYNC_INTERVAL_SECONDS", 60, minimum=1, maximum=MAX_INTERVAL_SECONDS)
        log_level = (get_str(env, "LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError("LOG_LEVEL", f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        log_format = (get_str(env, "LOG_FORMAT", "auto") or "auto").lower()
        if log_format not in ("auto", "json", "text"):
            raise ConfigError("LOG_FORMAT", f"expected auto, json or text, got {log_format!r}")
        builtins_raw = get_list(env, "SYNCD_BUILTINS")
        builtins: tuple[str, ...] | None
        if not builtins_raw or builtins_raw == ("all",):
            builtins = None
        elif builtins_raw == ("none",):
            builtins = ()
        else:
            builtins = builtins_raw
        range_start, range_end = parse_window(env, now=now)
        # Read by the connector packages, which build the HTTP clients; checked here as well so that every
        # command (not only those that build connectors) rejects a bad value.
        http_timeout(env)
        return cls(
            database_url=database_url,
            interval_seconds=interval,
            sources=get_list(env, "SYNCD_SOURCES"),
            workflow_modules=get_list(env, "SYNCD_WORKFLOWS"),
            builtins=builtins,
            max_attempts=get_int(env, "SYNCD_MAX_ATTEMPTS", 5, minimum=1, maximum=MAX_ATTEMPTS),
            lease_seconds=get_int(env, "SYNCD_LEASE_SECONDS", max(3 * interval, 30), minimum=5,
                                  maximum=MAX_LEASE_SECONDS),
            retention_days=get_int(env, "SYNCD_RETENTION_DAYS", RETENTION_DAYS, minimum=1, maximum=MAX_RETENTION_DAYS),
            http_port=get_int(env, "SYNCD_HTTP_PORT", 8080, minimum=0, maximum=65_535),
            http_host=get_str(env, "SYNCD_HTTP_HOST", "0.0.0.0") or "0.0.0.0",
            prefetch_pages=get_int(env, "SYNCD_PREFETCH_PAGES", PREFETCH_PAGES, minimum=0,
                                   maximum=MAX_PREFETCH_PAGES),
            workers=get_int(env, "SYNCD_WORKERS", WORKERS, minimum=1, maximum=MAX_WORKERS),
            group_events=get_int(env, "SYNCD_GROUP_EVENTS", GROUP_EVENTS, minimum=1, maximum=MAX_GROUP_EVENTS),
            group_seconds=get_float(env, "SYNCD_GROUP_SECONDS", GROUP_SECONDS, minimum=0.0,
                                    maximum=MAX_GROUP_SECONDS),
            log_level=log_level,
            log_format=log_format,
            replica_id=replica_id(env),
            range_start=range_start,
            range_end=range_end,
            jaeger_url=get_str(env, "SYNCD_JAEGER_URL"),
            ui_token=ui_token(env),
            log_payloads=log_payloads(env),
            telemetry=TelemetrySettings.from_env(env),
            integrations=Integrations.from_env(env),
            environ=env,
        )


def log_payloads(environ: Mapping[str, str]) -> bool:
    """``SYNCD_LOG_PAYLOADS``: true or false (default false); anything else is a ConfigError naming it."""
    raw = (get_str(environ, "SYNCD_LOG_PAYLOADS", "false") or "false").strip().lower()
    if raw not in ("true", "false"):
        raise ConfigError("SYNCD_LOG_PAYLOADS", f"expected true or false, got {printable(raw[:40])!r}")
    return raw == "true"


def check_driver(backend: str, driver: str) -> None:
    """ConfigError naming ``DATABASE_URL`` unless syncd supports this backend and driver."""
    if backend not in DRIVERS:
        raise ConfigError("DATABASE_URL", f"unsupported database {backend!r}; use sqlite or postgresql")
    if driver not in DRIVERS[backend]:
        hint = "postgresql:// (psycopg 3)" if backend == "postgresql" else "sqlite:///path.db"
        raise ConfigError("DATABASE_URL", f"unsupported driver {backend}+{driver}; use {hint}")


#: A shorter dashboard token could be guessed by trying (each try is one cheap HTTP request).
MIN_UI_TOKEN_LENGTH = 16


def ui_token(env: Mapping[str, str]) -> Secret | None:
    """``SYNCD_UI_TOKEN``: at least :data:`MIN_UI_TOKEN_LENGTH` characters, or unset."""
    token = get_secret(env, "SYNCD_UI_TOKEN")
    if token is not None and len(token.reveal()) < MIN_UI_TOKEN_LENGTH:
        raise ConfigError("SYNCD_UI_TOKEN", f"too short: use at least {MIN_UI_TOKEN_LENGTH} characters "
                                            "(e.g. the output of `openssl rand -hex 16`)")
    return token


def replica_id(env: Mapping[str, str]) -> str | None:
    """``SYNCD_REPLICA_ID``: at most :data:`MAX_REPLICA_ID_LENGTH` printable characters."""
    value = get_str(env, "SYNCD_REPLICA_ID")
    if value is None:
        return None
    if len(value) > MAX_REPLICA_ID_LENGTH:
        raise ConfigError("SYNCD_REPLICA_ID", f"is {len(value)} characters long; at most "
                                              f"{MAX_REPLICA_ID_LENGTH} fit where it is stored")
    if not value.isprintable():
        raise ConfigError("SYNCD_REPLICA_ID", f"has control characters: {shown_value(value)}")
    return value


def parse_window(
    env: Mapping[str, str], *, now: datetime | None = None,
    start_name: str = "EVENTS_RANGE_START", end_name: str = "EVENTS_RANGE_END",
) -> tuple[datetime | None, datetime | None]:
    """Validate a backfill window: both or neither, start < end, not in the future."""
    raw_start, raw_end = get_str(env, start_name), get_str(env, end_name)
    if raw_start is None and raw_end is None:
        return None, None
    if raw_start is None:
        raise ConfigError(start_name, f"is missing while {end_name} is set; a backfill needs both")
    if raw_end is None:
        raise ConfigError(end_name, f"is missing while {start_name} is set; a backfill needs both")
    start, end = parse_time_ms(start_name, raw_start), parse_time_ms(end_name, raw_end)
    if start >= end:
        raise ConfigError(end_name, f"must be after {start_name} ({start.isoformat()} >= {end.isoformat()})")
    current = now or datetime.now(UTC)
    if start > current:
        raise ConfigError(start_name, f"is in the future ({start.isoformat()})")
    return start, end


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid url>"
