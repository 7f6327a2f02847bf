"""Readers of single environment variables, shared by the core settings and the connector packages.

Each takes the environment as a mapping (tests and the CLI inject one), returns a typed value or the
default, and raises ``ConfigError`` naming the variable for a value it cannot take. Numbers are taken
only when finite and within the bounds given. :class:`Secret` keeps a value out of every repr.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.errors import ConfigError


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


def get_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def get_int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0,
            maximum: int | None = None) -> int:
    """``name`` as a whole number within ``minimum``..``maximum``; ``default`` when unset."""
    raw = get_str(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {shown_value(raw)}") from None
    _check_range(name, value, minimum, maximum)
    return value


def get_float(environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0,
              maximum: float | None = None) -> float:
    """``name`` as a finite number (never ``nan`` or ``inf``) within ``minimum``..``maximum``."""
    raw = get_str(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {shown_value(raw)}") from None
    if not math.isfinite(value):
        raise ConfigError(name, f"expected a finite number, got {shown_value(raw)}")
    _check_range(name, value, minimum, maximum)
    return value


def _check_range(name: str, value: float, minimum: float, maximum: float | None) -> None:
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value:g}")


def shown_value(raw: str, limit: int = 60) -> str:
    """A bad value quoted in an error: one line, cut (it may be a whole file pasted by mistake)."""
    shown = repr(raw[:limit])
    return shown + f" (cut, {len(raw)} characters)" if len(raw) > limit else shown


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


@dataclass(frozen=True)
class Rate:
    """At most ``count`` calls per ``per`` seconds, spaced evenly: one every :attr:`interval` seconds."""

    count: int
    per: float

    @property
    def interval(self) -> float:
        return self.per / self.count

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.per)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.per:g}s"


#: Units of a rate, in seconds.
RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
              "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"(\d{1,9})\s*/\s*([a-z]+)")
#: Most calls per second a rate may allow: beyond this the limiter's bookkeeping costs more than it saves.
MAX_RATE_PER_SECOND = 10_000


def get_rate(environ: Mapping[str, str], name: str) -> Rate | None:
    """``name`` as a rate, ``N/s``, ``N/min`` or ``N/h`` (N ≥ 1); None when unset."""
    raw = get_str(environ, name)
    if raw is None:
        return None
    match = _RATE.fullmatch(raw.lower())
    if match is None or match.group(2) not in RATE_UNITS:
        raise ConfigError(name, f"expected a rate such as 10/s, 600/min or 2/h, got {shown_value(raw)}")
    rate = Rate(int(match.group(1)), RATE_UNITS[match.group(2)])
    if rate.count < 1:
        raise ConfigError(name, f"must allow at least one call, got {shown_value(raw)}")
    if rate.count / rate.per > MAX_RATE_PER_SECOND:
        raise ConfigError(name, f"must be at most {MAX_RATE_PER_SECOND}/s, got {shown_value(raw)}")
    return rate


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
