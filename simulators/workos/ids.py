"""Ids and times of the simulated WorkOS stream: ULIDs, and the timestamp forms WorkOS has been seen to send."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

__all__ = ["DEFAULT_NOW", "EPOCH", "EVENT_ID", "format_timestamp", "micros", "parse_timestamp", "ulid", "ulid_ms"]

DEFAULT_NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
"""The fixed ``now`` used when none is given, so a seed alone determines every byte."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --------------------------------------------------------------------------------------------- ids
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> 2 chars; 13 pairs = 26 chars
_FROM_CROCKFORD = str.maketrans(_CROCKFORD, "0123456789abcdefghijklmnopqrstuv")
EVENT_ID = re.compile(r"event_[0-7][0-9A-HJKMNP-TV-Z]{25}")


def ulid(ms: int, randomness: int) -> str:
    """A 26-character ULID: 10 Crockford chars of milliseconds, then 16 of 80-bit randomness."""
    # Unrolled over small ints (ms < 2**50, randomness in two 40-bit halves): twice as fast as a loop
    # over one 128-bit int, and this runs for every generated id.
    pairs, high, low = _PAIRS, randomness >> 40, randomness & 0xFF_FFFF_FFFF
    return (pairs[ms >> 40] + pairs[(ms >> 30) & 1023] + pairs[(ms >> 20) & 1023] + pairs[(ms >> 10) & 1023]
            + pairs[ms & 1023] + pairs[high >> 30] + pairs[(high >> 20) & 1023] + pairs[(high >> 10) & 1023]
            + pairs[high & 1023] + pairs[low >> 30] + pairs[(low >> 20) & 1023] + pairs[(low >> 10) & 1023]
            + pairs[low & 1023])


def ulid_ms(value: str) -> int:
    """The millisecond time encoded in a ULID (or a prefixed id such as ``event_01…``)."""
    return int(value[-26:-16].translate(_FROM_CROCKFORD), 32)


# ---------------------------------------------------------------------------------------- times
@lru_cache(maxsize=4096)
def _minute(minute: int, separator: str) -> str:
    """``2026-01-15T12:00:`` for a minute since the epoch (generated events share minutes)."""
    return (EPOCH + timedelta(minutes=minute)).strftime(f"%Y-%m-%d{separator}%H:%M:")


def format_timestamp(ms: int, form: int = 0) -> str:
    """Render epoch milliseconds in one of the forms WorkOS has been seen to send.

    0: ``2026-01-15T12:00:00.000Z``; 1: ``2023-04-28 20:05:31.093``; 2: ``2020-05-06 04:21:48.649164``
    (naive forms are UTC; form 2 adds deterministic sub-millisecond digits, never crossing a millisecond).
    """
    minute, rest = divmod(ms, 60_000)
    second, milli = divmod(rest, 1000)
    if form == 0:
        return f"{_minute(minute, 'T')}{second:02d}.{milli:03d}Z"
    if form == 1:
        return f"{_minute(minute, ' ')}{second:02d}.{milli:03d}"
    return f"{_minute(minute, ' ')}{second:02d}.{milli * 1000 + (ms * 7919) % 1000:06d}"


def parse_timestamp(text: str) -> datetime:
    """Parse any ISO-8601 form above (naive means UTC) to an aware datetime; ValueError otherwise."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)

