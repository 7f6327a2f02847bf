"""Column values of a user's table as JSON and as times: what events carry and what cursors store."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from syncd.errors import ConfigError

__all__ = ["as_utc", "canonical", "decode_key", "json_safe", "key_kind", "to_datetime"]


def json_safe(value: Any) -> Any:
    """A column value as JSON: date-times and dates ISO-8601 (naive ones taken as UTC), decimals and UUIDs
    as strings, bytes as base64; containers recursively; anything else unknown as ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, (date, dtime)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    return str(value)


def as_utc(moment: datetime) -> datetime:
    """Naive date-times from the database are taken as UTC (how syncd and most apps store them)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def canonical(moment: datetime) -> str:
    """Fixed-width UTC text (``2026-01-01T12:00:00.000000Z``): sorts as the instants do."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def key_kind(column: sa.Column[Any], monotonic: bool) -> str:
    """``int`` (gaps tracked) or ``ordered`` (trusted to grow); ``ConfigError`` for anything else."""
    kind = column.type
    if isinstance(kind, sa.Integer):
        return "int"
    orderable = (sa.String, sa.Uuid, sa.DateTime, sa.Date, sa.Numeric)
    if monotonic and isinstance(kind, orderable):
        return "ordered"
    table = column.table.name
    hint = ("declare it with table(..., monotonic=True) if it only ever grows in commit order (ULID, UUIDv7, "
            "a timestamp)" if isinstance(kind, orderable) else "use an integer or an ordered column")
    raise ConfigError("SYNCD_WORKFLOWS", f"table {table!r}: key column {column.name!r} is {kind} and not "
                      f"known to be monotonic; {hint}")


def decode_key(column: sa.Column[Any], raw: Any) -> Any:
    """A key stored in the cursor (JSON) back to the column's Python type, for binding."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return raw
    if python_type is datetime:
        return to_datetime(raw)
    if python_type is date:
        return date.fromisoformat(raw)
    if python_type in (int, Decimal, uuid.UUID):
        return python_type(raw)
    return raw
