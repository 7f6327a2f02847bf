"""JSON in and out of syncd: orjson where it gives the same values, the standard library otherwise.

A catch-up decodes every page and encodes every event's payload (the ledger) and every JSON column of
the mirrors; with the standard library that was a sixth of its CPU, and orjson does the same work
about three times (decoding) to seven times (encoding) faster.

Same values as ``json`` with ``separators=(",", ":")`` and ``default=str``: what orjson would turn
into something else (datetimes and dataclasses, which it formats itself) goes through ``str`` as
before, and what it refuses (integers beyond 64 bits when writing; NaN and lone surrogates when
reading) goes to the standard library. So does a document with a run of 20 digits: orjson reads an
integer beyond 64 bits as a float, where the standard library keeps it exact. Stored text differs only
in form: orjson writes non-ASCII characters as UTF-8, where ``json`` wrote ``\\uXXXX`` escapes; both
read back to the same strings.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_STDLIB = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``; anything JSON has no type for is written as its ``str()``."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS).decode()
    except (orjson.JSONEncodeError, TypeError):  # 64-bit overflow, a default= that raised, ...
        return _STDLIB.encode(value)


#: Every ASCII digit to "1", every other byte to "0": a run of 20 digits is then a plain substring search,
#: about 15 times faster than a regular expression over a page (0.4 µs an event instead of 7).
_DIGIT_MAP = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_TWENTY_DIGITS = b"1" * 20
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{20}")


def _long_digits(data: bytes | str) -> bool:
    if isinstance(data, str):  # JSON columns read back: short texts
        return _LONG_DIGITS_TEXT.search(data) is not None
    return bytes(data).translate(_DIGIT_MAP).find(_TWENTY_DIGITS) >= 0


def loads(data: bytes | str) -> Any:
    """Parse a JSON document; ``ValueError`` if it is not one."""
    if _long_digits(data):
        return json.loads(data)  # maybe an integer beyond 64 bits (or only a long id in a string)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # big integers, NaN, lone surrogates: the standard library takes them
        return json.loads(data)
