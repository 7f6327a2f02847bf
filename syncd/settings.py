"""Typed settings from the environment (and ``.env``). Every bad value names its variable.

Provider-specific variables (``WORKOS_*``, ``GITHUB_*``) are read by each connector package, with the
same helpers, so nothing provider-specific lives here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from syncd.errors import ConfigError

#: Pages fetched ahead of the commits by default (``SYNCD_PREFETCH_PAGES``; see ``SyncEngine._page_loop``).
PREFETCH_PAGES = 20

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Every variable syncd (core and bundled connectors) reads; used to catch typos in ``.env``.
KNOWN_VARIABLES = frozenset(
    {
        "DATABASE_URL", "SYNC_INTERVAL_SECONDS", "SYNCD_SOURCES", "SYNCD_WORKFLOWS", "SYNCD_BUILTINS",
        "SYNCD_MAX_ATTEMPTS", "SYNCD_LEASE_SECONDS", "SYNCD_HTTP_PORT", "SYNCD_HTTP_TIMEOUT", "SYNCD_ENV_FILE",
        "SYNCD_PREFETCH_PAGES",
        "SYNCD_REPLICA_ID", "SYNCD_JAEGER_URL", "LOG_LEVEL", "LOG_FORMAT", "EVENTS_RANGE_START", "EVENTS_RANGE_END",
        "SYNCD_SMTP_URL", "SYNCD_SMTP_FROM", "SYNCD_SLACK_WEBHOOK_URL",
        "WORKOS_API_KEY", "WORKOS_BASE_URL", "WORKOS_EVENTS",
        "GITHUB_TOKEN", "GITHUB_REPOS", "GITHUB_BASE_URL",
        "SYNCD_SQL_URL", "SYNCD_SQL_TABLES", "SYNCD_SQL_GAP_SECONDS",
        "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_SEMCONV_STABILITY_OPT_IN",
        "POSTGRES_PASSWORD", "SYNCD_HTTP_HOST",
    }
)
_PREFIXES = ("SYNCD_", "SYNC_", "WORKOS_", "GITHUB_", "EVENTS_", "OTEL_", "DATABASE_", "LOG_")


class Secret:
    """A string that never shows itself in a repr, str, log line or error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# ---- small readers shared by core and connectors -------------------------------------------------


def get_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def get_int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = get_str(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def get_float(environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = get_str(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def get_list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = get_str(environ, name)
    if raw is None:
        return ()
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def get_url(environ: Mapping[str, str], name: str, default: str) -> str:
    raw = get_str(environ, name, default)
    assert raw is not None
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(name, f"expected an http(s):// URL, got {raw!r}")
    return raw.rstrip("/")


def get_secret(environ: Mapping[str, str], name: str) -> Secret | None:
    raw = get_str(environ, name)
    return Secret(raw) if raw else None


def normalize_database_url(raw: str) -> str:
    """Point ``postgres://`` and ``postgresql://`` at psycopg 3 (SQLAlchemy's default is psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def parse_time_ms(name: str, raw: str) -> datetime:
    """Unix milliseconds (what the container takes) or ISO-8601 (friendlier on a command line)."""
    raw = raw.strip()
    try:
        number = int(raw)
        if 10**9 <= number < 10**11:  # 1970 in milliseconds, but 2001–5138 in seconds: surely seconds
            raise ConfigError(name, f"{raw} looks like unix seconds; give milliseconds (e.g. {raw}000)")
        return datetime.fromtimestamp(number / 1000, tz=UTC)
    except ValueError:
        pass
    except (OverflowError, OSError):
        raise ConfigError(name, f"timestamp out of range: {raw!r}") from None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(name, f"expected unix milliseconds or ISO-8601, got {raw!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    http_port: int = 8080
    http_timeout: float = 30.0
    prefetch_pages: int = PREFETCH_PAGES  # pages fetched ahead of the commits (PostgreSQL, slow providers); 0: none
    log_level: str = "INFO"
    log_format: str = "auto"
    replica_id: str | None = None
    range_start: datetime | None = None
    range_end: datetime | None = None
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
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError("DATABASE_URL",
                              f"unsupported database {url.get_backend_name()!r}; use sqlite or postgresql")
        interval = get_int(env, "SYNC_INTERVAL_SECONDS", 60, minimum=1)
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
        return cls(
            database_url=database_url,
            interval_seconds=interval,
            sources=get_list(env, "SYNCD_SOURCES"),
            workflow_modules=get_list(env, "SYNCD_WORKFLOWS"),
            builtins=builtins,
            max_attempts=get_int(env, "SYNCD_MAX_ATTEMPTS", 5, minimum=1),
            lease_seconds=get_int(env, "SYNCD_LEASE_SECONDS", max(3 * interval, 30), minimum=5),
            http_port=get_int(env, "SYNCD_HTTP_PORT", 8080, minimum=0),
            http_timeout=get_float(env, "SYNCD_HTTP_TIMEOUT", 30.0, minimum=0.1),
            prefetch_pages=get_int(env, "SYNCD_PREFETCH_PAGES", PREFETCH_PAGES, minimum=0),
            log_level=log_level,
            log_format=log_format,
            replica_id=get_str(env, "SYNCD_REPLICA_ID"),
            range_start=range_start,
            range_end=range_end,
            environ=env,
        )


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


def env_file_warnings(path: Path) -> list[str]:
    """Names in a ``.env`` that look like syncd settings but are not ones it reads (typos)."""
    if not path.is_file():
        return []
    from dotenv import dotenv_values

    warnings = []
    for name in dotenv_values(path):
        if name in KNOWN_VARIABLES or not name.startswith(_PREFIXES) or name.startswith("SYNCD_INTEGRATION_"):
            continue
        close = difflib.get_close_matches(name, sorted(KNOWN_VARIABLES), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{path} sets {name}, which syncd does not read{hint}")
    return warnings
