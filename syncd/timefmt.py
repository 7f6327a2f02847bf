"""Lenient timestamp parsing: providers send several ISO-8601 shapes, with or without a zone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime:
    """Parse ``2026-01-15T12:00:00.000Z``, ``2023-04-28 20:05:31.093``, ``2020-05-06 04:21:48.649164``,
    ``…+02:00`` or epoch seconds/milliseconds into an aware UTC datetime. Zone-less means UTC.
    Raises ``ValueError`` with the value on anything else."""
    if type(value) is str:  # the usual case, first: Python 3.11 reads ISO-8601 with a Z as it comes
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass  # surrounding spaces, a lower-case z...: the lenient path below
        else:
            if moment.tzinfo is None:
                return moment.replace(tzinfo=UTC)
            return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):  # out of range or NaN: still "not a timestamp"
            raise ValueError(f"not a timestamp: {value!r}") from None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a timestamp: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the form providers accept."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time_or_none(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    return parse_time(value)
